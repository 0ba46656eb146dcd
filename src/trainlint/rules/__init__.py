"""The static rules. Each module defines CODE, PREFILTER and `check(ctx)`.

A rule reads facts from `ctx.index` (and the analyses in `trainlint.analysis`) and calls
`ctx.report(...)`. PREFILTER is a tuple of groups (a tuple of substrings, any of which must occur, or a
compiled regular expression that must match): the rule can only fire on a file matching every group.
A rule whose words depend on its options also defines `prefilter(text, options) -> bool`. A file that no selected rule can match is not even parsed.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

RULE_MODULES: Dict[str, str] = {
    "TL001": "trainlint.rules.tl001_missing_zero_grad",
    "TL002": "trainlint.rules.tl002_dice_smooth_numerator",
    "TL003": "trainlint.rules.tl003_double_loss_reduction",
    "TL004": "trainlint.rules.tl004_train_loader_drop_last",
    "TL005": "trainlint.rules.tl005_optimizer_eps_underflow",
}


def load(codes: List[str]):
    return [importlib.import_module(RULE_MODULES[c]) for c in codes if c in RULE_MODULES]
