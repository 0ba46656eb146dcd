"""`# noqa` (line) and `# trainlint: noqa` (file) suppression."""

from __future__ import annotations

import io
import re
import sys
import tokenize
from typing import Dict, List, Optional, Set, Tuple

from trainlint.diagnostics import Diagnostic

_LINE = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Za-z]+[0-9]+(?:\s*,?\s*[A-Za-z]+[0-9]+)*))?", re.IGNORECASE)
_FILE = re.compile(
    r"^\s*#\s*(?:trainlint|flake8)\s*:\s*noqa(?::\s*(?P<codes>[A-Za-z]+[0-9]+(?:\s*,?\s*[A-Za-z]+[0-9]+)*))?\s*$",
    re.IGNORECASE,
)
_CODE = re.compile(r"[A-Za-z]+[0-9]+")
ALL = "*"


class Suppressions:
    def __init__(self, text: str) -> None:
        self.lines: Dict[int, Set[str]] = {}
        self.file: Set[str] = set()
        self.invalid: List[Tuple[int, str]] = []  # (row, code): TL codes that name no rule (`TL01`)
        if "noqa" not in text and "NOQA" not in text:
            return
        for row, comment, own_line in _comments(text):
            m = _FILE.match(comment) if own_line else None
            if m and "trainlint" in comment.lower():
                codes = _codes(m.group("codes"))
                self._check(row, codes)
                self.file |= codes
                continue
            m = _LINE.search(comment)
            if m:
                codes = _codes(m.group("codes"))
                self._check(row, codes)
                self.lines.setdefault(row, set()).update(codes)

    def _check(self, row: int, codes: Set[str]) -> None:
        from trainlint.codes import CODES

        for c in sorted(codes):
            if c.startswith("TL") and c not in CODES:  # other linters' codes (E501, ...) are not ours
                self.invalid.append((row, c))

    def suppressed(self, d: Diagnostic) -> bool:
        if ALL in self.file or d.code in self.file:
            return True
        codes = self.lines.get(d.location.row)
        return bool(codes) and (ALL in codes or d.code in codes)


def _codes(group: Optional[str]) -> Set[str]:
    if not group:
        return {ALL}
    return {c.upper() for c in _CODE.findall(group)}


def _comments(text: str):
    """(row, comment text) of every real comment (not `#` inside a string)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                yield tok.start[0], tok.string, not tok.line[: tok.start[1]].strip()
    except (tokenize.TokenError, SyntaxError, IndentationError):
        # Fall back to a plain scan of the lines (the file parsed for LibCST, so this is rare).
        for i, line in enumerate(text.splitlines(), 1):
            pos = line.find("#")
            if pos >= 0:
                yield i, line[pos:], not line[:pos].strip()


def filter_suppressed(text: str, diagnostics: List[Diagnostic]) -> List[Diagnostic]:
    if not diagnostics:
        return diagnostics
    s = Suppressions(text)
    for row, code in s.invalid:
        _warn_invalid(diagnostics[0].filename, row, code)
    return [d for d in diagnostics if d.code == "TL000" or not s.suppressed(d)]


_WARNED: Set[str] = set()


def _warn_invalid(filename: str, row: int, code: str) -> None:
    """Ruff's warning for a `# noqa` code that names no rule: a prefix (`TL01`) or a typo suppresses
    nothing, and silently so would be worse."""
    from trainlint.codes import CODES, unknown_code_hint

    matching = [c for c in CODES if c.startswith(code)]
    if matching:
        why = f"a prefix suppresses nothing; name the codes, e.g. `# noqa: {matching[0]}`"
    else:
        why = "it names no rule and suppresses nothing" + unknown_code_hint(code).replace(" (", "; ").rstrip(")")
    msg = f"trainlint: warning: invalid rule code provided to `# noqa` at {filename}:{row}: {code} ({why})"
    if msg not in _WARNED:
        _WARNED.add(msg)
        sys.stderr.write(msg + "\n")
