"""TL115 saturated-probabilities: softmax/sigmoid outputs of the training graph saturated to exactly 0 and
1 in their dtype, for many looks in a row, after they were not: no gradient flows back through them, and
a log of them is -inf (the "softmax overflow" of a learning rate far too high).

Saturated means the logits are so far apart that the smaller probability is exactly 0.0 in the output's
dtype (even as a subnormal): an input of a sigmoid beyond +-T, a row of a softmax whose largest input
exceeds the second largest by T or more (the row is exactly one-hot), where T = -ln(smallest subnormal
of the dtype): 103.3 for float32, 92.2 for bfloat16, 16.6 for float16, 744 for float64. A confident
classifier (logits 10 or 30 apart in float32) is far from it.

Looked at in every `saturation-every`-th step (the first call from each source line in that step; one
reduction on the device, read at the flush): the fraction of saturated rows (softmax) or elements
(sigmoid). Reported when it is at least `saturation-fraction` in `saturation-checks` looks in a row,
having been below it at the first look (masked attention, -inf by design from the start, is not).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch

from trainlint.runtime.checks.base import FractionLooks, SustainedFraction, fmt, when
from trainlint.runtime.sites import Site

_LIMITS: Dict[Any, float] = {}


def limit(dtype: Any) -> float:
    """The input distance T beyond which the smaller probability is exactly 0 in `dtype`."""
    t = _LIMITS.get(dtype)
    if t is None:
        fi = torch.finfo(dtype)
        t = _LIMITS[dtype] = -math.log(fi.smallest_normal * fi.eps)
    return t


class _State(SustainedFraction):
    __slots__ = ("site", "kind", "dtype", "last_step", "shape")

    def __init__(self, site: Site, kind: str) -> None:
        super().__init__()
        self.site = site
        self.kind = kind
        self.dtype = ""
        self.shape: Tuple[int, ...] = ()
        self.last_step = -1


class SaturatedProbabilities(FractionLooks):
    code = "TL115"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.every = int(settings["saturation-every"])
        self.fraction = float(settings["saturation-fraction"])
        self.needed = int(settings["saturation-checks"])
        self.states: Dict[Tuple[Site, str], _State] = {}

    def on_activation(self, kind: str, x: Any, out: Any, dim: Optional[int]) -> None:
        # the user's line calling torch.softmax/torch.sigmoid or the model holding an nn.Softmax (frames
        # of trainlint and torch skipped; resolved once per calling line)
        site = self.ctx.sites.find(3)
        key = (site, kind)
        s = self.states.get(key)
        step = self.ctx.step
        if s is None:
            s = self.states[key] = _State(site, kind)
        if s.last_step == step:
            return  # one look per source line and step
        s.last_step = step
        t = limit(out.dtype)
        with torch.no_grad():
            x = x.detach()
            if kind == "sigmoid":
                sat = (x.abs() >= t).float().mean()
            else:
                if x.dim() == 0 or x.shape[dim] < 2:
                    return
                top = x.topk(2, dim=dim).values
                gap = top.narrow(dim, 0, 1) - top.narrow(dim, 1, 1)
                sat = (gap >= t).float().mean()
        s.dtype = str(out.dtype).replace("torch.", "")
        s.shape = tuple(x.shape)
        self.pending.append((s, step, self.ctx.epoch(), sat))

    def fractions(self, pending) -> List[float]:
        return torch.stack([v.reshape(()).float().cpu() for _, _, _, v in pending]).tolist()

    def diagnostics(self):
        out = []
        for s in self.found():
            step, epoch, v = s.found
            what = "rows are exactly one-hot" if s.kind == "softmax" else "outputs are exactly 0 or 1"
            bound = fmt(limit(getattr(torch, s.dtype)))
            why = (f"the largest input leads the next by {bound} or more" if s.kind == "softmax"
                   else f"inputs beyond +-{bound}")
            msg = (f"{s.kind} saturated: {fmt(100 * v)}% of its {what} in {s.dtype} ({why}) from "
                   f"{when(step, epoch)} on ({s.found_len} looks in a row, every {self.every} steps; "
                   f"{fmt(100 * (s.first or 0))}% at the first look, up to {fmt(100 * s.peak)}%): no gradient "
                   f"flows back through a saturated output and its log is -inf (a learning rate far too high; "
                   f"give the logits to `cross_entropy`/`BCEWithLogitsLoss` instead of probabilities)")
            evidence = {"function": s.kind, "saturated_fraction": v, "first_saturated_fraction": s.first,
                        "peak_saturated_fraction": s.peak, "consecutive_looks": s.found_len,
                        "threshold": self.fraction, "logit_distance": limit(getattr(torch, s.dtype)),
                        "dtype": s.dtype, "shape": list(s.shape)}
            out.append(self.diagnostic(msg, s.site, step, epoch, evidence))
        return out
