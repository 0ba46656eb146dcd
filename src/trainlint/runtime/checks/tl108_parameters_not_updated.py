"""TL108 parameters-not-updated: optimizer steps that cannot change the parameters, because none of
them has a gradient, or the gradients were cleared between backward() and step() (`zero_grad()` in the
wrong place). TrainCheck's invariant: a step that leaves every parameter it owns unchanged.

Reads the step facts: `no_grads` (every `.grad` is None), `after_backward` (set to None or changed in
place after the last backward) with the flushed global norm (exactly 0: zeroed). Reported after
`unchanged-steps` such steps in a row, or when every step (at least 2) of an optimizer was one.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from trainlint.runtime.checks.base import Check, when
from trainlint.runtime.records import StepRecord


class _State:
    __slots__ = ("run", "run_start", "found", "found_len", "noop", "steps", "kind", "run_kind")

    def __init__(self) -> None:
        self.run = 0
        self.run_start: Optional[StepRecord] = None
        self.found: Optional[StepRecord] = None
        self.found_len = 0
        self.noop = 0
        self.steps = 0
        self.kind = ""
        self.run_kind = ""


class ParametersNotUpdated(Check):
    code = "TL108"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.needed = int(settings["unchanged-steps"])
        self.states: Dict[Any, _State] = {}

    @staticmethod
    def _kind(rec: StepRecord) -> str:
        if rec.no_grads:
            return "cleared" if rec.after_backward else "none"
        if rec.total == 0.0 and rec.after_backward == "modified":
            return "zeroed"
        return ""

    def on_step(self, rec: StepRecord) -> None:
        if not rec.tracked:
            return  # looked at for its norms only (a warm-up step, or a step whose loss jumped)
        kind = self._kind(rec)
        if not kind and rec.total == 0.0 and rec.after_backward is None:
            # a norm of 0 where the tracker had nothing to compare with yet: zeroed after backward() or not,
            # unknown (counted neither way)
            return
        s = self.states.get(rec.opt)
        if s is None:
            s = self.states[rec.opt] = _State()
        s.steps += 1
        if not kind:
            s.run, s.run_start = 0, None
            return
        s.noop += 1
        if s.run == 0:
            s.run_start = rec
            s.run_kind = kind
        elif kind != "none":
            s.run_kind = kind  # the first step of a run may not tell (nothing watched yet)
        s.run = rec.step - s.run_start.step + 1  # in steps (looked at every `grad-every` steps)
        if s.found is None and s.run >= self.needed:
            s.found = s.run_start
        if s.found is s.run_start:
            s.found_len = s.run
            s.kind = s.run_kind

    def finish(self) -> None:
        for s in self.states.values():
            if s.found is None and s.steps >= 2 and s.noop == s.steps and s.run_start is not None:
                s.found, s.found_len, s.kind = s.run_start, s.run, s.run_kind or "none"

    def diagnostics(self):
        out = []
        for opt, s in self.states.items():
            r = s.found
            if r is None:
                continue
            if s.kind == "none":
                why = ("none of its parameters had a gradient: the loss does not reach them (a detached "
                       "output, `torch.no_grad()`, or an optimizer built on another model's parameters?)")
            elif s.kind == "cleared":
                why = ("the gradients were set to None between backward() and step(): `zero_grad()` is "
                       "called after `loss.backward()` instead of before it")
            else:
                why = ("the gradients were zeroed in place between backward() and step(): "
                       "`zero_grad(set_to_none=False)` is called after `loss.backward()` instead of before it")
            looked = " looked at" if self.ctx.untracked_between(0, opt.steps - 1) else ""
            msg = (f"{opt.title}.step() changed nothing from {when(r.step, r.epoch)} on, for {s.found_len} "
                   f"consecutive steps ({s.noop} of the {s.steps} steps{looked} in all): {why}; the weights never change "
                   f"and the model does not learn")
            evidence = {"optimizer": opt.label, "reason": {"none": "no-gradients", "cleared": "set-to-none-after-backward",
                                                          "zeroed": "zeroed-after-backward"}[s.kind],
                        "consecutive_steps": s.found_len, "steps_without_update": s.noop, "steps_looked_at": s.steps,
                        "optimizer_steps": opt.steps}
            out.append(self.diagnostic(msg, opt.site, r.step, r.epoch, evidence))
        return out
