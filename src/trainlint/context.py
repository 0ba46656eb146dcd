"""What a rule sees of one file, and how it reports."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.index import ModuleIndex
from trainlint.codes import CODES
from trainlint.diagnostics import Applicability, Diagnostic, Edit, Fix, Location, one_line
from trainlint.source import LineIndex


class RuleContext:
    def __init__(self, index: ModuleIndex, filename: str, text: str, options: Dict[str, Dict[str, Any]]):
        self.index = index
        self.filename = filename
        self.text = text
        self.options = options
        self.diagnostics: List[Diagnostic] = []
        self._positions = None
        self._lines: Optional[LineIndex] = None
        self.code = ""  # set by the engine to the rule being run

    # -- positions (computed only when a rule reports) ---------------------------------------------
    @property
    def lines(self) -> LineIndex:
        if self._lines is None:
            self._lines = LineIndex(self.text)
        return self._lines

    def range(self, node: cst.CSTNode) -> Tuple[Location, Location]:
        if self._positions is None:
            from trainlint.positions import compute_positions

            self._positions = compute_positions(self.index.module)
        r = self._positions[node]
        return Location(r.start.line, r.start.column + 1), Location(r.end.line, r.end.column + 1)

    def end_with_parens(self, node: cst.CSTNode) -> Location:
        """Where `node` ends including its own closing parentheses (positions exclude them)."""
        _, end = self.range(node)
        count = len(getattr(node, "rpar", ()) or ())
        if not count:
            return end
        text, lines = self.text, self.lines
        i = lines.offset(end.row, end.column)
        while count and i < len(text):
            ch = text[i]
            if ch == ")":
                count -= 1
            elif not ch.isspace() and ch != "\\":
                break
            i += 1
        row, col = lines.position(i)
        return Location(row, col)

    def insert_after_last_arg(self, call: cst.Call, text: str) -> Optional[Edit]:
        """Add an argument (`text` is `", name=value"`) after the last one, in the call's own style: on a
        line of its own, indented like the last argument, when the call puts its `)` on a line of its
        own (keeping a trailing comma style); else `, name=value` right after the last argument."""
        if not call.args:
            return None
        last = call.args[-1]
        end = self.end_with_parens(last.value)
        _, call_end = self.range(call)
        lines = self.lines
        start_i = lines.offset(end.row, end.column)
        close_i = self.text.rfind(")", start_i, lines.offset(call_end.row, call_end.column))
        between = self.text[start_i:close_i] if close_i >= 0 else ""
        if "\n" not in between:
            return Edit(text, end, end)
        arg = text[2:] if text.startswith(", ") else text.lstrip(", ")
        indent = self.indent_of(last.value)
        stripped = between.lstrip(" \t")
        if stripped.startswith(","):  # a trailing comma: the new argument goes on the next line, with its own
            comma_i = start_i + (len(between) - len(stripped))
            at_i = comma_i + 1
            eol = min((i for i in (self.text.find("\r", at_i), self.text.find("\n", at_i)) if i >= 0),
                      default=len(self.text))
            rest = self.text[at_i:eol]
            if rest.strip().startswith("#"):  # keep a comment on the line it belongs to
                at_i += len(rest)
            row, col = lines.position(at_i)
            at = Location(row, col)
            return Edit(f"\n{indent}{arg},", at, at)
        return Edit(f",\n{indent}{arg}", end, end)

    def indent_of(self, node: cst.CSTNode) -> str:
        start, _ = self.range(node)
        line = self.lines.line(start.row)
        return line[: len(line) - len(line.lstrip(" \t"))]

    def option(self, name: str, default=None):
        return self.options.get(self.code, {}).get(name, default)

    # -- fixes -------------------------------------------------------------------------------------
    def replace(self, node: cst.CSTNode, content: str) -> Edit:
        start, end = self.range(node)
        return Edit(content, start, end)

    def insert_before_statement(self, stmt: cst.CSTNode, line_text: str) -> Edit:
        """Insert a line (same indentation as `stmt`) just before statement `stmt`."""
        start, _ = self.range(stmt)
        indent = self.indent_of(stmt)
        return Edit(f"{line_text}\n{indent}", start, start)

    def delete_statement_line(self, stmt: cst.CSTNode) -> Edit:
        """Delete a whole statement line, including its indentation and line ending."""
        start, end = self.range(stmt)
        return Edit("", Location(start.row, 1), Location(end.row + 1, 1))

    @staticmethod
    def fix(applicability: str, message: str, *edits: Edit) -> Fix:
        return Fix(Applicability(applicability), message, tuple(edits))

    # -- reporting ---------------------------------------------------------------------------------
    def report(self, node: cst.CSTNode, message: str, fix: Optional[Fix] = None,
               severity: Optional[str] = None, code: Optional[str] = None) -> None:
        code = code or self.code
        info = CODES[code]
        start, end = self.range(node)
        if fix is not None and ("\n" in fix.message or "`" in fix.message):
            fix = Fix(fix.applicability, one_line(fix.message), fix.edits)
        self.diagnostics.append(
            Diagnostic(
                code=code,
                name=info.name,
                message=one_line(message),
                filename=self.filename,
                location=start,
                end_location=end,
                severity=severity or info.severity,
                fix=fix,
            )
        )
