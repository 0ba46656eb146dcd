"""GitHub Actions workflow commands: annotations on the pull request's changed lines."""

from __future__ import annotations


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def render(diagnostics, stream, **_):
    for d in diagnostics:
        level = "warning" if d.severity == "warning" else "error"
        props = (
            f"file={_escape_property(d.filename)},line={d.location.row},endLine={d.end_location.row},"
            f"col={d.location.column},endColumn={d.end_location.column},"
            f"title={_escape_property(f'trainlint ({d.code})')}"
        )
        where = f"cell {d.cell}:" if d.cell is not None else ""
        stream.write(f"::{level} {props}::{_escape_data(where + d.code + ' ' + d.message)}\n")
