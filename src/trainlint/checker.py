"""`trainlint check`: from paths to findings, fixes and an exit status."""

from __future__ import annotations

import difflib
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import click

from trainlint.config import ConfigError, ConfigResolver, validate_cli_codes

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


@dataclass
class CheckOptions:
    paths: List[str]
    select: List[str] = field(default_factory=list)
    extend_select: List[str] = field(default_factory=list)
    ignore: List[str] = field(default_factory=list)
    fix: bool = False
    unsafe_fixes: Optional[bool] = None
    diff: bool = False
    show_fixes: bool = False
    output_format: str = "full"
    statistics: bool = False
    exit_zero: bool = False
    exit_non_zero_on_fix: bool = False
    config_path: Optional[str] = None
    extend_exclude: List[str] = field(default_factory=list)
    force_exclude: bool = False
    no_cache: bool = False
    cache_dir: Optional[str] = None
    stdin_filename: Optional[str] = None
    jobs: int = 0
    quiet: bool = False


def _err(msg: str) -> None:
    click.echo(f"trainlint: error: {msg}", err=True)


def _warn(msg: str) -> None:
    click.echo(f"trainlint: warning: {msg}", err=True)


def run_check(o: CheckOptions) -> int:
    try:
        validate_cli_codes(o.select, "--select")
        validate_cli_codes(o.extend_select, "--extend-select")
        validate_cli_codes(o.ignore, "--ignore")
        resolver = ConfigResolver(
            o.config_path,
            cli={
                "select": o.select,
                "extend_select": o.extend_select,
                "ignore": o.ignore,
                "unsafe_fixes": o.unsafe_fixes,
                "extend_exclude": o.extend_exclude,
            },
        )
        if o.paths == ["-"]:
            return _check_stdin(o, resolver)
        from trainlint.files import discover

        found = discover(o.paths, resolver, o.force_exclude)
        jobs = _jobs(found.files, resolver, o)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_ERROR

    for path, msg in found.errors:
        _err(f"{path}: {msg}")
    for path, msg in found.warnings:
        _warn(f"{path}: {msg}")
    if not found.files:
        if not found.errors and not o.quiet and not o.force_exclude:
            _warn("no Python files found under " + ", ".join(o.paths))
        return _report([], o, bool(found.errors))

    from trainlint.cache import Cache
    from trainlint.engine import run_jobs

    cache = None
    if not o.no_cache and not (o.fix or o.diff):
        try:
            configured = resolver.default().cache_dir
        except ConfigError as exc:  # the working directory's config is broken: say so, lint on
            _warn(f"{exc}; using the default cache folder")
            configured = None
        cache = Cache.open(o.cache_dir or configured)
    todo = jobs
    cached = {}
    if cache is not None:
        todo = []
        for j in jobs:
            hit = cache.get(j)
            if hit is None:
                todo.append(j)
            else:
                cached[j.path] = hit
    progress = _progress(len(todo), o)
    try:
        fresh = run_jobs(todo, o.jobs, progress.update if progress else None)
    finally:
        if progress:
            progress.finish()
    if cache is not None:
        for j, r in zip(todo, fresh):
            cache.put(j, r)
    by_path = {r.filename: r for r in fresh}
    by_path.update(cached)
    results = [by_path[j.path] for j in jobs]
    return _report(results, o, bool(found.errors))


def _jobs(files, resolver: ConfigResolver, o: CheckOptions):
    from trainlint.engine import Job

    out = []
    options: Dict[int, Dict[str, Dict[str, object]]] = {}  # one options dict per Settings (the cache key reads it)
    for path in files:
        s = resolver.for_path(path)
        if id(s) not in options:
            options[id(s)] = s.rule_options()
        out.append(
            Job(
                path=path,
                codes=s.codes_for(path),
                options=options[id(s)],
                fix=o.fix or o.diff,
                write=o.fix and not o.diff,
                unsafe=bool(s.unsafe_fixes),
            )
        )
    return out


def _check_stdin(o: CheckOptions, resolver: ConfigResolver) -> int:
    from trainlint.engine import lint_text
    from trainlint.fixer import fix_text
    from trainlint.source import SourceError, decode

    name = o.stdin_filename or "-"
    s = resolver.for_path(name if o.stdin_filename else ".")
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        src = decode(data)
    except SourceError as exc:
        _err(f"{name}: {exc.message}")
        return EXIT_ERROR
    codes, options = s.codes_for(name), s.rule_options()
    if o.fix or o.diff:
        new_text, applied, remaining = fix_text(src.text, name, codes, options, bool(s.unsafe_fixes), src.newline)
        if o.diff:
            sys.stdout.write(_unified(name, src.text, new_text))
        else:
            sys.stdout.write(new_text)
            sys.stdout.flush()
            _summary_fix(remaining, applied, o, err=True)
        if o.exit_zero:
            return EXIT_OK
        if o.diff:
            return EXIT_FINDINGS if applied else EXIT_OK
        return EXIT_FINDINGS if remaining or (o.exit_non_zero_on_fix and applied) else EXIT_OK
    result = lint_text(src.text, name, codes, options)
    from trainlint.engine import LintResult

    return _report([LintResult(name, result.diagnostics)], o, False, sources={name: src.text})


def _unified(name: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=name, tofile=name
        )
    )


class _Progress:
    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.last = -1

    def update(self, n: int) -> None:
        self.done += n
        pct = self.done * 100 // max(1, self.total)
        if pct != self.last:
            self.last = pct
            sys.stderr.write(f"\rtrainlint: {self.done}/{self.total} files ({pct}%)")
            sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _progress(total: int, o: CheckOptions):
    if o.quiet or total < 50:
        return None
    isatty = getattr(sys.stderr, "isatty", None)
    if not (isatty and isatty()):
        return None
    return _Progress(total)


def _report(results, o: CheckOptions, had_errors: bool, sources=None) -> int:
    from trainlint.output import renderer
    from trainlint.output.full import Sources
    from trainlint.output.style import Style

    diags = [d for r in results for d in r.diagnostics]
    fixed = sum(r.fixed for r in results)
    out = sys.stdout
    style = Style.for_stream(out)
    unsafe = bool(o.unsafe_fixes)

    if o.diff:
        changed = 0
        for r in results:
            if r.diff:
                out.write(r.diff)
                changed += 1
            elif r.new_text is not None and r.old_text is not None:
                out.write(_unified(r.filename, r.old_text, r.new_text))
                changed += 1
        if not o.quiet:
            click.echo(
                f"Would fix {fixed} error{'s' if fixed != 1 else ''} in {changed} file{'s' if changed != 1 else ''}."
                if fixed else "No fixes available.",
                err=True,
            )
        if had_errors:
            return EXIT_ERROR
        return EXIT_OK if o.exit_zero or not fixed else EXIT_FINDINGS

    if o.show_fixes and fixed:
        for r in results:
            if r.fixed:
                click.echo(f"Fixed {r.fixed} in {r.filename}", err=o.output_format not in ("full", "concise"))

    if o.statistics:
        _statistics(diags, out, o)
    else:
        src = Sources({r.filename: r.new_text for r in results if r.new_text is not None})
        if sources:
            src.texts.update(sources)
        renderer(o.output_format).render(
            diags, out, style=style, sources=src, unsafe_fixes=unsafe, results=results,
        )
        if o.output_format in ("full", "concise") and not o.quiet:
            if o.fix:
                _summary_fix(diags, fixed, o)
            else:
                _summary(diags, o, out)
    if had_errors:
        return EXIT_ERROR
    if o.exit_zero:
        return EXIT_OK
    if diags or (o.exit_non_zero_on_fix and fixed):
        return EXIT_FINDINGS
    return EXIT_OK


def _summary(diags, o: CheckOptions, out) -> None:
    if not diags:
        out.write("All checks passed!\n")
        return
    n = len(diags)
    out.write(f"Found {n} error{'s' if n != 1 else ''}.\n")
    safe = sum(1 for d in diags if d.fix and d.fix.applicability.value == "safe")
    unsafe = sum(1 for d in diags if d.fix and d.fix.applicability.value == "unsafe")
    if o.unsafe_fixes:
        if safe + unsafe:
            out.write(f"[*] {safe + unsafe} fixable with the `--fix` option.\n")
    else:
        parts = []
        if safe:
            parts.append(f"[*] {safe} fixable with the `--fix` option")
        if unsafe:
            parts.append(f"{unsafe} hidden fix{'es' if unsafe != 1 else ''} can be enabled with the `--unsafe-fixes` option")
        if parts:
            out.write(" (".join(parts) + (")" if len(parts) == 2 else "") + ".\n")


def _summary_fix(diags, fixed: int, o: CheckOptions, err: bool = False) -> None:
    n = len(diags)
    if not n and fixed:
        msg = f"Found {fixed} error{'s' if fixed != 1 else ''} ({fixed} fixed, 0 remaining)."
    elif not n:
        msg = "All checks passed!"
    else:
        msg = f"Found {n + fixed} error{'s' if n + fixed != 1 else ''} ({fixed} fixed, {n} remaining)."
        hidden = sum(1 for d in diags if d.fix and d.fix.applicability.value == "unsafe")
        if hidden and not o.unsafe_fixes:
            msg += f"\nNo fixes available ({hidden} hidden fix{'es' if hidden != 1 else ''} can be enabled with the `--unsafe-fixes` option)."
    click.echo(msg, err=err)


def _statistics(diags, out, o: CheckOptions) -> None:
    from trainlint.codes import CODES, TL000

    counts = Counter(d.code for d in diags)
    fixable = Counter(d.code for d in diags if d.fix and (d.fix.applicability.value == "safe" or o.unsafe_fixes))
    if o.output_format == "json":
        import json

        rows = [
            {"code": c, "name": (CODES.get(c) or TL000).name, "count": n, "fixable": bool(fixable[c])}
            for c, n in counts.most_common()
        ]
        json.dump(rows, out, indent=2)
        out.write("\n")
        return
    for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        name = (CODES.get(c) or TL000).name
        mark = "[*]" if fixable[c] else "   "
        out.write(f"{n:>5}\t{c}\t{mark} {name}\n")
