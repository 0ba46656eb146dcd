"""TL105 exploding-gradients: the global gradient norm far above its running median."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from trainlint.runtime.checks.base import Check, fmt, when
from trainlint.runtime.records import StepRecord


_FLOOR = 0.01


def _median_sorted(s: List[float]) -> float:
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


class _State:
    __slots__ = ("hist", "sorted", "seen", "first", "first_med", "spikes", "max_factor", "ref")

    def __init__(self, window: int):
        self.hist: Deque[float] = deque(maxlen=window)  # in step order
        self.sorted: List[float] = []  # the same values, sorted (for the running median)
        self.ref: Optional[float] = None  # median of the first warmup steps
        self.seen = 0
        self.first: Optional[StepRecord] = None
        self.first_med = 0.0
        self.spikes = 0
        self.max_factor = 0.0


class ExplodingGradients(Check):
    code = "TL105"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.factor = float(settings["explode-factor"])
        self.window = int(settings["explode-window"])
        self.warmup = int(settings["warmup-steps"])
        self.states: Dict[Any, _State] = {}

    def on_step(self, rec: StepRecord) -> None:
        s = self.states.get(rec.opt)
        if s is None:
            s = self.states[rec.opt] = _State(self.window)
        t = rec.total
        if not math.isfinite(t) or rec.short:
            return  # non-finite: TL102's business; a short last batch: TL104's
        if s.seen >= self.warmup and len(s.hist) >= 2:
            if s.ref is None:
                s.ref = _median_sorted(s.sorted)
            # the running level, but never below 1% of the early level: once the gradients have
            # collapsed (TL106) or shrunk a hundredfold, noise is not an explosion
            med = max(_median_sorted(s.sorted), _FLOOR * s.ref)
            if med > 0 and t > self.factor * med:
                s.spikes += 1
                s.max_factor = max(s.max_factor, t / med)
                if s.first is None:
                    s.first, s.first_med = rec, med
        if len(s.hist) == s.hist.maxlen:
            del s.sorted[bisect_left(s.sorted, s.hist[0])]
        s.hist.append(t)
        insort(s.sorted, t)
        s.seen += 1

    def diagnostics(self):
        out = []
        for opt, s in self.states.items():
            r = s.first
            if r is None:
                continue
            factor = r.total / s.first_med
            msg = (f"global gradient norm {fmt(r.total)} at {when(r.step, r.epoch)} is {fmt(factor)}x its "
                   f"running median {fmt(s.first_med)} (last {self.window} steps); {s.spikes} step"
                   f"{'s' if s.spikes != 1 else ''} above {fmt(self.factor)}x, up to {fmt(s.max_factor)}x: "
                   f"the updates are exploding (learning rate too high, no warmup, no clipping?)")
            evidence = {"grad_norm": r.total, "running_median": s.first_med, "factor": factor,
                        "spiking_steps": s.spikes, "max_factor": s.max_factor, "optimizer": opt.label}
            out.append(self.diagnostic(msg, opt.site, r.step, r.epoch, evidence))
        return out
