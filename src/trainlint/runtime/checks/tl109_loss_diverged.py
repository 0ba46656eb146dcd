"""TL109 loss-diverged: the loss rose far above its starting level without becoming NaN (a learning rate
far too high: the loss explodes in the first steps, often before any gradient statistic has a history).

Watched from the first loss, one series per backward() line: the starting level is the lowest of its
first 3 losses; the loss has diverged when the median of 3 consecutive losses is `diverge-factor` times
above it. Costs a few comparisons per loss.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from trainlint.runtime.checks.base import Check, fmt, median, when
from trainlint.runtime.records import LossRecord

_START = 3  # losses that set the starting level
_SMOOTH = 3  # losses in the running median


class _Series:
    __slots__ = ("first", "ref", "recent", "found", "found_value", "peak", "peak_rec", "above", "count", "last")

    def __init__(self) -> None:
        self.first: List[float] = []
        self.ref: Optional[float] = None
        self.recent: Deque[float] = deque(maxlen=_SMOOTH)
        self.found: Optional[LossRecord] = None
        self.found_value = 0.0
        self.peak = 0.0
        self.peak_rec: Optional[LossRecord] = None
        self.above = 0
        self.count = 0
        self.last: Optional[float] = None


class LossDiverged(Check):
    code = "TL109"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.factor = float(settings["diverge-factor"])
        self.series: Dict[Any, _Series] = {}

    def on_losses(self, recs: List[LossRecord]) -> None:
        isfinite = math.isfinite
        series = self.series
        factor = self.factor
        for rec in recs:
            v = rec.value
            if not isfinite(v):
                continue  # TL101's
            s = series.get(rec.site)
            if s is None:
                s = series[rec.site] = _Series()
            s.count += 1
            s.last = v
            if s.ref is None:
                s.first.append(v)
                if len(s.first) >= _START:
                    s.ref = min(s.first)
            recent = s.recent
            recent.append(v)
            if s.ref is None and len(s.first) < 2:
                continue
            ref = s.ref if s.ref is not None else min(s.first)
            if ref <= 0 or len(recent) < min(_SMOOTH, len(s.first) if s.ref is None else _SMOOTH):
                continue
            if max(recent) <= factor * ref:
                continue  # (the usual case: the median cannot be above)
            level = median(recent)
            if level > factor * ref:
                s.above += 1
                if s.found is None:
                    s.found, s.found_value = rec, level
                if level > s.peak:
                    s.peak, s.peak_rec = level, rec

    def diagnostics(self):
        out = []
        for site, s in self.series.items():
            r = s.found
            if r is None or s.ref is None:
                continue
            peak_step = s.peak_rec.step if s.peak_rec is not None else r.step
            msg = (f"the loss rose to {fmt(s.found_value)} at {when(r.step, r.epoch)}, {fmt(s.found_value / s.ref)}x "
                   f"its starting level {fmt(s.ref)} (median of 3 consecutive losses; threshold "
                   f"{fmt(self.factor)}x), without NaN; it peaked at {fmt(s.peak)} (step {peak_step}) and "
                   f"ended at {fmt(s.last)}: the training diverged (learning rate far too high, no warmup?)")
            evidence = {"loss": s.found_value, "starting_loss": s.ref, "factor": s.found_value / s.ref,
                        "threshold": self.factor, "peak_loss": s.peak, "peak_step": peak_step,
                        "last_loss": s.last, "losses_above": s.above, "losses": s.count}
            out.append(self.diagnostic(msg, site, r.step, r.epoch, evidence))
        return out
