"""TL111 bad-input-data: a training batch holding NaN/Inf, or input features whose scales are orders of
magnitude apart (unnormalised data), reported with the epoch and batch index.

Each batch a DataLoader yields is looked at through its first floating-point tensor (the inputs of an
`(x, y)` batch). NaN/Inf: on the CPU, where each loss is read as it happens, the batch is examined only
when its loss is non-finite (nothing is spent on healthy batches); on an accelerator, one
`isfinite().all()` reduction per batch is queued on the device and read at the flush.
The scale of each feature (dimension 1: the columns of tabular data, the channels of images) is its
root mean square over the first `input-scale-batches` batches of each DataLoader; a feature whose RMS
is at least `input-scale-ratio` times above or below the median feature's is badly scaled. Inputs with
more than 1024 entries along dimension 1 (a waveform, a flattened image) are not judged for scale. Batches of
DataLoaders that never reach backward() (validation) are not reported.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch

from trainlint.runtime.checks.base import Check, fmt, median
from trainlint.runtime.records import BatchPlace
from trainlint.runtime.sites import UNKNOWN

_PENDING_MAX = 4096
_MAX_FEATURES = 1024  # more columns than this are not tabular features (a waveform, a flattened image)


def first_float_tensor(batch: Any, depth: int = 0) -> Optional[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return batch if batch.is_floating_point() and batch.numel() > 0 else None
    if depth > 3:
        return None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in items:
        t = first_float_tensor(v, depth + 1)
        if t is not None:
            return t
    return None


class _Scale:
    __slots__ = ("rms", "place", "done", "asked")

    def __init__(self) -> None:
        self.asked = 0  # batches whose feature RMS was computed (some may still be pending)
        self.rms: List[List[float]] = []
        self.place: Optional[BatchPlace] = None
        self.done = False


class BadInputData(Check):
    code = "TL111"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.scale_batches = int(settings["input-scale-batches"])
        self.ratio = float(settings["input-scale-ratio"])
        # (batch, its isfinite().all() on the device or None, (per-feature sums of squares on the device,
        # values per feature) or None)
        self.pending: List[Tuple[BatchPlace, Any, Any]] = []
        self.scales: Dict[int, _Scale] = {}  # loader key -> per-feature RMS of its first batches
        self.bad: List[BatchPlace] = []  # batches with NaN/Inf, in order (the first few kept)
        self.bad_count = 0
        self.scaled: List[Tuple[BatchPlace, List[float], float, List[int]]] = []
        self.sites: Dict[int, Any] = {}  # loader key -> the line iterating it

    def on_batch(self, batch: Any, where: BatchPlace) -> Optional[bool]:
        immediate = self.ctx.immediate
        sc = self.scales.get(where.loader)
        if immediate and sc is not None and (sc.done or sc.asked >= self.scale_batches):
            # on the CPU, once its scales are measured: NaN/Inf is looked for only on a bad loss, and
            # this DataLoader's later batches need not be shown
            return False
        x = first_float_tensor(batch)
        if x is None or len(self.pending) >= _PENDING_MAX:
            return
        if where.loader not in self.sites:
            self.sites[where.loader] = self.ctx.sites.find(1)
        if sc is None:
            sc = self.scales[where.loader] = _Scale()
        x = x.detach()  # (no autograd recording, without a no_grad() context)
        # on the CPU (losses read as they happen) NaN/Inf is looked for only when a loss is non-finite
        deferred = immediate is False or (immediate is None and x.device.type != "cpu")
        finite = torch.isfinite(x).all() if deferred else None
        rms = None
        shape = x.shape
        if not sc.done and sc.asked < self.scale_batches and len(shape) >= 2 and 2 <= shape[1] <= _MAX_FEATURES:
            sc.asked += 1
            dims = [0, *range(2, len(shape))]  # every dimension but the features'
            # each feature's sum of squares, NaN/Inf values counted as 0 (a value so large that its square
            # overflows makes the sum infinite: a scale far off indeed); the root mean square is taken on
            # the host, at the flush
            x = torch.nan_to_num(x.float(), 0.0, 0.0, 0.0)
            rms = ((x * x).sum(dim=dims), x.numel() // shape[1])
        if finite is not None or rms is not None:
            self.pending.append((where, finite, rms))

    def on_bad_loss(self, rec, where, batch) -> None:
        if where is None or batch is None or any(w is where for w in self.bad):
            return
        x = first_float_tensor(batch)
        if x is not None and not bool(torch.isfinite(x).all()):
            self._bad(where)

    def _bad(self, where: BatchPlace) -> None:
        self.bad_count += 1
        if len(self.bad) < 20:
            self.bad.append(where)

    def on_flush(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        checked = [f.reshape(()) for _, f, _ in pending if f is not None]
        flags = iter(torch.stack(checked).cpu().tolist() if checked else [])
        for where, finite, rms in pending:
            if finite is not None and not next(flags):
                self._bad(where)
            if rms is not None:
                sc = self.scales[where.loader]
                squares, count = rms
                sc.rms.append([math.sqrt(v / count) for v in squares.cpu().tolist()])
                sc.place = sc.place or where
                if len(sc.rms) >= self.scale_batches:
                    self._judge(sc)

    def finish(self) -> None:
        self.on_flush()
        for sc in self.scales.values():
            if not sc.done and sc.rms:
                self._judge(sc)

    def _judge(self, sc: _Scale) -> None:
        sc.done = True
        n = len(sc.rms[0])
        if any(len(r) != n for r in sc.rms):
            return
        per_feature = [median([r[i] for r in sc.rms]) for i in range(n)]
        nonzero = [v for v in per_feature if v > 0]
        if len(nonzero) < 2:
            return
        mid = median(nonzero)
        off = [i for i, v in enumerate(per_feature) if v > 0 and (v >= self.ratio * mid or v * self.ratio <= mid)]
        if off and sc.place is not None:
            self.scaled.append((sc.place, per_feature, mid, off))

    def diagnostics(self):
        if self.pending and not self.ctx.closed:
            self.on_flush()
        out = []
        bad = [w for w in self.bad if w.epoch() is not None]
        if bad:
            w = bad[0]
            msg = (f"the input batch {w.batch} of epoch {w.epoch()} (fetched at step {w.step}) holds NaN/Inf "
                   f"values; {self.bad_count} batch{'es' if self.bad_count != 1 else ''} in all: the data "
                   f"itself is dirty (missing values, a division by zero in preprocessing, a corrupt file?); "
                   f"clean or filter it before training")
            evidence = {"kind": "non-finite", "batch": w.batch, "epoch": w.epoch(), "batches_with_non_finite": self.bad_count,
                        "first_batches": [[b.epoch(), b.batch] for b in bad[:10]]}
            out.append(self.diagnostic(msg, self.sites.get(w.loader, UNKNOWN), w.step, w.epoch(), evidence))
        for w, feats, mid, off in self.scaled:
            if w.epoch() is None:
                continue
            worst = max(off, key=lambda i: max(feats[i] / mid, mid / feats[i]))
            factor = feats[worst] / mid
            how = f"{fmt(factor)}x" if factor >= 1 else f"1/{fmt(1 / factor)}"
            msg = (f"input feature {worst} has a scale (RMS over the first batches) of {fmt(feats[worst])}, "
                   f"{how} the median feature's {fmt(mid)}; {len(off)} of {len(feats)} features "
                   f"{'is' if len(off) == 1 else 'are'} "
                   f"{fmt(self.ratio)}x or more off: the inputs are not normalised, so one learning rate cannot "
                   f"suit every weight (standardise each feature: subtract its mean, divide by its std)")
            evidence = {"kind": "scale", "feature": worst, "feature_rms": feats[worst], "median_rms": mid,
                        "factor": factor, "features_off": off[:20], "features": len(feats), "threshold": self.ratio}
            out.append(self.diagnostic(msg, self.sites.get(w.loader, UNKNOWN), w.step, w.epoch(), evidence))
        return out
