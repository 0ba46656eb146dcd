"""The static rules. Each module `tlNNN_<name>.py` defines CODE, PREFILTER, `gate(facts, options)` and
`check(ctx)`.

A rule reads facts from `ctx.index` (and the analyses in `trainlint.analysis`) and calls
`ctx.report(...)`. PREFILTER is a tuple of groups (a tuple of substrings, any of which must occur, or a
compiled regular expression that must match): the rule can only fire on a file matching every group.
Groups are tried in order: cheap words first, then a regular expression only on the files that have them.
A rule whose words depend on its options also defines `prefilter(text, options) -> bool`. A file that no
selected rule can match is not even parsed.

`gate(facts, options) -> bool` is the rule's structural precondition, read from CPython's `ast`
(`trainlint.analysis.gate.ModuleFacts`): what the check must find before it can report (a DataLoader
call, a loop that runs backward()...). LibCST parses a file only for the rules whose gate holds. A gate
must never be stricter than its check (see `analysis/gate.py`); a rule without one always passes.

Rule modules are found by their file name (`tl006_amp_clip_before_unscale.py` is TL006), so adding a
rule is adding its module, its `Code` in `trainlint.codes` and its page in `rules/`.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Dict, List

_MODULE_FILE = re.compile(r"^tl(\d{3})_\w+\.py$")


def _discover() -> Dict[str, str]:
    here = os.path.dirname(os.path.abspath(__file__))
    found: Dict[str, str] = {}
    for name in sorted(os.listdir(here)):
        m = _MODULE_FILE.match(name)
        if m:
            found[f"TL{m.group(1)}"] = f"{__name__}.{name[:-3]}"
    return found


RULE_MODULES: Dict[str, str] = _discover()


def starts_a_word(pattern: "re.Pattern[str]", text: str) -> bool:
    """Does `pattern` match somewhere a word starts? Faster than a pattern that begins with `\\b`, which
    keeps the regular-expression engine from scanning for the words' first letters."""
    for m in pattern.finditer(text):
        s = m.start()
        if s == 0 or not (text[s - 1].isalnum() or text[s - 1] == "_"):
            return True
    return False


def load(codes: List[str]):
    return [importlib.import_module(RULE_MODULES[c]) for c in codes if c in RULE_MODULES]
