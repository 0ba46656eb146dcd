"""Tensor helpers of the runtime mode: batch sizes from metadata, fused norms, non-finite tests."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch


def batch_size_of(batch: Any, depth: int = 0) -> Optional[int]:
    """The leading dimension of the first tensor in a batch (tensor, tuple/list, dict), from metadata
    only (no device access)."""
    tp = type(batch)
    if (tp is tuple or tp is list) and batch and isinstance(batch[0], torch.Tensor):  # (x, y): the usual
        first = batch[0]
        return int(first.shape[0]) if first.dim() > 0 else None
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if depth > 4:
        return None
    if isinstance(batch, (list, tuple)):
        if not batch:
            return None
        first = batch[0]
        if isinstance(first, (torch.Tensor, list, tuple, dict)):
            return batch_size_of(first, depth + 1)
        return len(batch)  # a collated list of strings/numbers
    if isinstance(batch, dict):
        for v in batch.values():
            n = batch_size_of(v, depth + 1)
            if n is not None:
                return n
    return None


def nonfinite(obj: Any, depth: int = 0) -> bool:
    """Is any floating tensor in `obj` NaN/Inf (reads values: used only when something went wrong)."""
    if isinstance(obj, torch.Tensor):
        if not (obj.is_floating_point() or obj.is_complex()) or obj.numel() == 0:
            return False
        return not bool(torch.isfinite(obj).all())
    if depth > 3:
        return False
    if isinstance(obj, (list, tuple)):
        return any(nonfinite(o, depth + 1) for o in obj)
    if isinstance(obj, dict):
        return any(nonfinite(o, depth + 1) for o in obj.values())
    return False


_set_grad_enabled = getattr(torch._C, "_set_grad_enabled", None)
_is_grad_enabled = torch.is_grad_enabled
_F32 = torch.float32


def foreach_norms(tensors: List[torch.Tensor]) -> Sequence[torch.Tensor]:
    """Per-tensor L2 norms in float32 (one fused kernel per device/dtype group where torch has one),
    without autograd recording (gradients of a create_graph backward require grad themselves). Called at
    every optimizer step: the grad mode is switched directly, not through a `no_grad()` context object."""
    toggle = _set_grad_enabled is not None and _is_grad_enabled()
    if toggle:
        _set_grad_enabled(False)
    try:
        return torch._foreach_norm(tensors, 2, dtype=_F32)
    except (TypeError, RuntimeError, AttributeError):  # older torch: no dtype argument
        with torch.no_grad():
            try:
                return [n.float() for n in torch._foreach_norm(tensors, 2)]
            except (RuntimeError, AttributeError):
                return [torch.linalg.vector_norm(t, dtype=_F32) for t in tensors]
    finally:
        if toggle:
            _set_grad_enabled(True)


def grouped(params: List[Any], tensors: List[torch.Tensor]):
    """Group (param, tensor) pairs by (device, dtype) for the fused norm kernels."""
    if not tensors:
        return []
    key0 = (tensors[0].device, tensors[0].dtype)
    if all(t.device == key0[0] and t.dtype == key0[1] for t in tensors):
        return [(params, tensors)]
    groups: Dict[Tuple[Any, Any], Tuple[List[Any], List[torch.Tensor]]] = {}
    for p, t in zip(params, tensors):
        ps, ts = groups.setdefault((t.device, t.dtype), ([], []))
        ps.append(p)
        ts.append(t)
    return list(groups.values())
