"""Per-file result cache: content hash + trainlint version + effective settings -> findings.

An entry also records the other project files whose facts the lint used (`LintResult.deps`, path ->
digest): it is a hit only while each of them is unchanged, so editing `models/net.py` re-lints the
`train.py` that asked about the model defined there, and nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Optional

from trainlint import __version__

DEFAULT_DIR = ".trainlint_cache"


class Cache:
    def __init__(self, root: str):
        self.root = root
        self.dir = os.path.join(root, __version__)
        self._settings_text: dict = {}  # (codes, id(options)) -> their JSON, hashed into every key
        self._keep: list = []

    @classmethod
    def open(cls, root: Optional[str]) -> Optional["Cache"]:
        root = root or DEFAULT_DIR
        try:
            os.makedirs(os.path.join(root, __version__), exist_ok=True)
            gi = os.path.join(root, ".gitignore")
            if not os.path.exists(gi):
                _write(gi, b"# Automatically created by trainlint.\n*\n")
            tag = os.path.join(root, "CACHEDIR.TAG")
            if not os.path.exists(tag):
                _write(tag, b"Signature: 8a477f597d28d172789f06886806bc55\n"
                            b"# This file is a cache directory tag created by trainlint.\n")
        except OSError:
            return None  # read-only tree: run without a cache
        return cls(root)

    def _key(self, job) -> Optional[str]:
        try:
            with open(job.path, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        h = hashlib.blake2b(data, digest_size=20)
        settings_key = (tuple(job.codes), id(job.options))
        text = self._settings_text.get(settings_key)
        if text is None:
            text = self._settings_text[settings_key] = json.dumps([job.codes, job.options], sort_keys=True).encode()
            self._keep.append(job.options)  # its id stays its own while the cache lives
        h.update(b"\0" + text)
        h.update(b"\0" + os.path.abspath(job.path).encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def get(self, job):
        from trainlint.diagnostics import Diagnostic
        from trainlint.engine import LintResult

        key = self._key(job)
        if key is None:
            return None
        try:
            with open(os.path.join(self.dir, key[:2], key), "r", encoding="utf-8") as fh:
                data = json.load(fh)
            diags = [Diagnostic.from_json(d) for d in data["diagnostics"]]
            deps = dict(data.get("deps", {}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a damaged entry: a miss
            return None
        if deps:
            from trainlint.analysis.project import digest_of

            if any(digest_of(p) != d for p, d in deps.items()):
                return None  # a module it used has changed
        for d in diags:
            d.filename = job.path
        job._cache_key = key
        return LintResult(job.path, diags, parsed=data.get("parsed", False), deps=deps)

    def put(self, job, result) -> None:
        key = getattr(job, "_cache_key", None) or self._key(job)
        if key is None:
            return
        payload = json.dumps(
            {"parsed": result.parsed, "diagnostics": [d.to_json() for d in result.diagnostics],
             "deps": getattr(result, "deps", {}) or {}}
        ).encode()
        try:
            sub = os.path.join(self.dir, key[:2])
            os.makedirs(sub, exist_ok=True)
            _write(os.path.join(sub, key), payload)
        except OSError:
            pass


def _write(path: str, data: bytes) -> None:
    """Atomic: two runs racing on the same entry each write a whole file; the last rename wins."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
