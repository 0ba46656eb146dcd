"""Which files to lint: walking paths, excludes, Python and notebook files."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from trainlint.config import ConfigResolver, match_path, _relpath

PY_SUFFIXES = (".py", ".pyi", ".ipynb")


@dataclass
class Discovery:
    files: List[str] = field(default_factory=list)
    errors: List[Tuple[str, str]] = field(default_factory=list)  # (path, message): usage errors
    warnings: List[Tuple[str, str]] = field(default_factory=list)  # (path, message)


def is_excluded(path: str, resolver: ConfigResolver, walk_root: Optional[str] = None) -> bool:
    """Does an exclude pattern match `path`? While walking a folder the user named, bare patterns are
    matched against the parts below that folder only (so `trainlint .venv/lib/x` still works); for
    `--force-exclude` they are matched against every part of the path below the config's folder."""
    settings = resolver.for_path(path)
    bare, slashed = _exclude_matchers(tuple(settings.exclude_patterns()))
    rel = None
    if slashed:
        rel = _relpath(path, settings.root)
        if any(match_path(pattern, rel) for pattern in slashed):
            return True
    if walk_root is not None:
        below = _relpath(path, walk_root)
        parts = below if not below.startswith("..") else os.path.basename(os.path.normpath(path))
    else:
        parts = rel if rel is not None else _relpath(path, settings.root)
    return any(bare(part) for part in parts.split("/"))


@functools.lru_cache(maxsize=64)
def _exclude_matchers(patterns: Tuple[str, ...]):
    """(a test of one path component against the bare patterns, the patterns with a slash). Bare names
    without wildcards are a set lookup, the others one regular expression: `match_path`'s semantics
    (`fnmatchcase` on each component), thousands of times faster on a large tree."""
    names, wild, slashed = set(), [], []
    for pattern in patterns:
        if "/" in pattern.rstrip("/"):
            slashed.append(pattern)
            continue
        p = pattern.rstrip("/")
        if any(c in p for c in "*?["):
            wild.append(fnmatch.translate(p))
        else:
            names.add(p)
    rx = re.compile("|".join(wild)) if wild else None

    def bare(part: str) -> bool:
        return part in names or (rx is not None and rx.match(part) is not None)

    return bare, tuple(slashed)


def discover(paths: List[str], resolver: ConfigResolver, force_exclude: bool = False) -> Discovery:
    out = Discovery()
    seen = set()

    def add(p: str) -> None:
        # the same file named twice (`trainlint a a/b.py`): abspath tells; a symlink needs realpath
        key = os.path.realpath(p) if os.path.islink(p) else os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.files.append(p)

    for path in paths:
        if not os.path.lexists(path):
            out.errors.append((path, "no such file or directory"))
            continue
        if os.path.isdir(path):
            if force_exclude and is_excluded(path, resolver):
                continue
            _walk(path, resolver, add, out)
        elif os.path.isfile(path):
            if force_exclude and is_excluded(path, resolver):
                continue
            add(path)  # an explicitly named file is linted whatever its suffix
        else:
            out.errors.append((path, "not a regular file or directory (broken symlink?)"))
    return out


# `--respect-gitignore/--no-respect-gitignore` on the command line; None: the `respect-gitignore` setting.
_RESPECT_GITIGNORE: Optional[bool] = None


def set_respect_gitignore(value: Optional[bool]) -> None:
    global _RESPECT_GITIGNORE
    _RESPECT_GITIGNORE = value


def git_ignored(root: str) -> Optional[Set[str]]:
    """Paths under folder `root` that git ignores (.gitignore files, .git/info/exclude, the global
    excludes file), relative to `root` with `/` separators; folders end with `/`. None when `root` is not
    in a git work tree or git is not installed. Tracked files are never ignored (git's own rule)."""
    import subprocess

    cmd = ["git", "-c", "core.fsmonitor=false", "ls-files", "--others", "--ignored", "--exclude-standard",
           "--directory", "--no-empty-directory", "-z"]
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return {os.fsdecode(p) for p in proc.stdout.split(b"\0") if p}


def _respects_gitignore(root: str, resolver: ConfigResolver) -> bool:
    if _RESPECT_GITIGNORE is not None:
        return _RESPECT_GITIGNORE
    return resolver.for_path(root).respect_gitignore


def _walk(root: str, resolver: ConfigResolver, add, out: Discovery) -> None:
    def onerror(exc: OSError) -> None:
        out.warnings.append((exc.filename or root, f"cannot read directory: {exc.strerror or exc}"))

    ignored = git_ignored(root) if _respects_gitignore(root, resolver) else None

    def git_ignores(path: str, folder: bool) -> bool:
        if not ignored:
            return False
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        return (rel + "/" if folder else rel) in ignored

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        dirnames[:] = sorted(
            d for d in dirnames
            if not is_excluded(os.path.join(dirpath, d), resolver, root)
            and not git_ignores(os.path.join(dirpath, d), True)
        )
        for name in sorted(filenames):
            if not name.endswith(PY_SUFFIXES):
                continue
            full = os.path.join(dirpath, name)
            if is_excluded(full, resolver, root) or git_ignores(full, False):
                continue
            if os.path.islink(full) and not os.path.exists(full):
                out.warnings.append((full, "broken symlink"))
                continue
            if not os.path.isfile(full):  # a FIFO, a device, a socket: reading it could block forever
                out.warnings.append((full, "not a regular file, skipped"))
                continue
            add(full)
