"""Output formats. Each module has `render(diagnostics, stream, **kw)`; only the chosen one is imported."""

from __future__ import annotations

import importlib

FORMATS = ("full", "concise", "json", "json-lines", "github", "sarif")


def renderer(name: str):
    return importlib.import_module(f"trainlint.output.{name.replace('-', '_')}")
