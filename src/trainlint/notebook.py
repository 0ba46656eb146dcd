"""Jupyter notebooks: code cells joined into one module, findings mapped back to (cell, row).

Cell magics (`%%time`, `%%bash`, ...) skip the whole cell; line magics, `!shell` lines and `?` help lines
are masked with a placeholder so that the rest parses, and are restored verbatim when writing. Cells are
joined with a boundary comment line, so a fixed module splits back into the same cells. Only the
`source` of changed cells is rewritten; outputs, metadata and the JSON layout (indent, key order,
trailing newline) are kept.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

from trainlint.diagnostics import Diagnostic, Edit, Fix, Location
from trainlint.source import SourceError

BOUNDARY = "# trainlint: cell boundary"
_MASK = "pass  # trainlint-mask-{}"
_MASK_RE = re.compile(r"^(\s*)pass  # trainlint-mask-(\d+)$")


@dataclass
class Cell:
    index: int  # position in nb["cells"]
    number: int  # 1-based among all cells, as Ruff and Jupyter count them (index + 1)
    text: str
    skipped: bool


class Notebook:
    def __init__(self, raw: str):
        self.raw = raw
        try:
            self.data = json.loads(raw)
        except ValueError as exc:
            raise SourceError(f"notebook is not valid JSON: {exc}",
                              getattr(exc, "lineno", 1), getattr(exc, "colno", 1))
        except RecursionError:
            raise SourceError("notebook JSON is nested too deeply to read")
        if not isinstance(self.data, dict) or not isinstance(self.data.get("cells"), list):
            raise SourceError("notebook has no `cells` list (not an .ipynb file?)")
        self.cells: List[Cell] = []
        for i, cell in enumerate(self.data["cells"]):
            if not isinstance(cell, dict) or cell.get("cell_type") != "code":
                continue
            number = i + 1  # markdown and raw cells count too: the number an editor shows
            src = cell.get("source", "")
            if isinstance(src, list) and all(isinstance(x, str) for x in src):
                text = "".join(src)
            elif isinstance(src, str):
                text = src
            else:
                raise SourceError(f"code cell {number} has a `source` that is not text")
            self.cells.append(Cell(i, number, text, text.lstrip().startswith("%%")))
        self.masked: List[str] = []
        self.rows: List[Tuple[int, int]] = []  # joined row (0-based) -> (cell number, row in cell)
        self.text = self._join()

    def _join(self) -> str:
        out: List[str] = []
        for cell in self.cells:
            if cell.skipped:
                continue
            if out:
                out.append(BOUNDARY)
                self.rows.append((cell.number, 0))
            for r, line in enumerate(cell.text.split("\n"), 1):
                stripped = line.lstrip()
                if stripped.startswith(("%", "!", "?")) or (stripped.endswith("?") and not stripped.startswith("#")):
                    indent = line[: len(line) - len(stripped)]
                    out.append(indent + _MASK.format(len(self.masked)))
                    self.masked.append(line)
                else:
                    out.append(line)
                self.rows.append((cell.number, r))
        return "\n".join(out) + ("\n" if out else "")

    def cell_text(self, number: int) -> Optional[str]:
        """The source of cell `number` (1-based among all cells), as the notebook holds it."""
        for cell in self.cells:
            if cell.number == number:
                return cell.text
        return None

    # -- findings ----------------------------------------------------------------------------------
    def _loc(self, loc: Location) -> Tuple[int, Location]:
        i = min(max(loc.row - 1, 0), len(self.rows) - 1) if self.rows else 0
        cell, row = self.rows[i] if self.rows else (1, 1)
        return cell, Location(max(row, 1), loc.column)

    def map_diagnostic(self, d: Diagnostic) -> Diagnostic:
        cell, start = self._loc(d.location)
        end_cell, end = self._loc(d.end_location)
        if end_cell != cell:
            end = start
        fix = d.fix
        if fix is not None:
            edits = []
            for e in fix.edits:
                c1, a = self._loc(e.location)
                c2, b = self._loc(e.end_location)
                edits.append(Edit(e.content, a, b if c2 == c1 else a))
            fix = Fix(fix.applicability, fix.message, tuple(edits))
        return replace(d, cell=cell, location=start, end_location=end, fix=fix)

    # -- writing -----------------------------------------------------------------------------------
    def cell_texts(self, joined: str) -> Optional[List[str]]:
        """Split a (fixed) joined module back into the texts of the non-skipped cells."""
        body = joined[:-1] if joined.endswith("\n") else joined
        parts = body.split("\n" + BOUNDARY + "\n") if body else [""]
        live = [c for c in self.cells if not c.skipped]
        if len(parts) != len(live):
            return None

        def unmask(line: str) -> str:
            m = _MASK_RE.match(line)
            return self.masked[int(m.group(2))] if m else line

        return ["\n".join(unmask(line) for line in part.split("\n")) for part in parts]

    def with_sources(self, joined: str) -> Optional[str]:
        texts = self.cell_texts(joined)
        if texts is None:
            return None
        live = [c for c in self.cells if not c.skipped]
        changed = False
        for cell, text in zip(live, texts):
            if text == cell.text:
                continue
            changed = True
            target = self.data["cells"][cell.index]
            target["source"] = text.splitlines(keepends=True) if isinstance(target.get("source"), list) else text
        if not changed:
            return self.raw
        return self._dump()

    def _dump(self) -> str:
        m = re.match(r"\{\r?\n( +)", self.raw)
        indent = len(m.group(1)) if m else None
        ascii_only = "\\u" in self.raw and not any(ord(ch) > 127 for ch in self.raw)
        out = json.dumps(self.data, indent=indent, ensure_ascii=ascii_only)
        if self.raw.endswith("\n"):
            out += "\n"
        return out

    def cell_diff(self, filename: str, joined: str) -> str:
        texts = self.cell_texts(joined) or []
        live = [c for c in self.cells if not c.skipped]
        out = []
        for cell, text in zip(live, texts):
            if text != cell.text:
                out.extend(difflib.unified_diff(
                    cell.text.splitlines(keepends=True), text.splitlines(keepends=True),
                    fromfile=f"{filename}:cell {cell.number}", tofile=f"{filename}:cell {cell.number}"))
                if out and not out[-1].endswith("\n"):
                    out.append("\n")
        return "".join(out)
