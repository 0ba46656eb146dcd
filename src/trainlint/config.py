"""`[tool.trainlint]` configuration: discovery, strict validation, merging with command-line flags."""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from trainlint.codes import CODES, STATIC_CODES, did_you_mean, expand_selectors, is_valid_selector, unknown_code_hint

DEFAULT_EXCLUDE = [
    ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", ".trainlint_cache", "__pycache__", "build", "dist", "node_modules", "site-packages",
    "__pypackages__", ".eggs", "*.egg-info", ".ipynb_checkpoints",
]

# Options of each rule: name -> (type, default, help)
RULE_OPTIONS: Dict[str, Dict[str, Tuple[type, Any, str]]] = {
    "TL001": {},
    "TL002": {},
    "TL003": {
        "batch-size-names": (list, ["batch_size", "bs", "bsz"],
                             "names that hold the configured batch size"),
    },
    "TL004": {},
    "TL005": {
        "require-explicit-eps": (bool, False,
                                 "report every adaptive optimizer without an explicit eps (warning)"),
    },
}

TOP_KEYS = {"select", "ignore", "extend-select", "exclude", "extend-exclude", "per-file-ignores",
            "unsafe-fixes", "respect-gitignore", "rules", "runtime", "cache-dir"}


# (select, extend-select, ignore, universe) -> (selected codes, ignored codes): the same for every file
_SELECTIONS: Dict[tuple, Tuple[List[str], frozenset]] = {}


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    select: Optional[List[str]] = None
    ignore: List[str] = field(default_factory=list)
    extend_select: List[str] = field(default_factory=list)
    exclude: Optional[List[str]] = None
    extend_exclude: List[str] = field(default_factory=list)
    per_file_ignores: Dict[str, List[str]] = field(default_factory=dict)
    unsafe_fixes: bool = False
    respect_gitignore: bool = True
    rules: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    runtime: Dict[str, Any] = field(default_factory=dict)
    cache_dir: Optional[str] = None
    path: Optional[str] = None  # the pyproject.toml it came from
    root: str = "."  # directory patterns are relative to

    def exclude_patterns(self) -> List[str]:
        base = DEFAULT_EXCLUDE if self.exclude is None else self.exclude
        return list(base) + list(self.extend_exclude)

    def codes_for(self, filename: str, universe: Optional[List[str]] = None) -> List[str]:
        universe = universe or STATIC_CODES
        key = (tuple(self.select) if self.select is not None else None, tuple(self.extend_select),
               tuple(self.ignore), tuple(universe))
        cached = _SELECTIONS.get(key)
        if cached is None:
            selected = expand_selectors(self.select if self.select is not None else ["TL0"], universe)
            for c in expand_selectors(self.extend_select, universe):
                if c not in selected:
                    selected.append(c)
            cached = _SELECTIONS[key] = (selected, frozenset(expand_selectors(self.ignore, universe)))
        selected, ignored = cached
        if not self.per_file_ignores:
            return [c for c in selected if c not in ignored]
        ignored = set(ignored)
        rel = _relpath(filename, self.root)
        for pattern, codes in self.per_file_ignores.items():
            if match_path(pattern, rel):
                ignored.update(expand_selectors(codes, universe))
        return [c for c in selected if c not in ignored]

    def rule_options(self) -> Dict[str, Dict[str, Any]]:
        out: Dict[str, Dict[str, Any]] = {}
        for code, opts in RULE_OPTIONS.items():
            out[code] = {k: v[1] for k, v in opts.items()}
            out[code].update(self.rules.get(code, {}))
        return out

    def fingerprint(self, filename: str) -> str:
        """What of the settings can change the findings of `filename` (cache key)."""
        import json

        return json.dumps([self.codes_for(filename), self.rule_options()], sort_keys=True)


def _relpath(filename: str, root: str) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(filename), os.path.abspath(root))
    except ValueError:
        rel = filename
    return rel.replace(os.sep, "/")


def match_path(pattern: str, rel: str) -> bool:
    """Match a Ruff-style pattern: a bare name matches any path component or the basename; a pattern
    with a slash matches the path relative to the config's directory (`*` may cross `/`)."""
    pattern = pattern.rstrip("/")
    if pattern.startswith("./"):
        pattern = pattern[2:]
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(part, pattern) for part in rel.split("/"))
    return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(rel, pattern + "/*")


def _expect_list(value, key: str, where: str) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of strings")
    return value


def _check_codes(codes: List[str], key: str, where: str) -> None:
    for c in codes:
        if not is_valid_selector(c):
            raise ConfigError(f"{where}: unknown rule code {c!r} in `{key}`{unknown_code_hint(c)}")


def _warn_runtime_only(codes: List[str], key: str, where: str) -> None:
    """`select = ["TL101"]` selects a runtime check, which the linter never runs: say so (the runtime
    mode reads its checks from `trainlint run --select`)."""
    for c in codes:
        s = c.strip().upper()
        if s != "ALL" and not any(x.startswith(s) for x in STATIC_CODES):
            sys.stderr.write(f"trainlint: warning: {where}: {c} in `{key}` selects only runtime checks, "
                             "which the linter does not run\n")


def _hint(word: str, known) -> str:
    close = did_you_mean(word, known)
    return f"did you mean `{close}`? " if close else ""


def parse_table(table: Dict[str, Any], where: str, root: str) -> Settings:
    """Validate a `[tool.trainlint]` table strictly and turn it into Settings."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [tool.trainlint] must be a table")
    s = Settings(root=root)
    for key, value in table.items():
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: unknown key `{key}` in [tool.trainlint] ({_hint(key, sorted(TOP_KEYS))}"
                              f"known: {', '.join(sorted(TOP_KEYS))})")
        if key in ("select", "ignore", "extend-select"):
            codes = _expect_list(value, key, where)
            _check_codes(codes, key, where)
            if key != "ignore":
                _warn_runtime_only(codes, key, where)
            setattr(s, key.replace("-", "_"), list(codes))
        elif key in ("exclude", "extend-exclude"):
            setattr(s, key.replace("-", "_"), list(_expect_list(value, key, where)))
        elif key == "per-file-ignores":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: `per-file-ignores` must be a table of pattern = [codes]")
            for pat, codes in value.items():
                codes = _expect_list(codes, f"per-file-ignores.{pat}", where)
                _check_codes(codes, f"per-file-ignores.{pat}", where)
                s.per_file_ignores[pat] = list(codes)
        elif key in ("unsafe-fixes", "respect-gitignore"):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: `{key}` must be true or false")
            setattr(s, key.replace("-", "_"), value)
        elif key == "cache-dir":
            if not isinstance(value, str):
                raise ConfigError(f"{where}: `cache-dir` must be a string")
            s.cache_dir = os.path.join(root, value)
        elif key == "rules":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [tool.trainlint.rules] must be a table")
            for code, opts in value.items():
                if code not in RULE_OPTIONS:
                    raise ConfigError(f"{where}: unknown rule code `{code}` in [tool.trainlint.rules]"
                                      f"{unknown_code_hint(code)}")
                if not isinstance(opts, dict):
                    raise ConfigError(f"{where}: [tool.trainlint.rules.{code}] must be a table")
                known = RULE_OPTIONS[code]
                for name, v in opts.items():
                    if name not in known:
                        hint = f" ({_hint(name, known)}known: {', '.join(known)})" if known else f" ({code} has no options)"
                        raise ConfigError(f"{where}: unknown option `{name}` in [tool.trainlint.rules.{code}]{hint}")
                    tp = known[name][0]
                    if not isinstance(v, tp) or (tp is not bool and isinstance(v, bool)):
                        raise ConfigError(f"{where}: `rules.{code}.{name}` must be of type {tp.__name__}")
                    if tp is list and not all(isinstance(x, str) for x in v):
                        raise ConfigError(f"{where}: `rules.{code}.{name}` must be a list of strings")
                s.rules[code] = dict(opts)
        elif key == "runtime":
            from trainlint.runtime.settings import DEFAULTS

            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [tool.trainlint.runtime] must be a table")
            for name, v in value.items():
                if name not in DEFAULTS:
                    raise ConfigError(f"{where}: unknown key `{name}` in [tool.trainlint.runtime] "
                                      f"({_hint(name, DEFAULTS)}known: {', '.join(DEFAULTS)})")
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise ConfigError(f"{where}: `runtime.{name}` must be a number")
            s.runtime = dict(value)
    return s


def load_file(path: str) -> Settings:
    """Load `[tool.trainlint]` from a pyproject.toml (or a trainlint.toml, whose top level is the table)."""
    root = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config is not valid UTF-8: {exc}")
    if os.path.basename(path) == "pyproject.toml":
        table = data.get("tool", {}).get("trainlint", {}) if isinstance(data.get("tool"), dict) else {}
    else:  # trainlint.toml / .trainlint.toml (or any other name given to --config): top-level keys
        table = data
    s = parse_table(table, path, root)
    s.path = path
    return s


def has_trainlint_table(path: str) -> bool:
    """Cheap check before parsing: does this pyproject mention [tool.trainlint]?"""
    try:
        with open(path, "rb") as fh:
            return b"tool.trainlint" in fh.read()
    except OSError:
        return False


CONFIG_FILES = (".trainlint.toml", "trainlint.toml", "pyproject.toml")  # Ruff's order of precedence


def config_in(d: str) -> Optional[str]:
    """The configuration file of folder `d`: `.trainlint.toml`, else `trainlint.toml` (both always count,
    even empty), else a `pyproject.toml` with a [tool.trainlint] table; None if none."""
    for name in CONFIG_FILES:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and (name != "pyproject.toml" or has_trainlint_table(candidate)):
            return candidate
    return None


class ConfigResolver:
    """Finds the settings that apply to each file: the nearest `.trainlint.toml`, `trainlint.toml` or
    pyproject.toml with [tool.trainlint] (walking up from the file), else defaults; `--config` wins
    over all."""

    def __init__(self, override_path: Optional[str] = None, cli: Optional[Dict[str, Any]] = None):
        self.cli = cli or {}
        self._by_dir: Dict[str, Settings] = {}
        self.override = load_file(override_path) if override_path else None
        if self.override is not None:
            self.override = self._apply_cli(self.override)
        self._default: Optional[Settings] = None

    def _apply_cli(self, s: Settings) -> Settings:
        cli = self.cli
        s = replace(s, ignore=list(s.ignore), extend_select=list(s.extend_select))
        if cli.get("select"):
            s.select = list(cli["select"])
            s.extend_select = []
        if cli.get("extend_select"):
            s.extend_select += list(cli["extend_select"])
        if cli.get("ignore"):
            s.ignore += list(cli["ignore"])
        if cli.get("unsafe_fixes") is not None:
            s.unsafe_fixes = cli["unsafe_fixes"]
        if cli.get("extend_exclude"):
            s.extend_exclude = list(s.extend_exclude) + list(cli["extend_exclude"])
        return s

    def default(self) -> Settings:
        if self._default is None:
            self._default = self.for_dir(os.getcwd())
        return self._default

    def for_path(self, path: str) -> Settings:
        if self.override is not None:
            return self.override
        d = os.path.dirname(os.path.abspath(path)) if not os.path.isdir(path) else os.path.abspath(path)
        return self.for_dir(d)

    def for_dir(self, d: str) -> Settings:
        if self.override is not None:
            return self.override
        if d in self._by_dir:
            return self._by_dir[d]
        found = config_in(d)
        if found is not None:
            s = self._apply_cli(load_file(found))
        else:
            parent = os.path.dirname(d)
            if parent and parent != d:
                s = self.for_dir(parent)
            else:
                s = self._apply_cli(Settings(root=os.getcwd()))
        self._by_dir[d] = s
        return s


def validate_cli_codes(codes: List[str], flag: str) -> None:
    for c in codes:
        if not is_valid_selector(c):
            hint = unknown_code_hint(c)
            raise ConfigError(f"unknown rule code {c!r} in {flag}" + (hint or f" (known: {', '.join(CODES)})"))
