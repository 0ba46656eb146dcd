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
