"""Applying fixes: non-overlapping edits, re-parse check, iterate until stable."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Set, Tuple

from trainlint.diagnostics import Applicability, Diagnostic, Fix
from trainlint.source import LineIndex, SourceError

MAX_PASSES = 100  # like Ruff: each pass applies at most one insertion per point


def _spans(text: str, fix: Fix, newline: str, index: LineIndex) -> List[Tuple[int, int, str]]:
    out = []
    for e in fix.edits:
        start = index.offset(e.location.row, e.location.column)
        end = index.offset(e.end_location.row, e.end_location.column)
        out.append((start, end, e.content.replace("\n", newline)))
    return out


def apply_fixes(text: str, fixes: Sequence[Fix], newline: str = "\n") -> Tuple[str, List[Fix]]:
    """Apply as many fixes as do not overlap an earlier one; return the new text and those applied."""
    index = LineIndex(text)
    taken: List[Tuple[int, int]] = []
    spans: List[Tuple[int, int, str]] = []
    applied: List[Fix] = []
    for fix in fixes:
        fs = _spans(text, fix, newline, index)
        if any(_overlaps(s, e, s0, e0) for s, e, _ in fs for s0, e0 in taken):
            continue
        taken.extend((s, e) for s, e, _ in fs)
        spans.extend(fs)
        applied.append(fix)
    if not spans:
        return text, []
    spans.sort(key=lambda t: (t[0], t[1]))
    parts: List[str] = []
    pos = 0
    for s, e, content in spans:
        parts.append(text[pos:s])
        parts.append(content)
        pos = max(pos, e)
    parts.append(text[pos:])
    return "".join(parts), applied


def _overlaps(s: int, e: int, s0: int, e0: int) -> bool:
    """Two edits conflict if their ranges overlap, or both insert at the same point."""
    if s == e and s0 == e0:
        return s == s0
    return s < e0 and s0 < e or (s == e and s0 < s < e0) or (s0 == e0 and s < s0 < e)


def applicable(diags: Sequence[Diagnostic], unsafe: bool) -> List[Fix]:
    out = []
    for d in diags:
        if d.fix is None:
            continue
        if d.fix.applicability == Applicability.SAFE or unsafe:
            out.append(d.fix)
    return out


def _parses(text: str) -> bool:
    from trainlint.engine import parse

    try:
        parse(text)
        return True
    except SourceError:
        return False


def fix_text(
    text: str,
    filename: str,
    codes: Sequence[str],
    options: Dict[str, Dict[str, Any]],
    unsafe: bool,
    newline: str = "\n",
):
    """Fix until nothing more applies. Returns (new_text, number of fixes applied, remaining diagnostics)."""
    from trainlint.engine import lint_text

    applied_total = 0
    rejected: Set[Tuple[str, str]] = set()
    result = lint_text(text, filename, codes, options)
    for _ in range(MAX_PASSES):
        fixes = [f for f in applicable(result.diagnostics, unsafe) if (f.message, repr(f.edits)) not in rejected]
        if not fixes:
            break
        new_text, applied = apply_fixes(text, fixes, newline)
        if applied and not _parses(new_text):
            # Find the fixes that break the parse, one at a time.
            new_text, ok = text, []
            for fix in applied:
                candidate, one = apply_fixes(new_text, [fix], newline)
                if one and _parses(candidate):
                    new_text = candidate
                    ok.append(fix)
                    break  # positions of the others moved: re-lint before applying more
                rejected.add((fix.message, repr(fix.edits)))
            applied = ok
        if not applied or new_text == text:
            break
        applied_total += len(applied)
        text = new_text
        result = lint_text(text, filename, codes, options)
    return text, applied_total, result.diagnostics


def colour_diff_line(line: str, style) -> str:
    """One line of a unified diff, coloured for a terminal (`style` decides whether at all)."""
    if line.startswith(("--- ", "+++ ")):
        return style.bold(line)
    if line.startswith("@@"):
        return style.cyan(line)
    if line.startswith("-"):
        return style.red(line)
    if line.startswith("+"):
        return style.green(line)
    return line
