"""flake8 plugin: `flake8 --select TL` reports trainlint's static findings.

flake8 hands us the file's lines; trainlint parses them itself with LibCST (flake8's `ast` tree is not
used). flake8 applies its own `# noqa` handling to what we yield.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

from trainlint import __version__


class Plugin:
    name = "trainlint"
    version = __version__

    def __init__(self, tree, filename: str = "stdin", lines: List[str] = ()):
        self.filename = filename
        self.lines = list(lines)

    def run(self) -> Iterator[Tuple[int, int, str, type]]:
        from trainlint.config import Settings
        from trainlint.engine import lint_text

        settings = Settings()
        text = "".join(self.lines)
        result = lint_text(text, self.filename, settings.codes_for(self.filename), settings.rule_options())
        for d in result.diagnostics:
            # flake8 rows are 1-based, columns 0-based
            yield d.location.row, d.location.column - 1, f"{d.code} {d.message}", type(self)
