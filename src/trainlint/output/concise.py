"""`path:row:col: CODE message`, one finding per line (Flake8/Ruff concise)."""

from __future__ import annotations

from trainlint.output.style import Style, fixable_marker


def location(d) -> str:
    if d.cell is not None:
        return f"{d.filename}:cell {d.cell}:{d.location.row}:{d.location.column}"
    return f"{d.filename}:{d.location.row}:{d.location.column}"


def render(diagnostics, stream, style: Style, unsafe_fixes: bool = False, **_):
    for d in diagnostics:
        stream.write(
            f"{style.bold(location(d))}: {style.red(d.code)}{fixable_marker(d, unsafe_fixes)} {d.message}\n"
        )
