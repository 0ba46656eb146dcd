"""A JSON array of findings, keys as in Ruff's JSON output (see DESIGN.md)."""

from __future__ import annotations

import json


def render(diagnostics, stream, **_):
    json.dump([d.to_json() for d in diagnostics], stream, indent=2, ensure_ascii=False)
    stream.write("\n")
