"""TL102 non-finite-gradient: a gradient (at an optimizer step) or a parameter became NaN/Inf."""

from __future__ import annotations

import math
from typing import List, Optional

from trainlint.runtime.checks.base import Check, names_text, when
from trainlint.runtime.records import LossRecord, ParamCheck, StepRecord


class NonFiniteGradient(Check):
    code = "TL102"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.grad: Optional[StepRecord] = None
        self.grad_names: list = []
        self.grad_steps = 0
        self.param: Optional[ParamCheck] = None
        self.param_names: list = []
        self.first_bad_loss_step: Optional[int] = None

    def on_losses(self, recs: List[LossRecord]) -> None:
        if self.first_bad_loss_step is not None:
            return
        isfinite = math.isfinite
        for rec in recs:
            if not isfinite(rec.value):
                self.first_bad_loss_step = rec.step
                return

    def on_step(self, rec: StepRecord) -> None:
        if not rec.bad:
            return
        self.grad_steps += 1
        if self.grad is None:
            self.grad = rec
            self.grad_names = [self.ctx.param_name(p) for p in rec.bad]
            rec.bad = []

    def on_params(self, rec: ParamCheck) -> None:
        if self.param is None:
            self.param = rec
            self.param_names = [self.ctx.param_name(p) for p in rec.bad]
            rec.bad = []

    def diagnostics(self):
        g, p = self.grad, self.param
        if g is None and p is None:
            return []
        if g is not None and (p is None or g.step <= p.step):
            if self.first_bad_loss_step is not None and self.first_bad_loss_step <= g.step:
                loss_note = f"; the loss was already non-finite at step {self.first_bad_loss_step} (TL101)"
            else:
                loss_note = "; the loss itself was finite: the backward pass overflowed"
            msg = (f"gradient of {names_text(self.grad_names)} is NaN/Inf at {when(g.step, g.epoch)}, and "
                   f"{g.opt.title}.step() ran on it{loss_note}")
            if self.grad_steps > 1:
                looked = " looked at" if self.ctx.unlooked_between(0, g.opt.steps - 1) else ""
                msg += f"; {self.grad_steps} steps{looked} had non-finite gradients"
            evidence = {"kind": "gradient", "parameters": self.grad_names[:10],
                        "non_finite_parameters": len(self.grad_names), "grad_norm": g.total,
                        "steps_with_non_finite_gradients": self.grad_steps, "optimizer": g.opt.label,
                        "first_non_finite_loss_step": self.first_bad_loss_step}
            site = g.site if g.site.filename != "<unknown>" else g.opt.site
            return [self.diagnostic(msg, site, g.step, g.epoch, evidence)]
        assert p is not None
        if p.step - p.last_ok_step == 1 and p.step > 0:
            span = f"in the update of step {p.step}"
        elif p.last_ok_step < 0:
            span = f"by the end of step {p.step}"
        else:
            span = f"after step {p.last_ok_step} and by the end of step {p.step}"
        if self.ctx.unlooked_between(p.last_ok_step + 1, p.step):
            # the gradients of some of those steps were not looked at: either may have done it
            which = (", whose gradients were" if p.step - p.last_ok_step == 1
                     else "; the gradients of some of those steps were")
            cause = (f"{which} not looked at (every {self.ctx.grad_every} steps, `grad-every`): a NaN/Inf "
                     f"gradient (a backward pass that overflowed?) or the {p.opt.title} update itself "
                     f"overflowed (learning rate, eps, or fp16 state?); `grad-every = 1` tells which")
        else:
            cause = (f"while the gradients were finite: the {p.opt.title} update itself overflowed (learning "
                     f"rate, eps, or fp16 state?)")
        msg = f"parameter {names_text(self.param_names)} became NaN/Inf {span}{'' if cause[0] in ',;' else ' '}{cause}"
        evidence = {"kind": "parameter", "parameters": self.param_names[:10],
                    "non_finite_parameters": len(self.param_names), "last_finite_check_step": p.last_ok_step,
                    "optimizer": p.opt.label, "first_non_finite_loss_step": self.first_bad_loss_step,
                    "gradients_looked_at_every_step": not self.ctx.unlooked_between(p.last_ok_step + 1, p.step)}
        return [self.diagnostic(msg, p.opt.site, p.step, p.epoch, evidence)]
