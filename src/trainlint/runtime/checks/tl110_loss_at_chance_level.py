"""TL110 loss-at-chance-level: a cross-entropy loss over C classes that sits at ln C, the loss of an
uninformed (uniform) prediction, for many steps without improving: the model predicts no better than
guessing (the usual end of a learning rate far too high: the loss explodes, the units die, the output
becomes constant).

Only losses that are the output of `F.cross_entropy`/`F.nll_loss` (`nn.CrossEntropyLoss`, `NLLLoss`)
over class scores are judged (the monitor records C with them). Over the last `chance-steps` losses of
one backward() line: the median within `chance-tolerance` of ln C, and the second half not lower than
the first by more than 5%; and before that stretch the loss had left the chance level (a median of 3
losses below ln C by more than twice the tolerance: the model had learned something; or above twice
both ln C and its starting level: it exploded). A
loss that starts at ln C and only falls slowly (the first hundreds of steps of a large classifier) is
not a stall. The window is judged every 5 losses (three sorts of at most `chance-steps`
numbers), so the check costs about a microsecond per loss.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from trainlint.runtime.checks.base import Check, fmt, median, when
from trainlint.runtime.records import LossRecord

_IMPROVING = 0.95
_STRIDE = 5  # the window is judged every this many losses


class _Series:
    __slots__ = ("recent", "starts", "classes", "chance", "found", "found_median", "run", "best_run", "start", "seen",
                 "departed", "last3", "start_level")

    def __init__(self, size: int) -> None:
        self.recent: Deque[float] = deque(maxlen=size)  # the judged values
        self.starts: Deque[LossRecord] = deque(maxlen=size)  # their records (step, epoch of the window)
        self.classes = 0
        self.chance = 0.0  # ln(classes)
        self.found: Optional[LossRecord] = None
        self.found_median = 0.0
        self.run = 0  # consecutive losses in a stalled stretch (window included)
        self.best_run = 0
        self.start: Optional[LossRecord] = None
        self.seen = 0
        self.departed = False  # the loss has been away from the chance level
        self.last3: Deque[float] = deque(maxlen=3)
        self.start_level: Optional[float] = None  # the lowest of the first 3 losses


class LossAtChanceLevel(Check):
    code = "TL110"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.tol = float(settings["chance-tolerance"])
        self.size = int(settings["chance-steps"])
        self.series: Dict[Any, _Series] = {}

    def on_losses(self, recs: List[LossRecord]) -> None:
        isfinite = math.isfinite
        for rec in recs:
            classes = rec.classes
            if classes is None:
                continue
            value = rec.ce_value if rec.ce_value is not None else rec.value
            if not isfinite(value):
                continue
            s = self.series.get(rec.site)
            if s is None:
                s = self.series[rec.site] = _Series(self.size)
            if s.classes != classes:
                s.recent.clear()
                s.starts.clear()
                s.run = 0
                s.classes = classes
                s.chance = math.log(classes)
                s.departed = False
            s.last3.append(value)
            if not s.departed and len(s.last3) == 3:
                self._depart(s)
            s.recent.append(value)
            s.starts.append(rec)
            s.seen += 1
            if s.departed and len(s.recent) >= self.size and not (s.seen - self.size) % _STRIDE:
                self._judge(s)

    def _depart(self, s: _Series) -> None:
        """Has the loss left the chance level (the median of its last 3 far below it, or far above both
        it and the start)?"""
        chance = s.chance
        if s.start_level is None:
            s.start_level = min(s.last3)
        level = median(s.last3)
        # below chance: the model had learned something; far above both chance and the start: it
        # exploded (an initial loss somewhat above ln C is only the random initialisation)
        if level < (1 - 2 * self.tol) * chance or level > 2 * max(chance, s.start_level):
            s.departed = True

    def _judge(self, s: _Series) -> None:
        """The last `chance-steps` losses: sitting at ln C without improving?"""
        chance = s.chance
        low, high = (1 - self.tol) * chance, (1 + self.tol) * chance
        if max(s.recent) < low or min(s.recent) > high:
            s.run = 0  # (the usual case: every loss of the window is away from chance, and so is the median)
            return
        values = list(s.recent)
        med = median(values)
        half = self.size // 2
        improving = median(values[half:]) < _IMPROVING * median(values[:half])
        if abs(med - chance) <= self.tol * chance and not improving:
            if s.run == 0:
                s.start, s.run = s.starts[0], self.size
            else:
                s.run += _STRIDE
            if s.found is None or s.found is s.start:
                s.found, s.found_median, s.best_run = s.start, med, s.run
        else:
            s.run = 0

    def diagnostics(self):
        out = []
        for site, s in self.series.items():
            r = s.found
            if r is None:
                continue
            chance = math.log(s.classes)
            msg = (f"the cross-entropy loss has sat at chance level from {when(r.step, r.epoch)} for "
                   f"{s.best_run} consecutive losses: median {fmt(s.found_median)}, within "
                   f"{fmt(100 * self.tol)}% of ln {s.classes} = {fmt(chance)}, the loss of a uniform guess "
                   f"over {s.classes} classes, and not improving: the model predicts no better than chance "
                   f"(a learning rate too high that killed the units, see TL109; labels that do not match the "
                   f"inputs; a frozen or detached model?)")
            evidence = {"median_loss": s.found_median, "chance_loss": chance, "classes": s.classes,
                        "consecutive_losses": s.best_run, "tolerance": self.tol}
            out.append(self.diagnostic(msg, site, r.step, r.epoch, evidence))
        return out
