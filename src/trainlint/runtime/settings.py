"""Runtime check thresholds: defaults and the `[tool.trainlint.runtime]` keys (no torch import here).

`trainlint.config` validates the table against `DEFAULTS` (unknown key, non-number value: exit 2);
`resolve()` does the rest (ranges, integers) and merges the command line's `--every`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

DEFAULTS: Dict[str, Any] = {
    # how often (in optimizer steps) device-side scalars are copied to the host and checked. Findings are
    # reported at the end of the run (or when `diagnostics()` asks), so this sets only how many values wait
    # on the device (one synchronisation per flush on an accelerator) and how often the flush's fixed cost
    # is paid (~0.3 ms on the CPU whatever the number of steps in the block, and ~0.15 ms more in the
    # step after it, whose caches it emptied)
    "every": 200,
    # the gradients are looked at (norms: TL102/TL105/TL106; clearing: TL103/TL108) in the steps of each
    # optimizer numbered a multiple of this (norms: also every step of the first `warmup-steps`;
    # clearing: also steps 0-3, `Monitor.tracks`): reading every gradient is
    # the largest cost per step (a look costs ~3x a plain step's bookkeeping: the norms of every
    # gradient and the clearing tracker around it; ~100 us on the CPU). What the schedule finds lasts
    # (uncleared or cleared gradients, collapsed norms), and where losses are read as they come (the CPU)
    # a step whose loss jumps to 3x its recent level is looked at as well: an explosion shows at the step
    # it happens
    "grad-every": 32,
    # steps of history before TL105/TL106 judge anything (TL106: the reference level is the median
    # of the first `warmup-steps` gradient norms and losses)
    "warmup-steps": 20,
    # TL104: a short final batch whose loss is at least this factor above the median of the full
    # batches before it (and above all of them) ...
    "spike-factor": 2.0,
    # ... in at least this fraction of the epochs that end with a short batch ...
    "spike-epoch-fraction": 0.5,
    # ... and in at least this many epochs
    "spike-min-epochs": 2,
    # TL105: a gradient norm this many times above its running median ...
    "explode-factor": 10.0,
    # ... taken over the norms looked at in the last this many steps (widened to hold three scheduled
    # looks, 3 x grad-every + 1 steps) ...
    "explode-window": 100,
    # ... counts when the norm is at least this large in absolute terms ...
    "explode-norm": 100.0,
    # ... or when the loss gets worse by this factor over its running median right after it
    "explode-loss-factor": 1.5,
    # TL106: a gradient norm below `collapse-ratio` x the reference norm (or below `collapse-norm`) ...
    "collapse-ratio": 1e-3,
    "collapse-norm": 1e-12,
    # ... for at least this many consecutive steps ...
    "collapse-steps": 20,
    # ... while the loss stays above this fraction of the reference loss
    "collapse-loss-fraction": 0.1,
    # TL108: this many consecutive optimizer steps without any gradient, or on gradients cleared
    # between backward() and step() (or every step of a shorter run)
    "unchanged-steps": 5,
    # TL109: the loss (median of 3 consecutive losses of one backward() line) this many times above
    # its starting level (the lowest of its first 3 losses)
    "diverge-factor": 10.0,
    # TL110: a cross-entropy loss within this relative distance of ln(classes) ...
    "chance-tolerance": 0.1,
    # ... over this many consecutive losses, without improving
    "chance-steps": 50,
    # TL111: a feature whose RMS over the first `input-scale-batches` batches of a DataLoader is this
    # many times above or below the median feature's
    "input-scale-ratio": 100.0,
    "input-scale-batches": 10,
    # TL112: BatchNorm in training mode on batches of fewer samples than this, in half of its calls
    "bn-min-batch": 4,
    # TL113: every `dead-every` steps, the fraction of a ReLU layer's units that output 0 for the whole
    # batch; reported when at least `dead-fraction` in `dead-checks` checks in a row
    "dead-every": 20,
    "dead-fraction": 0.5,
    "dead-checks": 5,
    # TL114 (torchrun): every `replica-every` steps each rank publishes checksums of its parameters;
    # a parameter that matched on every rank and later differs by more than `replica-tolerance`
    # (relative) is reported
    "replica-every": 50,
    "replica-tolerance": 1e-6,
    # at the end, rank 0 waits this many seconds at most for the other ranks' findings
    "rank-wait": 30.0,
    # TL115: every `saturation-every` steps, the fraction of softmax rows / sigmoid outputs saturated to
    # exactly 0 and 1; reported when at least `saturation-fraction` in `saturation-checks` looks in a row
    "saturation-every": 10,
    "saturation-fraction": 0.5,
    "saturation-checks": 5,
}

# runtime checks that run only when a selector names them exactly (`--select TL1,TL115`) or `ALL`:
# TL115 wraps torch.softmax/torch.sigmoid and the Tensor methods, which costs every call a Python
# wrapper (attention layers call softmax many times per step) and keeps `torch.jit.script` from
# compiling code that calls them while the run is watched
OFF_BY_DEFAULT: Tuple[str, ...] = ("TL115",)

# key -> (type, minimum, maximum or None, one-line description for the rule pages)
SPEC: Dict[str, Tuple[type, float, Optional[float], str]] = {
    "every": (int, 1, None, "optimizer steps between two reads of the device-side values"),
    "grad-every": (int, 1, None, "optimizer steps between two looks at the gradients (norms, clearing)"),
    "warmup-steps": (int, 1, None, "steps before TL105/TL106 judge; TL106's reference level is "
                                   "the median over these first steps"),
    "spike-factor": (float, 1.0, None, "short-batch loss / median loss of the full batches before it "
                                       "that counts as a spike (dips never count)"),
    "spike-epoch-fraction": (float, 0.0, 1.0, "fraction of the epochs with a short batch that must spike"),
    "spike-min-epochs": (int, 1, None, "epochs that must spike before TL104 reports"),
    "explode-factor": (float, 1.0, None, "gradient norm / running median that counts as exploding"),
    "explode-window": (int, 2, None, "steps in the running median of TL105 (at least 3 x grad-every + 1)"),
    "explode-norm": (float, 0.0, None, "gradient norm that counts as exploding whatever the loss does"),
    "explode-loss-factor": (float, 1.0, None, "worst loss of the spike's step and the two after it / "
                                              "median loss before it that confirms an explosion"),
    "collapse-ratio": (float, 0.0, 1.0, "gradient norm / reference norm below which a step counts as collapsed"),
    "collapse-norm": (float, 0.0, None, "absolute gradient norm below which a step counts as collapsed"),
    "collapse-steps": (int, 1, None, "consecutive collapsed steps before TL106 reports"),
    "collapse-loss-fraction": (float, 0.0, None, "the loss must stay above this fraction of its "
                                                 "reference level for TL106"),
    "unchanged-steps": (int, 1, None, "consecutive steps without gradients (or on cleared ones) before "
                                      "TL108 reports"),
    "diverge-factor": (float, 1.0, None, "loss / its starting level that counts as diverged"),
    "chance-tolerance": (float, 0.0, 1.0, "relative distance to ln(classes) that counts as chance level"),
    "chance-steps": (int, 2, None, "consecutive losses at chance level before TL110 reports"),
    "input-scale-ratio": (float, 1.0, None, "feature RMS / median feature RMS (or its inverse) that counts "
                                            "as badly scaled"),
    "input-scale-batches": (int, 1, None, "batches per DataLoader whose feature scales TL111 measures"),
    "bn-min-batch": (int, 2, None, "batch size below which BatchNorm statistics count as too noisy"),
    "dead-every": (int, 1, None, "optimizer steps between two looks at the ReLU layers' units"),
    "dead-fraction": (float, 0.0, 1.0, "fraction of a layer's units dead for the whole batch that counts"),
    "dead-checks": (int, 1, None, "consecutive looks above dead-fraction before TL113 reports"),
    "replica-every": (int, 1, None, "optimizer steps between two comparisons of the ranks' parameters"),
    "replica-tolerance": (float, 0.0, None, "relative difference of a parameter's checksums between two "
                                            "ranks that counts as diverged"),
    "rank-wait": (float, 0.0, None, "seconds rank 0 waits at the end for the other ranks' findings"),
    "saturation-every": (int, 1, None, "optimizer steps between two looks at the softmax/sigmoid outputs"),
    "saturation-fraction": (float, 0.0, 1.0, "fraction of saturated softmax rows or sigmoid outputs that counts"),
    "saturation-checks": (int, 1, None, "consecutive looks above saturation-fraction before TL115 reports"),
}

# which keys each runtime check reads (for the rule pages and `trainlint rule`)
KEYS_BY_CODE: Dict[str, Tuple[str, ...]] = {
    "TL101": ("every",),
    "TL102": ("every",),
    "TL103": (),
    "TL104": ("spike-factor", "spike-epoch-fraction", "spike-min-epochs"),
    "TL105": ("explode-factor", "explode-window", "explode-norm", "explode-loss-factor", "warmup-steps"),
    "TL106": ("collapse-ratio", "collapse-norm", "collapse-steps", "collapse-loss-fraction", "warmup-steps"),
    "TL107": (),
    "TL108": ("unchanged-steps",),
    "TL109": ("diverge-factor",),
    "TL110": ("chance-tolerance", "chance-steps"),
    "TL111": ("input-scale-ratio", "input-scale-batches"),
    "TL112": ("bn-min-batch",),
    "TL113": ("dead-every", "dead-fraction", "dead-checks"),
    "TL114": ("replica-every", "replica-tolerance", "rank-wait"),
    "TL115": ("saturation-every", "saturation-fraction", "saturation-checks"),
}


class SettingsError(ValueError):
    """A threshold out of range (reported as a configuration error, exit 2)."""


def resolve(table: Optional[Mapping[str, Any]] = None, every: Optional[int] = None,
            where: str = "[tool.trainlint.runtime]") -> Dict[str, Any]:
    """DEFAULTS, updated by a `[tool.trainlint.runtime]` table and then by `--every`; validated."""
    out = dict(DEFAULTS)
    for key, value in dict(table or {}).items():
        norm = key.replace("_", "-")
        if norm not in DEFAULTS:
            raise SettingsError(f"{where}: unknown key `{key}` (known: {', '.join(DEFAULTS)})")
        out[norm] = value
    if every is not None:
        out["every"] = every
    for key, value in out.items():
        tp, lo, hi, _ = SPEC[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: `{key}` must be a number")
        if tp is int:
            if float(value) != int(value):
                raise SettingsError(f"{where}: `{key}` must be an integer")
            value = int(value)
        else:
            value = float(value)
        if value < lo or (hi is not None and value > hi):
            rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise SettingsError(f"{where}: `{key}` must be {rng} (got {value})")
        out[key] = value
    return out
