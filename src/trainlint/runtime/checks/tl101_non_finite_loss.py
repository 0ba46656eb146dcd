"""TL101 non-finite-loss: the first step whose loss is NaN/Inf, the first module whose output was, and
the earlier finding that explains it, if there is one (a divergence reported by TL103/TL105/TL109...)."""

from __future__ import annotations

import math
from typing import List, Optional

from trainlint.codes import CODES
from trainlint.runtime.checks.base import Check, fmt, when
from trainlint.runtime.records import LossRecord

# findings that make a later NaN loss their consequence
_CAUSES = ("TL103", "TL105", "TL107", "TL108", "TL109", "TL102", "TL111")


class NonFiniteLoss(Check):
    code = "TL101"
    reads_findings = True

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.first: Optional[LossRecord] = None  # the first non-finite loss
        self.localised: Optional[LossRecord] = None  # the first one whose step was examined
        self.count = 0
        self.last_finite: Optional[float] = None
        self.total = 0

    def on_losses(self, recs: List[LossRecord]) -> None:
        self.total += len(recs)
        isfinite = math.isfinite
        for rec in recs:
            if isfinite(rec.value):
                if self.first is None:
                    self.last_finite = rec.value
                continue
            self.count += 1
            if self.first is None:
                self.first = rec
                if not rec.scanned:
                    # read on an accelerator, in a block: examine the next non-finite step as it happens
                    self.ctx.arm_localisation()
            if self.localised is None and rec.scanned:
                self.localised = rec

    def _cause(self, step: int):
        """The earliest other finding at or before `step` that explains a diverging run."""
        def kind(d):
            return (d.runtime.get("evidence") or {}).get("kind")

        found = [d for d in self.others if d.code in _CAUSES and (d.runtime or {}).get("step") is not None
                 and d.runtime["step"] <= step
                 and not (d.code == "TL102" and kind(d) == "gradient" and d.runtime["step"] == step)
                 and not (d.code == "TL111" and kind(d) != "non-finite")]
        return min(found, key=lambda d: (d.runtime["step"], d.code)) if found else None

    def diagnostics(self):
        r = self.first
        if r is None:
            return []
        loc = self.localised
        cause = self._cause(r.step)
        evidence = {
            "loss": r.value,
            "last_finite_loss": self.last_finite,
            "non_finite_losses": self.count,
            "losses": self.total,
            "batch": r.batch,
            "batch_size": r.size,
        }
        if loc is not None and loc.module is not None:
            m = loc.module
            evidence.update(module=m["name"], module_type=m["type"], module_inputs_finite=m["inputs_finite"],
                            module_parameters_finite=m["params_finite"])
            if loc is not r:
                evidence["module_seen_at_step"] = loc.step
            if not m["params_finite"]:
                origin = "its parameters are already NaN/Inf (see TL102)"
            elif m["inputs_finite"]:
                origin = "from finite inputs"
            else:
                origin = "its inputs were already NaN/Inf"
            seen = "" if loc is r else f" (examined at step {loc.step}, the next non-finite step)"
            where = f"the first module whose output was NaN/Inf is `{m['name']}` ({m['type']}), {origin}{seen}"
        elif loc is not None:
            evidence["module"] = None
            if cause is not None:
                where = "every module output of that step was finite: the NaN/Inf arose after the model"
            else:
                where = ("every module output of that step was finite: the NaN/Inf arose after the model, "
                         "in the loss computation (log of 0, division by 0, exp overflow?)")
        else:
            where = "the step could not be examined module by module (`--every 1` reads each loss as it happens)"
        msg = f"loss is {fmt(r.value)} at {when(r.step, r.epoch)}"
        if self.last_finite is not None:
            msg += f"; the last finite loss was {fmt(self.last_finite)}"
        if cause is not None:
            info = CODES[cause.code]
            why = ("the input batch already held NaN/Inf" if cause.code == "TL111" else
                   "the run was already diverging")
            msg += (f"; it follows {cause.code} {info.name} at step {cause.runtime['step']}: {why}, fix that "
                    f"first; {where}")
            evidence["explained_by"] = cause.code
            evidence["explained_by_step"] = cause.runtime["step"]
        else:
            msg += f"; {where}"
        if self.count > 1:
            msg += f"; {self.count} of {self.total} losses were non-finite"
        return [self.diagnostic(msg, r.site, r.step, r.epoch, evidence)]
