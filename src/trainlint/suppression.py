"""`# noqa` (line) and `# trainlint: noqa` (file) suppression."""

from __future__ import annotations

import io
import re
import tokenize
from typing import Dict, List, Optional, Set

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
        if "noqa" not in text and "NOQA" not in text:
            return
        for row, comment, own_line in _comments(text):
            m = _FILE.match(comment) if own_line else None
            if m and "trainlint" in comment.lower():
                self.file |= _codes(m.group("codes"))
                continue
            m = _LINE.search(comment)
            if m:
                self.lines.setdefault(row, set()).update(_codes(m.group("codes")))

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
    return [d for d in diagnostics if d.code == "TL000" or not s.suppressed(d)]
