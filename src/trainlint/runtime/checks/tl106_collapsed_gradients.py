"""TL106 collapsed-gradients: the gradient norm collapses to ~0 for many steps while the loss stays high
(the MONAI Dice-smooth report: the loss jumps up, the gradients drop to zero, learning stops)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from trainlint.runtime.checks.base import Check, fmt, median, when
from trainlint.runtime.records import LossRecord, StepRecord


class _State:
    __slots__ = ("ref_norms", "ref_norm", "run", "run_start", "run_loss", "run_min", "found", "found_len",
                 "found_min")

    def __init__(self) -> None:
        self.ref_norms: List[float] = []
        self.ref_norm: Optional[float] = None
        self.run = 0
        self.run_start: Optional[StepRecord] = None
        self.run_loss: Optional[float] = None
        self.run_min = math.inf
        self.found: Optional[StepRecord] = None
        self.found_len = 0
        self.found_min = math.inf


class CollapsedGradients(Check):
    code = "TL106"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.ratio = float(settings["collapse-ratio"])
        self.floor = float(settings["collapse-norm"])
        self.steps = int(settings["collapse-steps"])
        self.loss_fraction = float(settings["collapse-loss-fraction"])
        self.warmup = int(settings["warmup-steps"])
        self.states: Dict[Any, _State] = {}
        self.ref_losses: List[float] = []
        self.ref_loss: Optional[float] = None
        self.last_loss: Optional[float] = None
        self.found_loss: Optional[float] = None

    def on_losses(self, recs: List[LossRecord]) -> None:
        # the reference loss (the median of the first `warmup-steps` finite losses) and the last finite one;
        # a step's own loss is the history's (`History.step_loss`)
        isfinite = math.isfinite
        if self.ref_loss is None:
            for rec in recs:
                if isfinite(rec.value):
                    self.ref_losses.append(rec.value)
                    if len(self.ref_losses) >= self.warmup:
                        self.ref_loss = median(self.ref_losses)
                        break
        for rec in reversed(recs):
            if isfinite(rec.value):
                self.last_loss = rec.value
                break

    def _step_loss(self, rec: StepRecord) -> Optional[float]:
        """The mean loss of the step (the primary optimizer's steps number the losses), else the last one."""
        if rec.opt.primary:
            loss = self.history.step_loss(rec.step)
            if loss is not None:
                return loss
        return self.last_loss

    def on_step(self, rec: StepRecord) -> None:
        s = self.states.get(rec.opt)
        if s is None:
            s = self.states[rec.opt] = _State()
        loss = self._step_loss(rec)
        t = rec.total
        if not math.isfinite(t) or rec.no_grads or (t == 0.0 and (rec.after_backward != "" or not rec.tracked)):
            # no gradient at all, or cleared between backward() and step(): TL108's finding (a norm of exactly
            # 0 at a step whose clearing was not tracked, or not known yet, is most likely that too: not a
            # collapse)
            s.run, s.run_start = 0, None
            return
        if s.ref_norm is None:
            s.ref_norms.append(t)
            if len(s.ref_norms) >= self.warmup:
                s.ref_norm = median(s.ref_norms)
        threshold = self.floor
        if s.ref_norm is not None:
            threshold = max(threshold, self.ratio * s.ref_norm)
        ref_loss = self.ref_loss
        high = (ref_loss is None or ref_loss <= 0 or
                (loss is not None and loss >= self.loss_fraction * ref_loss))
        if t <= threshold and high and (s.ref_norm is not None or t <= self.floor):
            if s.run == 0:
                s.run_start, s.run_loss, s.run_min = rec, loss, t
            # the run's length in steps: the gradients are looked at every `grad-every` steps after
            # the first `warmup-steps`, and a collapse lasts across the steps in between
            s.run = rec.step - s.run_start.step + 1
            s.run_min = min(s.run_min, t)
            if s.run >= self.steps:
                if s.found is None:
                    s.found = s.run_start
                    self.found_loss = s.run_loss
                if s.found is s.run_start:
                    s.found_len = s.run
                    s.found_min = s.run_min
        else:
            s.run, s.run_start = 0, None

    def diagnostics(self):
        out = []
        for opt, s in self.states.items():
            r = s.found
            if r is None:
                continue
            ref = s.ref_norm
            rel = f" ({fmt(r.total / ref)}x its reference {fmt(ref)})" if ref else ""
            loss_txt = ""
            if self.found_loss is not None:
                loss_txt = f" while the loss stays at {fmt(self.found_loss)}"
                if self.ref_loss is not None:
                    loss_txt += f" (reference {fmt(self.ref_loss)})"
            msg = (f"gradient norm collapsed to {fmt(r.total)}{rel} from {when(r.step, r.epoch)} for "
                   f"{s.found_len} consecutive steps{loss_txt}: the model stopped learning (saturated "
                   f"outputs, dead units, or a loss with a flat region such as a Dice loss with the smoothing "
                   f"term in the numerator, see TL002)")
            evidence = {"grad_norm": r.total, "min_grad_norm": s.found_min, "reference_grad_norm": ref,
                        "collapsed_steps": s.found_len, "loss": self.found_loss, "reference_loss": self.ref_loss,
                        "optimizer": opt.label}
            out.append(self.diagnostic(msg, opt.site, r.step, r.epoch, evidence))
        return out
