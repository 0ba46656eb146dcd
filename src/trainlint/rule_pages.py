"""`trainlint rule`: the rule pages of `rules/`, shipped inside the package."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import click

from trainlint.codes import CODES


def pages_dir() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "_rule_pages"),  # installed wheel
        os.path.join(os.path.dirname(os.path.dirname(here)), "rules"),  # source checkout / editable
    ):
        if os.path.isdir(candidate):
            return candidate
    return None


def page_text(code: str) -> Optional[str]:
    info = CODES.get(code)
    d = pages_dir()
    if info is None or d is None:
        return None
    try:
        with open(os.path.join(d, info.page), encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def print_rule(code: str, fmt: str) -> int:
    code = code.upper()
    info = CODES.get(code)
    if info is None:
        # accept the rule's name too: `trainlint rule missing-zero-grad`
        info = next((c for c in CODES.values() if c.name == code.lower()), None)
    if info is None:
        from trainlint.codes import did_you_mean

        close = did_you_mean(code, [*CODES, *(c.name for c in CODES.values())])
        hint = f"did you mean `{close}`? " if close else ""
        click.echo(f"trainlint: error: unknown rule {code!r} ({hint}see `trainlint rule --all`)", err=True)
        return 2
    text = page_text(info.code)
    if fmt == "json":
        json.dump(
            {"code": info.code, "name": info.name, "summary": info.summary, "kind": info.kind,
             "fix": info.fix, "confirms": info.confirms, "explanation": text},
            sys.stdout, indent=2,
        )
        sys.stdout.write("\n")
        return 0
    click.echo(text if text is not None else f"# {info.code} {info.name}\n\n{info.summary}\n")
    return 0


def print_rules(fmt: str) -> int:
    if fmt == "json":
        json.dump(
            [{"code": c.code, "name": c.name, "summary": c.summary, "kind": c.kind, "fix": c.fix}
             for c in CODES.values()],
            sys.stdout, indent=2,
        )
        sys.stdout.write("\n")
        return 0
    width = max(len(c.name) for c in CODES.values())
    for c in CODES.values():
        fix = {"safe": "fix", "unsafe": "fix (unsafe)"}.get(c.fix or "", "-")
        click.echo(f"{c.code}  {c.name:<{width}}  {c.kind:<8} {fix:<13} {c.summary}")
    return 0
