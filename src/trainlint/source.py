"""Reading and writing source files without losing their encoding, BOM, line endings or mode."""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
import tokenize
from dataclasses import dataclass
from typing import List, Optional, Tuple

_NEWLINE = re.compile(r"\r\n|\r|\n")
BOM = b"\xef\xbb\xbf"
_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


class SourceError(Exception):
    """A file that cannot be read or parsed; reported as a TL000 diagnostic."""

    def __init__(self, message: str, row: int = 1, column: int = 1):
        super().__init__(message)
        self.message = message
        self.row = row
        self.column = column


@dataclass
class SourceFile:
    text: str  # decoded, without the BOM
    encoding: str
    bom: bool
    newline: str  # the dominant line ending: "\n", "\r\n" or "\r"

    def encode(self, text: str) -> bytes:
        data = text.encode(self.encoding)
        return (BOM + data) if self.bom else data


def detect_newline(text: str) -> str:
    counts = {"\n": 0, "\r\n": 0, "\r": 0}
    for m in _NEWLINE.finditer(text, 0, min(len(text), 1 << 16)):
        counts[m.group()] += 1
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else "\n"


def decode(data: bytes) -> SourceFile:
    """Decode bytes as Python does: BOM, then a PEP 263 coding cookie, else UTF-8."""
    bom = data.startswith(BOM)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        head = data.split(b"\n", 2)[:2]
        if not any(_COOKIE.match(line) for line in head):
            encoding = "utf-8"  # no cookie: the file is just not UTF-8 (reported below)
        else:
            raise SourceError(f"bad encoding declaration: {exc.msg if hasattr(exc, 'msg') else exc}")
    if encoding == "utf-8-sig":
        encoding = "utf-8"
    body = data[len(BOM):] if bom else data
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        row = body.count(b"\n", 0, exc.start) + 1
        col = exc.start - (body.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SourceError(
            f"file is not valid {encoding} (byte 0x{body[exc.start]:02x} at offset {exc.start}); "
            "declare its encoding with a PEP 263 coding comment or re-save it as UTF-8",
            row,
            col,
        )
    except LookupError:
        raise SourceError(f"unknown encoding {encoding!r} in the coding declaration")
    except (UnicodeError, ValueError, TypeError) as exc:  # codecs that cannot decode at all
        raise SourceError(f"cannot decode the file as {encoding!r}: {exc}")
    if "\x00" in text:
        idx = text.index("\x00")
        row = text.count("\n", 0, idx) + 1
        raise SourceError("file contains a NUL byte; Python cannot parse it", row, 1)
    return SourceFile(text=text, encoding=encoding, bom=bom, newline=detect_newline(text))


def cpython_syntax_error(text: str) -> Optional[SourceError]:
    """CPython's verdict on `text` (only parsed, never compiled or run): a SourceError with CPython's
    message and 1-based location, or None if CPython accepts it."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():  # invalid escape sequences and the like: not our business here
            warnings.simplefilter("ignore")
            ast.parse(text)
    except SyntaxError as exc:  # IndentationError and TabError included
        row = exc.lineno or 1
        column = exc.offset or 1
        if row > text.count("\n") + 2:  # "unexpected EOF" may point past the end
            row = text.count("\n") + 1
        return SourceError(f"syntax error: {exc.msg}", max(row, 1), max(column, 1))
    except (RecursionError, MemoryError):
        return SourceError("code is nested too deeply for the parser")
    except ValueError as exc:  # NUL bytes (normally refused earlier, when the file is decoded)
        return SourceError(f"cannot parse file: {exc}")
    return None


def read_source(path: str) -> SourceFile:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror or exc}")
    return decode(data)


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the new one, never half.

    Keeps the file's permission bits; follows a symlink to write its target.
    """
    real = os.path.realpath(path)
    directory = os.path.dirname(real) or "."
    try:
        mode: Optional[int] = stat.S_IMODE(os.stat(real).st_mode)
    except OSError:
        mode = None
    fd, tmp = tempfile.mkstemp(prefix=".trainlint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class LineIndex:
    """Maps 1-based (row, column) positions to offsets in a text, with LibCST's idea of a line."""

    def __init__(self, text: str):
        self.text = text
        starts: List[int] = [0]
        for m in _NEWLINE.finditer(text):
            starts.append(m.end())
        self.starts = starts

    def offset(self, row: int, column: int) -> int:
        if row - 1 >= len(self.starts):
            return len(self.text)
        return min(self.starts[row - 1] + column - 1, len(self.text))

    def line(self, row: int) -> str:
        """The text of a row without its line ending."""
        if row - 1 >= len(self.starts) or row < 1:
            return ""
        start = self.starts[row - 1]
        end = self.starts[row] if row < len(self.starts) else len(self.text)
        return self.text[start:end].rstrip("\r\n")

    def position(self, offset: int) -> Tuple[int, int]:
        import bisect

        row = bisect.bisect_right(self.starts, offset)
        return row, offset - self.starts[row - 1] + 1
