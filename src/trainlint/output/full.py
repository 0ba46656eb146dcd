"""Ruff-like full output: the finding, the source line with carets, and the fix as a diff."""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional

from trainlint.output.style import Style, fixable_marker


class Sources:
    """Source texts by file name, read on demand (runtime findings point at files on disk)."""

    def __init__(self, given: Optional[Dict[str, str]] = None):
        self.texts: Dict[str, Optional[str]] = dict(given or {})
        self.notebooks: Dict[str, object] = {}

    def text(self, filename: str, cell: Optional[int] = None) -> Optional[str]:
        """The text a finding's rows count in: the file's, or for a notebook the cell's."""
        if cell is None:
            self.lines(filename)
            return self.texts.get(filename)
        if filename not in self.notebooks:
            from trainlint.notebook import Notebook
            from trainlint.source import SourceError

            try:
                with open(filename, "rb") as fh:
                    self.notebooks[filename] = Notebook(fh.read().decode("utf-8"))
            except (OSError, UnicodeDecodeError, SourceError):
                self.notebooks[filename] = None
        nb = self.notebooks[filename]
        return nb.cell_text(cell) if nb is not None else None

    def cell_lines(self, filename: str, cell: Optional[int]) -> Optional[List[str]]:
        if cell is None:
            return self.lines(filename)
        text = self.text(filename, cell)
        return text.splitlines() if text is not None else None

    def lines(self, filename: str) -> Optional[List[str]]:
        if filename not in self.texts:
            from trainlint.source import SourceError, read_source

            try:
                self.texts[filename] = read_source(filename).text
            except SourceError:
                self.texts[filename] = None
        text = self.texts[filename]
        if text is None:
            return None
        return text.splitlines()


def render(diagnostics, stream, style: Style, sources: Optional[Sources] = None,
           unsafe_fixes: bool = False, **_):
    from trainlint.output.concise import location

    sources = sources or Sources()
    for d in diagnostics:
        head = f"{style.bold(location(d))}: {style.red(d.code)}{fixable_marker(d, unsafe_fixes)} {d.message}"
        stream.write(head + "\n")
        lines = sources.cell_lines(d.filename, d.cell)
        # Ruff's gutter: `=` lines sit under the `|` of the code frame (one column past the row numbers).
        gutter = " " * (len(str(d.location.row)) + 1)
        if lines and 1 <= d.location.row <= len(lines):
            stream.write(_snippet(d, lines, style))
        if d.runtime and d.runtime.get("evidence"):
            ev = ", ".join(f"{k}={_fmt(v)}" for k, v in d.runtime["evidence"].items())
            stream.write(f"{gutter}{style.blue('=')} evidence: {ev}\n")
        if d.fix is not None:
            kind = "Safe fix" if d.fix.applicability.value == "safe" else "Unsafe fix"
            stream.write(f"{gutter}{style.blue('=')} help: {d.fix.message} ({kind.lower()})\n")
            if lines is not None:
                stream.write(_fix_diff(d, sources.text(d.filename, d.cell) or "", style))
        stream.write("\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 8:
        return "[" + ", ".join(_fmt(x) for x in v[:8]) + ", ...]"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _snippet(d, lines: List[str], style: Style) -> str:
    row = d.location.row
    first = max(1, row - 2)
    width = len(str(row))
    gutter = " " * width
    out = [f"{gutter} {style.blue('|')}\n"]
    for r in range(first, row + 1):
        out.append(f"{style.blue(str(r).rjust(width))} {style.blue('|')} {lines[r - 1]}\n")
    line = lines[row - 1]
    start = d.location.column - 1
    end = d.end_location.column - 1 if d.end_location.row == row else len(line)
    end = max(end, start + 1)
    prefix = "".join(ch if ch == "\t" else " " for ch in line[:start])
    carets = "^" * (end - start)
    out.append(f"{gutter} {style.blue('|')} {prefix}{style.red(carets)} {style.red(d.code)}\n")
    out.append(f"{gutter} {style.blue('|')}\n")
    return "".join(out)


def _fix_diff(d, text: str, style: Style) -> str:
    from trainlint.fixer import apply_fixes

    fixed, applied = apply_fixes(text, [d.fix])
    if not applied:
        return ""
    a, b = text.splitlines(), fixed.splitlines()
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    width = len(str(max(len(a), len(b))))
    out: List[str] = []
    for group in sm.get_grouped_opcodes(1):
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    out.append(f"{str(i1 + k + 1).rjust(width)} {str(j1 + k + 1).rjust(width)} |  {a[i1 + k]}\n")
            if tag in ("replace", "delete"):
                for k in range(i1, i2):
                    out.append(style.red(f"{str(k + 1).rjust(width)} {' ' * width} |- {a[k]}") + "\n")
            if tag in ("replace", "insert"):
                for k in range(j1, j2):
                    out.append(style.green(f"{' ' * width} {str(k + 1).rjust(width)} |+ {b[k]}") + "\n")
        out.append("\n")
    return "".join("     " + line if line != "\n" else "" for line in out)
