"""TL105 exploding-gradients: the global gradient norm (before clipping, where `clip_grad_norm_` was
called) far above its running median, *and* either large in absolute terms or followed by a loss that
gets worse. A norm that rises tenfold from a tiny level while the loss keeps falling (learning starting,
Adam near convergence) is not an explosion.

The loss test: over the step and the two after it (only the two after it, for a step looked at because
its loss jumped: that loss is why it was chosen), the worst loss must be at least
`explode-loss-factor` times the median loss of the window before it, and undo at least a quarter of
the progress made since the start (median of the first `warmup-steps` losses); a NaN/Inf loss counts.
Spikes wait for the losses of the next two steps (at the next flush, or the end of the run).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from trainlint.runtime.checks.base import Check, fmt, median, when
from trainlint.runtime.records import StepRecord

_FLOOR = 0.01
_AFTER = 2  # steps after a spike whose losses are looked at
_PROGRESS = 0.25  # fraction of the progress since the start that the loss must lose


def _median_sorted(s: List[float]) -> float:
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


class _State:
    __slots__ = ("hist", "sorted", "seen", "first", "first_med", "first_why", "spikes", "max_factor", "ref",
                 "pending")

    def __init__(self, window: int):
        self.hist: Deque[Tuple[int, float]] = deque()  # (step, norm) of the last `window` steps, in order
        self.sorted: List[float] = []  # the same values, sorted (for the running median)
        self.ref: Optional[float] = None  # median of the first warmup steps
        self.seen = 0
        self.first: Optional[StepRecord] = None
        self.first_med = 0.0
        self.first_why: Dict[str, Any] = {}
        self.spikes = 0
        self.max_factor = 0.0
        self.pending: List[Tuple[StepRecord, float]] = []  # spikes waiting for the losses after them


class ExplodingGradients(Check):
    code = "TL105"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.factor = float(settings["explode-factor"])
        # the running median's window in steps, wide enough for three scheduled looks (a window of 50 steps
        # with looks every 32 would hold one look and judge nothing)
        self.window = max(int(settings["explode-window"]), 3 * int(settings["grad-every"]) + 1)
        self.warmup = int(settings["warmup-steps"])
        self.abs_norm = float(settings["explode-norm"])
        self.loss_factor = float(settings["explode-loss-factor"])
        self.states: Dict[Any, _State] = {}
        self._loss_ref: Optional[float] = None

    def on_step(self, rec: StepRecord) -> None:
        s = self.states.get(rec.opt)
        if s is None:
            s = self.states[rec.opt] = _State(self.window)
        t = rec.raw
        if not math.isfinite(t) or rec.short or rec.no_grads:
            return  # non-finite: TL102's business; a short last batch: TL104's
        # the steps looked at within the last `explode-window` steps (every step during the first
        # `warmup-steps`, then every `grad-every`)
        while s.hist and s.hist[0][0] <= rec.step - self.window:
            del s.sorted[bisect_left(s.sorted, s.hist.popleft()[1])]
        if rec.step >= self.warmup and len(s.hist) >= 2:
            if s.ref is None:
                s.ref = _median_sorted(s.sorted)
            # the running level, but never below 1% of the early level: once the gradients have
            # collapsed (TL106) or shrunk a hundredfold, noise is not an explosion
            med = max(_median_sorted(s.sorted), _FLOOR * s.ref)
            if med > 0 and t > self.factor * med:
                s.pending.append((rec, med))
        s.hist.append((rec.step, t))
        insort(s.sorted, t)
        s.seen += 1

    def on_flush(self) -> None:
        self._judge(final=False)

    def finish(self) -> None:
        self._judge(final=True)

    def _reference_loss(self) -> Optional[float]:
        if self._loss_ref is None:
            h = self.history
            first = [v for v in (h.step_loss(i) for i in range(min(self.warmup, h.loss_steps))) if v is not None]
            if len(first) >= min(self.warmup, 3) and h.loss_steps >= self.warmup:
                self._loss_ref = median(first)
        return self._loss_ref

    def _why(self, rec: StepRecord, med: float) -> Optional[Dict[str, Any]]:
        """Why this spike is an explosion (absolute size, or the loss got worse), or None."""
        t = rec.raw
        if t >= self.abs_norm:
            return {"reason": "norm", "threshold": self.abs_norm}
        h = self.history
        k = rec.step
        before = [v for v in (h.step_loss(i) for i in range(max(0, k - self.window), k)) if v is not None]
        if not before:
            return None
        loss_med = median(before)
        # a step looked at because its loss jumped was chosen for that loss: then only the steps after it
        # can say that the loss got worse
        first = k + 1 if rec.forced else k
        after = [h.step_loss(i) for i in range(first, k + _AFTER + 1)]
        if any(h.step_nonfinite(i) for i in range(first, k + _AFTER + 1)):
            worst = math.inf
        else:
            vals = [v for v in after if v is not None]
            if not vals:
                return None
            worst = max(vals)
        ref = self._reference_loss()
        progress = max(0.0, (ref - loss_med)) if ref is not None else 0.0
        if worst >= self.loss_factor * loss_med and worst - loss_med >= _PROGRESS * progress and worst > loss_med:
            return {"reason": "loss", "loss_before": loss_med, "loss_after": worst}
        return None

    def _judge(self, final: bool) -> None:
        last = self.history.loss_steps
        for s in self.states.values():
            keep = []
            for rec, med in s.pending:
                if not final and rec.step + _AFTER >= last:
                    keep.append((rec, med))  # the losses after it are not flushed yet
                    continue
                why = self._why(rec, med)
                if why is None:
                    continue
                s.spikes += 1
                s.max_factor = max(s.max_factor, rec.raw / med)
                if s.first is None:
                    s.first, s.first_med, s.first_why = rec, med, why
            s.pending = keep

    def diagnostics(self):
        if any(s.pending for s in self.states.values()):
            self._judge(final=self.ctx.closed)
        out = []
        for opt, s in self.states.items():
            r = s.first
            if r is None:
                continue
            t = r.raw
            factor = t / s.first_med
            clipped = isinstance(r.clip, float)
            what = "gradient norm before clipping" if clipped else "global gradient norm"
            why = s.first_why
            if why["reason"] == "norm":
                because = f"a norm that large (>= {fmt(why['threshold'])}) is an explosion whatever the loss does"
            elif math.isinf(why["loss_after"]):
                because = f"and the loss went from {fmt(why['loss_before'])} to NaN/Inf right after"
            else:
                because = (f"and the loss got worse with it: {fmt(why['loss_before'])} (median before) to "
                           f"{fmt(why['loss_after'])}")
            msg = (f"{what} {fmt(t)} at {when(r.step, r.epoch)} is {fmt(factor)}x its running median "
                   f"{fmt(s.first_med)} (last {self.window} steps), {because}; {s.spikes} such step"
                   f"{'s' if s.spikes != 1 else ''}, up to {fmt(s.max_factor)}x: the updates are exploding "
                   f"(learning rate too high, no warmup, no clipping?)")
            if clipped:
                msg += f"; clip_grad_norm_ scaled it down to at most {fmt(r.total)}, which hid it"
            evidence = {"grad_norm": t, "running_median": s.first_med, "factor": factor,
                        "spiking_steps": s.spikes, "max_factor": s.max_factor, "optimizer": opt.label,
                        "reason": why["reason"], "loss_before": why.get("loss_before"),
                        "loss_after": why.get("loss_after"), "clipped_norm": r.total if clipped else None}
            out.append(self.diagnostic(msg, opt.site, r.step, r.epoch, evidence))
        return out
