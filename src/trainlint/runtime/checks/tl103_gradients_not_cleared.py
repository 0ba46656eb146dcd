"""TL103 gradients-not-cleared: an optimizer step ran on gradients not cleared since its previous step.

Tracked on a few sampled parameters per optimizer, from metadata only (no device reads):
after each step, the gradient tensors' identity and version counter are remembered ("stale": they hold
the gradients the step just used). Clearing replaces or modifies them: `zero_grad()` (set to None, or
zeroed in place), `p.grad = None`, `p.grad.zero_()`. When a backward() starts while they are still the
same tensors at the same version, it accumulates onto the previous step's gradients; if nothing clears
them before the next step, that step ran on uncleared gradients. Several backward() calls between
two steps after a clear (gradient accumulation) are fine.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from trainlint.runtime.checks.base import Check, when

_SAMPLE = 4  # parameters watched per optimizer


class _Track:
    __slots__ = ("sample", "snap", "stale", "dirty")

    def __init__(self) -> None:
        self.sample: List[Any] = []
        self.snap: List[Tuple[Any, Any, int]] = []  # (param, grad tensor, grad version)
        self.stale = False  # grads unchanged since the last step
        self.dirty = False  # a backward accumulated onto the last step's gradients

    def take(self) -> None:
        snap = []
        for p in self.sample:
            g = p.grad
            snap.append((p, g, g._version if g is not None else -1))
        # nothing to watch when none of the sampled parameters has a gradient
        self.snap = snap if any(g is not None for _, g, _ in snap) else []

    def changed(self, identity_only: bool = False) -> bool:
        for p, g, v in self.snap:
            cur = p.grad
            if cur is not g:
                return True
            if not identity_only and g is not None and g._version != v:
                return True
        return False


class GradientsNotCleared(Check):
    code = "TL103"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.tracks: Dict[Any, _Track] = {}  # OptState -> track
        self.first: Optional[Tuple[Any, int, Optional[int]]] = None  # (opt, step, epoch)
        self.count: Dict[Any, int] = {}

    def on_post_step(self, opt) -> None:
        t = self.tracks.get(opt)
        if t is None:
            t = self.tracks[opt] = _Track()
        if not t.sample or all(p.grad is None for p in t.sample):
            t.sample = self._sample(opt)
        t.take()
        t.stale = True
        t.dirty = False

    @staticmethod
    def _sample(opt) -> List[Any]:
        o = opt.opt
        if o is None:
            return []
        with_grad = [p for g in o.param_groups for p in g["params"] if p.grad is not None]
        if len(with_grad) <= _SAMPLE:
            return with_grad
        n = len(with_grad)
        return [with_grad[round(i * (n - 1) / (_SAMPLE - 1))] for i in range(_SAMPLE)]

    def on_backward_start(self) -> None:
        for t in self.tracks.values():
            if not t.snap:
                continue
            if t.changed():
                t.stale = False  # cleared (or otherwise rewritten) since we last looked
                t.dirty = False
            elif t.stale:
                t.dirty = True

    def on_backward_end(self) -> None:
        for t in self.tracks.values():
            if t.snap:
                t.take()
                t.stale = False

    def on_pre_step(self, opt) -> None:
        t = self.tracks.get(opt)
        if t is None or not t.dirty:
            return
        if t.changed(identity_only=True):
            return  # set to None / replaced after the backward: this step sees no stale gradients
        self.count[opt] = self.count.get(opt, 0) + 1
        if self.first is None:
            self.first = (opt, opt.steps + 1, self.ctx.epoch())

    def diagnostics(self):
        if self.first is None:
            return []
        opt, step, epoch = self.first
        n = self.count.get(opt, 1)
        names = [self.ctx.param_name(p) for p in self.tracks[opt].sample]
        msg = (f"{opt.label}.step() at {when(step, epoch)} ran on gradients that were not cleared after "
               f"step {step - 1}: backward() added to them (no zero_grad() or `grad = None` between the "
               f"steps), so every update also repeats the previous ones; {n} of {max(opt.steps, step) - 1} "
               f"steps after the first")
        evidence = {"optimizer": opt.label, "steps_not_cleared": n, "optimizer_steps": opt.steps,
                    "parameters_checked": names}
        return [self.diagnostic(msg, opt.site, step, epoch, evidence)]
