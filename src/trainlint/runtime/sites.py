"""Source sites: the user's line that called backward() or optimizer.step(), found from the stack.

A site is resolved once per calling location (the immediate caller's code object and line), not per
step: the resolved `Site` is cached and later calls from the same place reuse it.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
from typing import Any, Dict, NamedTuple, Optional, Tuple


class Site(NamedTuple):
    """A user line. A tuple: a site is a dictionary key of several checks, looked up for every loss, and
    a tuple's hash is computed in C (a frozen dataclass's `__hash__` is a Python call)."""

    filename: str  # absolute path
    row: int
    function: str = ""

    def display_name(self) -> str:
        return display_filename(self.filename)

    def label(self) -> str:
        return f"{self.display_name()}:{self.row}"

    def columns(self) -> Tuple[int, int]:
        """1-based start column (first non-blank character) and end column (end of line)."""
        line = linecache.getline(self.filename, self.row).rstrip("\r\n")
        if not line.strip():
            return 1, 1
        stripped = line.rstrip()
        start = len(line) - len(line.lstrip()) + 1
        return start, len(stripped) + 1


UNKNOWN = Site("<unknown>", 1, "")


def display_filename(filename: str) -> str:
    """Relative to the working directory when the file is under it, else absolute."""
    if filename.startswith("<"):
        return filename
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith(os.pardir) else rel


def _dir_of(module) -> Optional[str]:
    f = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(f)) + os.sep if f else None


class SiteFinder:
    """Walks outward from a frame to the first frame of user code.

    Frames in torch, in trainlint's runtime package, in runpy/importlib, are skipped; a frame in an
    installed library (site-packages) or the standard library is used only when no user frame is found
    further out (a Lightning/Accelerate loop: the user's line is then `trainer.fit(...)`).
    """

    def __init__(self) -> None:
        import torch

        import trainlint

        self._skip = tuple(p for p in (
            _dir_of(torch),
            _dir_of(trainlint),
            os.path.dirname(os.path.abspath(__import__("runpy").__file__)) + os.sep + "runpy.py",
        ) if p)
        lib = set()
        for key in ("purelib", "platlib", "stdlib", "platstdlib"):
            try:
                p = sysconfig.get_paths().get(key)
            except Exception:  # pragma: no cover - broken sysconfig
                p = None
            if p:
                lib.add(os.path.abspath(p) + os.sep)
        self._lib = tuple(sorted(lib))
        self._cache: Dict[Tuple[int, int], Tuple[object, Site]] = {}
        self._skipped_code: Dict[int, Tuple[object, bool]] = {}
        # (see `at`) the code object and instruction of the last frame asked about, and its site
        self._memo_code: Any = None
        self._memo_at = -1
        self._memo_site = UNKNOWN

    def _is_skipped(self, filename: str) -> bool:
        return filename.startswith("<frozen") or filename.startswith(self._skip)

    def skips(self, filename: str) -> bool:
        """Is a frame of this file trainlint's, torch's or runpy's (never the user's code)?"""
        return self._is_skipped(self._abs(filename))

    def _is_library(self, filename: str) -> bool:
        return (filename.startswith(self._lib) or "site-packages" in filename
                or "dist-packages" in filename or filename.startswith("<"))

    def find(self, depth: int = 1) -> Site:
        """The user site for the caller `depth` frames above the function calling `find`."""
        try:
            frame = sys._getframe(depth + 1)
        except ValueError:
            return UNKNOWN
        return self.at(frame)

    def at(self, frame: Any) -> Site:
        """The user site for `frame` (the frame itself, or the first one outward that is not torch's,
        trainlint's or runpy's). The same call as the last one (a loop's backward(), every step: the same
        code object and instruction offset, cheaper to read than the line number) is answered from a
        one-entry memo."""
        code = frame.f_code
        at = frame.f_lasti
        if code is self._memo_code and at == self._memo_at:
            return self._memo_site
        site = self._walk(frame)
        if not self._skipped_code[id(code)][1]:  # (a skipped frame's line says nothing of the user's)
            self._memo_code, self._memo_at, self._memo_site = code, at, site
        return site

    def _walk(self, frame: Any) -> Site:
        # skip torch/trainlint/runpy frames (decided once per code object), then cache on the first
        # other frame. Called for every loss: code objects are keyed by id (hashing a code object hashes
        # its constants each time), with the code object kept alongside so that an id is never reused
        skipped = self._skipped_code
        while frame is not None:
            code = frame.f_code
            entry = skipped.get(id(code))
            if entry is None or entry[0] is not code:
                entry = skipped[id(code)] = (code, self._is_skipped(self._abs(code.co_filename)))
            if not entry[1]:
                break
            frame = frame.f_back
        if frame is None:
            return UNKNOWN
        key = (id(code), frame.f_lineno)
        entry = self._cache.get(key)
        if entry is None or entry[0] is not code:
            entry = (code, self._resolve(frame))
            if len(self._cache) < 4096:
                self._cache[key] = entry
        return entry[1]

    @staticmethod
    def _abs(filename: str) -> str:
        return filename if filename.startswith("<") else os.path.abspath(filename)

    def _resolve(self, frame) -> Site:
        fallback = None
        f = frame
        while f is not None:
            filename = self._abs(f.f_code.co_filename)
            if not self._is_skipped(filename):
                site = Site(filename, f.f_lineno or 1, f.f_code.co_name)
                if not self._is_library(filename):
                    return site
                if fallback is None:
                    fallback = site
            f = f.f_back
        return fallback or UNKNOWN
