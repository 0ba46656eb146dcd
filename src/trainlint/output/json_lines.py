"""One JSON object per line (same keys as `json`)."""

from __future__ import annotations

import json


def render(diagnostics, stream, **_):
    for d in diagnostics:
        stream.write(json.dumps(d.to_json(), ensure_ascii=False) + "\n")
