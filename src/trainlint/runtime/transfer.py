"""The device-to-host transfer: pending device values are copied in one block per device at a flush.

Nothing here runs between flushes: losses (0-dim tensors) and the gradient norms of each look (a
vector per device and dtype) are kept on their device by the monitor and read here every `every`
optimizer steps.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import torch

from trainlint.runtime.records import LossRecord, StepRecord
from trainlint.runtime.tensors import grouped, nonfinite, norm_vector


def fetch_losses(losses: List[LossRecord]) -> None:
    """The values of the losses kept on their device (one transfer per device); then, for a scaled
    cross-entropy, its own value (`ce_scale`)."""
    by_device: Dict[Any, List[LossRecord]] = {}
    for r in losses:
        if r.tensor is not None:
            by_device.setdefault(r.tensor.device, []).append(r)
    for recs in by_device.values():
        values = torch.stack([r.tensor for r in recs]).float().cpu().tolist()
        for r, v in zip(recs, values):
            r.value = v
            r.tensor = None
    for r in losses:
        if r.ce_scale is not None:
            r.ce_value = r.value * r.ce_scale


def to_host(vectors: List[Tuple[Any, torch.Tensor]]) -> List[List[float]]:
    """The values of 1-D tensors, given with their devices, in order: on the CPU each is read as it is;
    elsewhere those of a device are joined and copied in one transfer."""
    out: List[List[float]] = [[] for _ in vectors]
    joined: Dict[Any, List[int]] = {}
    for i, (dev, vec) in enumerate(vectors):
        if dev.type == "cpu":
            out[i] = vec.tolist()
        else:
            joined.setdefault(dev, []).append(i)
    for idx in joined.values():
        flat = torch.cat([vectors[i][1] for i in idx]).float().cpu().tolist()
        o = 0
        for i in idx:
            n = vectors[i][1].shape[0]
            out[i] = flat[o:o + n]
            o += n
    return out


def fetch_norms(steps: List[StepRecord]) -> None:
    """The gradient norms of the looks (`StepRecord.vecs`: a vector per device and dtype)."""
    values = iter(to_host([v for r in steps for v in r.vecs]))
    isfinite = math.isfinite
    for r in steps:
        norms = [x for _ in r.vecs for x in next(values)]
        r.vecs = []
        total = math.fsum(x * x for x in norms)
        r.total = math.sqrt(total) if isfinite(total) else total
        if not isfinite(r.total):
            r.bad = [p for p, x in zip(r.params, norms) if not isfinite(x)]
            if not r.bad:  # a finite but huge gradient whose square overflowed
                r.total = math.inf
    _fetch_clip(steps)


def _fetch_clip(steps: List[StepRecord]) -> None:
    """The norms `clip_grad_norm_` returned (before clipping), where a step had one."""
    recs = [r for r in steps if isinstance(r.clip, torch.Tensor)]
    by_device: Dict[Any, List[StepRecord]] = {}
    for r in recs:
        by_device.setdefault(r.clip.device, []).append(r)
    for group in by_device.values():
        values = torch.stack([r.clip.reshape(()).float() for r in group]).cpu().tolist()
        for r, v in zip(group, values):
            r.clip = v


def checkable_params(params: List[Any]) -> List[Any]:
    """The parameters whose values `nonfinite_params` can check (dense, floating-point or complex)."""
    return [p for p in params if p.layout == torch.strided and (p.is_floating_point() or p.is_complex())]


def nonfinite_params(params: List[Any], uniform: bool = False) -> List[Any]:
    """The parameters among `params` (`checkable_params`) holding NaN/Inf: one fused norm pass (without
    autograd recording: `norm_vector`), then a check of the few whose norm was not finite. `uniform`:
    they are known to share one device and dtype (no grouping)."""
    if not params:
        return []
    ordered: List[Any] = []
    vecs: List[Tuple[Any, torch.Tensor]] = []
    for ps, ts in grouped(params, params, uniform):
        vecs.append((ts[0].device, norm_vector(ts)))
        ordered.extend(ps)
    values = [x for part in to_host(vecs) for x in part]
    bad = [p for p, x in zip(ordered, values) if not math.isfinite(x)]
    return [p for p in bad if nonfinite(p.detach())]  # not just a norm that overflowed
