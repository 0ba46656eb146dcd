"""Terminal styling (off unless writing to a terminal; NO_COLOR and FORCE_COLOR honoured)."""

from __future__ import annotations

import os


class Style:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream) -> "Style":
        if os.environ.get("NO_COLOR"):
            return cls(False)
        if os.environ.get("FORCE_COLOR"):
            return cls(True)
        isatty = getattr(stream, "isatty", None)
        return cls(bool(isatty and isatty()))

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, t: str) -> str:
        return self._wrap("1", t)

    def red(self, t: str) -> str:
        return self._wrap("1;31", t)

    def yellow(self, t: str) -> str:
        return self._wrap("1;33", t)

    def blue(self, t: str) -> str:
        return self._wrap("1;34", t)

    def green(self, t: str) -> str:
        return self._wrap("32", t)

    def cyan(self, t: str) -> str:
        return self._wrap("36", t)


def fixable_marker(d, unsafe_fixes: bool) -> str:
    """Ruff's `[*]` for a fix that `--fix` would apply (`[*]` for unsafe ones with --unsafe-fixes)."""
    if d.fix is None:
        return ""
    if d.fix.applicability.value == "safe" or unsafe_fixes:
        return " [*]"
    return ""


class DiffColourStream:
    """A text stream that colours the unified diff written through it, line by line, as Ruff and git
    do on a terminal: file headers bold, hunk headers cyan, removed lines red, added lines green."""

    def __init__(self, stream):
        self.stream = stream
        self.style = Style(True)
        self._partial = ""

    def write(self, text: str) -> int:
        from trainlint.fixer import colour_diff_line

        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.stream.write(colour_diff_line(line, self.style) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._partial:
            from trainlint.fixer import colour_diff_line

            self.stream.write(colour_diff_line(self._partial, self.style))
            self._partial = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name):  # encoding, errors, buffer, fileno, ...
        return getattr(self.stream, name)
