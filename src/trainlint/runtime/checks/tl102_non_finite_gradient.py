"""TL102 non-finite-gradient: a gradient (at an optimizer step) or a parameter became NaN/Inf."""

from __future__ import annotations

import math
from typing import Optional

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

    def on_loss(self, rec: LossRecord) -> None:
        if self.first_bad_loss_step is None and not math.isfinite(rec.value):
            self.first_bad_loss_step = rec.step

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
                msg += f"; {self.grad_steps} steps had non-finite gradients"
            evidence = {"kind": "gradient", "parameters": self.grad_names[:10],
                        "non_finite_parameters": len(self.grad_names), "grad_norm": g.total,
                        "steps_with_non_finite_gradients": self.grad_steps, "optimizer": g.opt.label,
                        "first_non_finite_loss_step": self.first_bad_loss_step}
            site = g.site if g.site.filename != "<unknown>" else g.opt.site
            return [self.diagnostic(msg, site, g.step, g.epoch, evidence)]
        assert p is not None
        span = (f"by the end of step {p.step}" if p.last_ok_step < 0
                else f"after step {p.last_ok_step} and by the end of step {p.step}")
        msg = (f"parameter {names_text(self.param_names)} became NaN/Inf {span} while the gradients were "
               f"finite: the {p.opt.title} update itself overflowed (learning rate, eps, or fp16 state?)")
        evidence = {"kind": "parameter", "parameters": self.param_names[:10],
                    "non_finite_parameters": len(self.param_names), "last_finite_check_step": p.last_ok_step,
                    "optimizer": p.opt.label, "first_non_finite_loss_step": self.first_bad_loss_step}
        return [self.diagnostic(msg, p.opt.site, p.step, p.epoch, evidence)]
