"""Lint one source text: prefilter, parse once, index once, run every selected rule, filter noqa."""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from trainlint.codes import TL000
from trainlint.diagnostics import Diagnostic, Location
from trainlint.source import SourceError
from trainlint.suppression import filter_suppressed


@dataclass
class LintResult:
    filename: str
    diagnostics: List[Diagnostic] = field(default_factory=list)
    parsed: bool = False
    fixed: int = 0  # fixes applied (fix mode)
    new_text: Optional[str] = None  # the fixed text, when fixes were applied
    old_text: Optional[str] = None  # the text before fixes (for --diff)
    diff: Optional[str] = None  # a ready-made diff (notebooks: per cell)
    deps: Dict[str, str] = field(default_factory=dict)  # other project files read for facts -> digest


def file_error(filename: str, message: str, row: int = 1, column: int = 1) -> Diagnostic:
    return Diagnostic(
        code=TL000.code,
        name=TL000.name,
        message=message,
        filename=filename,
        location=Location(row, column),
        end_location=Location(row, column),
        severity="error",
    )


def _rules_matching(text: str, codes: Sequence[str], options: Optional[Dict[str, Dict[str, Any]]] = None):
    from trainlint.rules import load

    out = []
    for rule in load(list(codes)):
        if not all(_group_matches(group, text) for group in rule.PREFILTER):
            continue
        extra = getattr(rule, "prefilter", None)  # a rule whose words depend on its options
        if extra is not None and not extra(text, (options or {}).get(rule.CODE, {})):
            continue
        out.append(rule)
    return out


def gate_rules(text: str, filename: str, rules, options) -> Tuple[list, bool]:
    """Stage two of the file filter: the rules whose structural gate (`rule.gate(facts, options)`, read
    from CPython's `ast`; see `analysis/gate.py`) holds for this text, and whether CPython parsed it. A
    text CPython cannot parse keeps every rule: LibCST's parse then reports the error as before.
    TRAINLINT_NO_GATE=1 turns the gate off (to compare findings with and without it)."""
    import ast
    import os
    import warnings

    if os.environ.get("TRAINLINT_NO_GATE"):
        return rules, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for "\d" in strings: not ours to report
            tree = ast.parse(text, filename or "<unknown>")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return rules, False
    from trainlint.analysis.gate import module_facts

    try:
        facts = module_facts(tree, filename)
    except RecursionError:
        return rules, True
    del tree
    opts = options or {}
    kept = [r for r in rules if _passes(r, facts, opts.get(r.CODE, {}))]
    return kept, True


def _passes(rule, facts, options) -> bool:
    gate = getattr(rule, "gate", None)
    if gate is None:
        return True
    try:
        return bool(gate(facts, options))
    except Exception:  # a bug in a gate must not hide findings: the rule runs, as without a gate
        return True


def _group_matches(group, text: str) -> bool:
    """A prefilter group: a tuple of substrings (any must occur) or a compiled regular expression."""
    if hasattr(group, "search"):
        return group.search(text) is not None
    return any(w in text for w in group)


# Long runs of openers, unary operators, lambdas, calls, powers, attributes or subscripts: LibCST's
# native parser can overflow the C stack on them (a crash, not an exception) or take a minute first, so
# such files are first checked with CPython's parser, which refuses them at once (it allows at most 200
# nested parentheses and limits its recursion).
_DEEP = re.compile(
    r"(?:[(\[{]\s*){100,}|(?:\bnot\s+){100,}|(?:[-+~]\s*){100,}|(?:\bawait\s+){100,}"
    r"|(?:\blambda\b[^:\n]{0,40}:\s*){100,}|(?:\(\s*\)\s*){100,}|(?:\*\*\s*\w+\s*){100,}|(?:\.\w+){500,}|(?:\[\w*\]){500,}"
)


_NOT_BRACKET = re.compile(r"[^()\[\]{}]+")


def _bracket_depth(text: str) -> int:
    """The deepest bracket nesting, counting brackets in strings and comments too (an over-estimate is
    fine: it only decides whether CPython's parser looks at the file first)."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", text):
        if ch in "([{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif depth:
            depth -= 1
    return deepest


# Shapes CPython accepts but LibCST's native parser crashes on (thousands of `and`/`or` terms in one
# expression): refused with a TL000; no real program is written like this.
_LIBCST_CRASHERS = re.compile(r"(?:\b(?:and|or)\s+[\w.]+\s*){2000,}")


def _check_depth(text: str) -> None:
    if _LIBCST_CRASHERS.search(text) is not None:
        raise SourceError("expression too long for trainlint's parser (2000 or more `and`/`or` terms)")
    if _DEEP.search(text) is None and _bracket_depth(text) < 100 and text.count("elif") < 1000:
        return
    from trainlint.source import cpython_syntax_error

    error = cpython_syntax_error(text)
    if error is not None:
        raise error
    # CPython accepts it (a long `# -----` banner, or nesting within its limits): LibCST copes too.


class _parser_output_trusted:
    """Skip LibCST's per-node validation while its parser builds a tree: every node's `__post_init__`
    re-checks invariants that the parser's own output satisfies by construction (LibCST's source says as
    much: "It might make more sense to move validation work into the visitor, which would allow us to
    avoid validating the tree when parsing a file"). About a fifth of the parse's time. Nodes built by
    code (never by trainlint outside the parser) are validated as before once the parse returns."""

    def __enter__(self):
        try:
            from libcst._nodes.base import CSTNode
        except ImportError:  # another LibCST layout: validate as usual
            self.cls = None
            return self
        self.cls = CSTNode
        self.saved = CSTNode.__dict__.get("__post_init__")
        if self.saved is not None:
            CSTNode.__post_init__ = _no_validation
        return self

    def __exit__(self, *exc):
        if self.cls is not None and self.saved is not None:
            self.cls.__post_init__ = self.saved
        return False


def _no_validation(self) -> None:
    return None


def parse(text: str, cpython_accepts: bool = False):
    """Parse with LibCST, turning every failure into a SourceError with a location. `cpython_accepts`: the
    text is known to parse with CPython (the gate parsed it), so only LibCST's own crashers are checked."""
    import libcst

    if cpython_accepts:
        if _LIBCST_CRASHERS.search(text) is not None:
            raise SourceError("expression too long for trainlint's parser (2000 or more `and`/`or` terms)")
    else:
        _check_depth(text)
    try:
        with _parser_output_trusted():
            return libcst.parse_module(text)
    except libcst.ParserSyntaxError as exc:
        # Report what CPython reports (its location and its message: the ones users know); LibCST's own
        # error is kept only for code CPython accepts (syntax newer than LibCST's grammar).
        from trainlint.source import cpython_syntax_error

        error = cpython_syntax_error(text)
        if error is not None:
            raise error
        msg = str(exc.message) if hasattr(exc, "message") else str(exc)
        raise SourceError(f"syntax error: {msg.strip()}", exc.raw_line, exc.raw_column + 1)
    except RecursionError:
        raise SourceError("code is nested too deeply for the parser")
    except Exception as exc:  # LibCST's native parser may raise other errors on odd input
        raise SourceError(f"cannot parse file: {type(exc).__name__}: {exc}")


def lint_text(
    text: str,
    filename: str,
    codes: Sequence[str],
    options: Dict[str, Dict[str, Any]],
) -> LintResult:
    result = LintResult(filename)
    rules = _rules_matching(text, codes, options)
    if not rules:
        return result
    rules, cpython_accepts = gate_rules(text, filename, rules, options)
    if not rules:
        return result
    try:
        module = parse(text, cpython_accepts)
    except SourceError as exc:
        result.diagnostics.append(file_error(filename, exc.message, exc.row, exc.column))
        return result
    result.parsed = True

    import os

    from trainlint.analysis.index import ModuleIndex
    from trainlint.analysis.project import Project
    from trainlint.context import RuleContext

    project = Project.for_file(filename)
    if project is not None:
        project.begin()
    try:
        index = ModuleIndex(module, text, path=os.path.abspath(filename) if project else None, project=project)
    except RecursionError:
        result.diagnostics.append(file_error(filename, "code is nested too deeply to analyse"))
        return result
    except Exception as exc:  # a bug in the shared analysis: report it for this file, go on
        result.diagnostics.append(file_error(
            filename, f"internal error while indexing the module: {type(exc).__name__}: {exc}; please report "
                      "this at https://github.com/trainlint/trainlint/issues"))
        return result
    ctx = RuleContext(index, filename, text, options)
    for rule in rules:
        ctx.code = rule.CODE
        before = len(ctx.diagnostics)
        try:
            rule.check(ctx)
        except Exception as exc:  # one rule's bug must not hide the other findings
            del ctx.diagnostics[before:]
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            ctx.diagnostics.append(
                file_error(
                    filename,
                    f"internal error in {rule.CODE}: {type(exc).__name__}: {exc} "
                    f"(at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}); please report this at "
                    "https://github.com/trainlint/trainlint/issues with the file if you can",
                )
            )
    if project is not None:
        result.deps = project.end()
    # Facts memoised on the index point back at it: dropping them frees this file's tree at once
    # (reference counts) instead of at the cyclic collector's next pass.
    index._cache.clear()
    diags = filter_suppressed(text, ctx.diagnostics)
    diags.sort(key=Diagnostic.sort_key)
    result.diagnostics = diags
    return result


# -- files ------------------------------------------------------------------------------------------

@dataclass
class Job:
    path: str
    codes: List[str]
    options: Dict[str, Dict[str, Any]]
    fix: bool = False  # compute fixes
    write: bool = False  # write fixed files
    unsafe: bool = False


def process(job: Job) -> LintResult:
    """Lint (and maybe fix) one file on disk. Never raises for a problem with the file: whatever goes
    wrong becomes a TL000 finding for that file, and the run goes on."""
    try:
        return _process(job)
    except RecursionError:
        return LintResult(job.path, [file_error(job.path, "code is nested too deeply to analyse")])
    except Exception as exc:  # the last line of defence
        return LintResult(
            job.path,
            [file_error(job.path, f"internal error: {type(exc).__name__}: {exc}; please report this at "
                                  "https://github.com/trainlint/trainlint/issues")],
        )


def _process(job: Job) -> LintResult:
    from trainlint.fixer import fix_text
    from trainlint.source import atomic_write, read_source

    if job.path.endswith(".ipynb"):
        return _process_notebook(job)
    try:
        src = read_source(job.path)
    except SourceError as exc:
        return LintResult(job.path, [file_error(job.path, exc.message, exc.row, exc.column)])
    try:
        if not job.fix:
            return lint_text(src.text, job.path, job.codes, job.options)
        new_text, applied, remaining = fix_text(
            src.text, job.path, job.codes, job.options, job.unsafe, src.newline
        )
        result = LintResult(job.path, remaining, parsed=True, fixed=applied)
        if applied:
            result.new_text = new_text
            result.old_text = src.text
            if job.write:
                try:
                    atomic_write(job.path, src.encode(new_text))
                except (OSError, UnicodeError, LookupError) as exc:
                    result.fixed = 0
                    result.diagnostics.append(file_error(job.path, f"cannot write fixed file: {exc}"))
        return result
    except RecursionError:
        return LintResult(job.path, [file_error(job.path, "code is nested too deeply to analyse")])
    except Exception as exc:  # pragma: no cover - last line of defence
        return LintResult(
            job.path,
            [file_error(job.path, f"internal error: {type(exc).__name__}: {exc}; please report this")],
        )


def _process_notebook(job: Job) -> LintResult:
    from trainlint.fixer import fix_text
    from trainlint.notebook import Notebook
    from trainlint.source import atomic_write

    try:
        with open(job.path, "rb") as fh:
            raw = fh.read().decode("utf-8")
        nb = Notebook(raw)
    except OSError as exc:
        return LintResult(job.path, [file_error(job.path, f"cannot read file: {exc.strerror or exc}")])
    except UnicodeDecodeError as exc:
        return LintResult(job.path, [file_error(job.path, f"notebook is not valid UTF-8: {exc.reason}")])
    except SourceError as exc:
        return LintResult(job.path, [file_error(job.path, exc.message, exc.row, exc.column)])
    try:
        if not job.fix:
            r = lint_text(nb.text, job.path, job.codes, job.options)
            r.diagnostics = [nb.map_diagnostic(d) for d in r.diagnostics]
            return r
        new_text, applied, remaining = fix_text(nb.text, job.path, job.codes, job.options, job.unsafe)
        result = LintResult(job.path, [nb.map_diagnostic(d) for d in remaining], parsed=True)
        new_raw = nb.with_sources(new_text) if applied else None
        if new_raw is not None and new_raw != raw:
            result.fixed = applied
            result.diff = nb.cell_diff(job.path, new_text)
            if job.write:
                try:
                    atomic_write(job.path, new_raw.encode("utf-8"))
                except OSError as exc:
                    result.fixed = 0
                    result.diagnostics.append(file_error(job.path, f"cannot write fixed file: {exc}"))
        return result
    except RecursionError:
        return LintResult(job.path, [file_error(job.path, "code is nested too deeply to analyse")])


def run_jobs(jobs: List[Job], workers: int = 0, progress=None) -> List[LintResult]:
    """Run jobs, over a process pool when there are enough files to pay for it."""
    import os

    n = workers or (os.cpu_count() or 1)
    if n <= 1 or len(jobs) < 24:
        out = []
        for j in jobs:
            out.append(process(j))
            if progress:
                progress(1)
        return out
    from concurrent.futures import ProcessPoolExecutor

    # Import the rules (and LibCST) once, here: workers forked from this process start with them
    # (Linux), instead of each paying the imports again.
    from trainlint.analysis import gate  # noqa: F401
    from trainlint.rules import load

    load(sorted({c for j in jobs for c in j.codes}))
    chunk = max(1, min(16, len(jobs) // (n * 8)))
    results: List[LintResult] = []
    try:
        with ProcessPoolExecutor(max_workers=n) as pool:
            for r in pool.map(process, jobs, chunksize=chunk):
                results.append(r)
                if progress:
                    progress(1)
    except (OSError, RuntimeError):  # no process support (sandbox): fall back to one process
        done = {r.filename for r in results}
        for j in jobs:
            if j.path not in done:
                results.append(process(j))
    return results
