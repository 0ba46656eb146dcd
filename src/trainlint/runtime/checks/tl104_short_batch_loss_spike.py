"""TL104 short-batch-loss-spike: the loss of the short last batch of an epoch is systematically *above*
the scale of the full batches just before it (the Keras report: a loss normalised by a batch-correlated
count and divided by the batch size again spikes once per epoch).

Only the direction that hurts is judged: a loss that scales with 1/batch size makes the short batch's
loss (and its update) larger. A short batch whose loss is lower (a handful of samples the model already
fits) is a dip, not a spike, and is never counted. A spike must be at least `spike-factor` times the
median of the full batches before it in the same epoch (the last `_RECENT`, so that a falling loss does
not hide it) and above all of them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from trainlint.runtime.checks.base import Check, fmt, median
from trainlint.runtime.records import LossRecord

_MIN_FULL_BATCHES = 3
_RECENT = 10  # full batches before the short one that it is compared with


class _Epoch:
    __slots__ = ("epoch", "full_losses", "full_size", "last")

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.full_losses: Deque[float] = deque(maxlen=_RECENT)
        self.full_size = 0
        self.last: Optional[LossRecord] = None


class _Result:
    __slots__ = ("epoch", "size", "full", "factor", "spike", "rec", "median")

    def __init__(self, epoch, size, full, factor, spike, rec, med):
        self.epoch, self.size, self.full, self.factor, self.spike, self.rec = epoch, size, full, factor, spike, rec
        self.median = med


class ShortBatchLossSpike(Check):
    code = "TL104"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.factor = float(settings["spike-factor"])
        self.fraction = float(settings["spike-epoch-fraction"])
        self.min_epochs = int(settings["spike-min-epochs"])
        self.open: Dict[Any, _Epoch] = {}  # backward() site -> epoch in progress
        self.results: Dict[Any, List[_Result]] = {}

    def on_losses(self, recs: List[LossRecord]) -> None:
        isfinite = math.isfinite
        is_short = self._is_short
        for rec in recs:
            if rec.epoch is None or rec.size is None:
                continue
            key = rec.site  # one series per backward() line (a GAN's two losses are judged apart)
            ep = self.open.get(key)
            if ep is None or ep.epoch != rec.epoch:
                if ep is not None:
                    self._close(key, ep)
                ep = self.open[key] = _Epoch(rec.epoch)
            prev = ep.last
            if prev is not None and isfinite(prev.value) and not is_short(prev, ep):
                ep.full_losses.append(prev.value)
                if prev.size is not None and prev.size > ep.full_size:
                    ep.full_size = prev.size
            ep.last = rec

    @staticmethod
    def _is_short(rec: LossRecord, ep: _Epoch) -> bool:
        full = rec.full or ep.full_size
        return bool(full) and rec.size is not None and rec.size < full

    def _evaluate(self, ep: _Epoch) -> Optional[_Result]:
        r = ep.last
        if r is None or not self._is_short(r, ep) or len(ep.full_losses) < _MIN_FULL_BATCHES:
            return None
        med = median(ep.full_losses)
        if not (math.isfinite(r.value) and med > 0 and r.value > 0):
            return None
        factor = r.value / med
        spike = factor >= self.factor and r.value > max(ep.full_losses)
        return _Result(ep.epoch, r.size, r.full or ep.full_size, factor, spike, r, med)

    def _close(self, key, ep: _Epoch) -> None:
        res = self._evaluate(ep)
        if res is not None:
            self.results.setdefault(key, []).append(res)

    def diagnostics(self):
        out = []
        for key in set(self.results) | set(self.open):
            results = list(self.results.get(key, []))
            ep = self.open.get(key)
            if ep is not None:
                res = self._evaluate(ep)  # the epoch in progress ends with a short batch: judge it too
                if res is not None:
                    results.append(res)
            spikes = [r for r in results if r.spike]
            if not results or len(spikes) < self.min_epochs or len(spikes) < self.fraction * len(results):
                continue
            first = spikes[0]
            med_factor = median([r.factor for r in spikes])
            sizes = sorted({r.size for r in results})
            size_text = "/".join(str(s) for s in sizes)
            msg = (f"the loss of the short last batch ({size_text} samples, full batches {first.full}) is "
                   f"{fmt(med_factor)}x the median loss of the full batches before it (median over the "
                   f"spiking epochs; threshold {fmt(self.factor)}x) in {len(spikes)} of {len(results)} epochs: "
                   f"the loss scales with 1/batch size (divided by the batch size twice? see TL003), so each "
                   f"epoch ends with an outsized update; use `drop_last=True` on the training DataLoader "
                   f"(TL004) or a batch-size-independent loss")
            evidence = {
                "batch_size": first.full,
                "short_batch_sizes": sizes,
                "factors": [r.factor for r in results],
                "median_spike_factor": med_factor,
                "threshold": self.factor,
                "epochs": [r.epoch for r in results],
                "spiking_epochs": len(spikes),
                "epochs_with_short_batch": len(results),
                "short_batch_loss": first.rec.value,
                "full_batch_median": first.median,
                "also_confirms": "TL003",
            }
            out.append(self.diagnostic(msg, first.rec.site, first.rec.step, first.epoch, evidence))
        return out
