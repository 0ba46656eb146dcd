"""SARIF 2.1.0, as GitHub code scanning reads it."""

from __future__ import annotations

import json
import os

from trainlint import __version__
from trainlint.codes import CODES, TL000, rule_url

_LEVEL = {"error": "error", "warning": "warning"}


def _uri(filename: str) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(filename))
    except ValueError:
        rel = filename
    if rel.startswith(".."):
        rel = os.path.abspath(filename)
    return rel.replace(os.sep, "/")


def _region(start, end) -> dict:
    return {"startLine": start.row, "startColumn": start.column, "endLine": end.row, "endColumn": end.column}


def _rules():
    from trainlint.rule_pages import page_text

    out = []
    for info in [*CODES.values(), TL000]:
        text = page_text(info.code) if info.code != "TL000" else None
        rule = {
            "id": info.code,
            "name": info.name,
            "shortDescription": {"text": info.summary},
            "fullDescription": {"text": info.summary},
            "helpUri": rule_url(info.code),
            "defaultConfiguration": {"level": _LEVEL.get(info.severity, "error")},
            "properties": {"kind": info.kind, "fix": info.fix or "none"},
        }
        if text:
            rule["help"] = {"text": text, "markdown": text}
        else:
            rule["help"] = {"text": info.summary}
        out.append(rule)
    return out


def document(diagnostics) -> dict:
    rules = _rules()
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for d in diagnostics:
        uri = _uri(d.filename)
        res = {
            "ruleId": d.code,
            "ruleIndex": index.get(d.code, 0),
            "level": _LEVEL.get(d.severity, "error"),
            "message": {"text": d.message},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": _region(d.location, d.end_location),
                }
            }],
        }
        if d.cell is not None:
            res["properties"] = {"cell": d.cell}
        if d.fix is not None:
            res["fixes"] = [{
                "description": {"text": f"{d.fix.message} ({d.fix.applicability.value} fix)"},
                "artifactChanges": [{
                    "artifactLocation": {"uri": uri},
                    "replacements": [
                        {"deletedRegion": _region(e.location, e.end_location),
                         "insertedContent": {"text": e.content}}
                        for e in d.fix.edits
                    ],
                }],
            }]
        results.append(res)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "trainlint",
                "version": __version__,
                "informationUri": "https://github.com/trainlint/trainlint",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }


def render(diagnostics, stream, **_):
    json.dump(document(diagnostics), stream, indent=2, ensure_ascii=False)
    stream.write("\n")
