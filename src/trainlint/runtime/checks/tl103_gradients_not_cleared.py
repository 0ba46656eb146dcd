"""TL103 gradients-not-cleared: an optimizer step ran on gradients not cleared since its previous step.

Reads the facts `gradtrack.GradTracker` records on each step (metadata only): `accumulated` (a
backward() added onto the gradients the previous step had used) and `after_backward` (were they set to
None or changed in place after that backward?). Gradients set to None after the backward, or zeroed in
place (the flushed norm is exactly 0), are not stale: that step ran on *cleared* gradients, which is
TL108's finding (parameters-not-updated), not this one's. Gradient accumulation (several backward()
calls after a clear, then one step) is fine.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from trainlint.runtime.checks.base import Check, when
from trainlint.runtime.records import StepRecord


class GradientsNotCleared(Check):
    code = "TL103"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.first: Optional[StepRecord] = None
        self.count: Dict[Any, int] = {}
        self.steps: Dict[Any, int] = {}

    def on_step(self, rec: StepRecord) -> None:
        if not rec.tracked:
            return  # looked at for its norms only (a warm-up step, or a step whose loss jumped)
        self.steps[rec.opt] = self.steps.get(rec.opt, 0) + 1
        if not rec.accumulated or rec.after_backward == "replaced":
            return
        if rec.after_backward == "modified" and (rec.no_grads or rec.total == 0.0):
            return  # zeroed in place between backward() and step(): TL108's case
        self.count[rec.opt] = self.count.get(rec.opt, 0) + 1
        if self.first is None:
            self.first = rec

    def diagnostics(self):
        r = self.first
        if r is None:
            return []
        opt = r.opt
        n = self.count.get(opt, 1)
        names = [self.ctx.param_name(p) for p in self.ctx.grads.sample_of(opt)]
        after = self.steps.get(opt, r.step + 1) - 1
        clip = (" (they were changed in place after the backward, by clipping or scaling, but not zeroed)"
                if r.after_backward == "modified" else "")
        msg = (f"{opt.title}.step() at {when(r.step, r.epoch)} ran on gradients that were not cleared after "
               f"step {r.step - 1}: backward() added to them (no zero_grad() or `grad = None` between the "
               f"steps){clip}, so every update also repeats the previous ones; {n} of the {after} "
               f"steps{' looked at' if self.ctx.untracked_between(0, opt.steps - 1) else ''} after the first")
        evidence = {"optimizer": opt.label, "steps_not_cleared": n, "steps_looked_at": self.steps.get(opt),
                    "optimizer_steps": opt.steps,
                    "parameters_checked": names}
        return [self.diagnostic(msg, opt.site, r.step, r.epoch, evidence)]
