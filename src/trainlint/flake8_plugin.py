"""flake8 plugin: `flake8 --select TL` reports trainlint's static findings.

flake8 hands us the file's lines; trainlint parses them itself with LibCST (flake8's `ast` tree is not
used). trainlint's own configuration applies as it does for `trainlint check`: the nearest
`trainlint.toml`/`.trainlint.toml`/`pyproject.toml` with settings decides which TL rules run for the file
(`select`, `ignore`, `per-file-ignores`) and their options. flake8's `--select`/`--extend-ignore` and its
own `# noqa` handling then apply to what we yield, as to any plugin.
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
        from trainlint.config import ConfigError, ConfigResolver
        from trainlint.engine import lint_text

        try:
            settings = ConfigResolver().for_path(self.filename if self.filename not in ("stdin", "-") else ".")
            codes, options = settings.codes_for(self.filename), settings.rule_options()
        except ConfigError as exc:  # a broken config must not pass silently, nor crash flake8
            yield 1, 0, f"TL000 trainlint configuration error: {exc}", type(self)
            return
        text = "".join(self.lines)
        result = lint_text(text, self.filename, codes, options)
        for d in result.diagnostics:
            # flake8 rows are 1-based, columns 0-based
            yield d.location.row, d.location.column - 1, f"{d.code} {d.message}", type(self)
