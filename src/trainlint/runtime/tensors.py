"""Tensor helpers of the runtime mode: batch sizes from metadata, fused norms, non-finite tests, what a
loss is (from its autograd graph)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch


def batch_size_of(batch: Any, depth: int = 0) -> Optional[int]:
    """The leading dimension of the first tensor in a batch (tensor, tuple/list, dict), from metadata
    only (no device access)."""
    tp = type(batch)
    if (tp is tuple or tp is list) and batch and isinstance(batch[0], torch.Tensor):  # (x, y): the usual
        shape = batch[0].shape  # (one read of the metadata: this runs at every batch)
        return shape[0] if shape else None
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


def norm_vector(tensors: List[torch.Tensor]) -> torch.Tensor:
    """Per-tensor L2 norms in float32, as one 1-D tensor on their device (one fused kernel where torch
    has one, and the stack: a flush then reads them in one call), without autograd recording (gradients
    of a create_graph backward require grad themselves). Called at every look at the gradients: the grad
    mode is switched directly, not through a `no_grad()` context object. The tensors share one device
    and dtype (`grouped`)."""
    if _set_grad_enabled is None:  # (a torch without the direct switch)
        with torch.no_grad():
            return _norms(tensors)
    toggle = _is_grad_enabled()
    if toggle:
        _set_grad_enabled(False)
    try:
        return _norms(tensors)
    finally:
        if toggle:
            _set_grad_enabled(True)


def _norms(tensors: List[torch.Tensor]) -> torch.Tensor:
    try:
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=_F32))
    except (TypeError, RuntimeError, AttributeError):  # older torch: no dtype argument
        try:
            return torch.stack(torch._foreach_norm(tensors, 2)).float()
        except (RuntimeError, AttributeError):
            return torch.stack([torch.linalg.vector_norm(t, dtype=_F32) for t in tensors])


def one_kind(tensors: List[Any]) -> bool:
    """Do the tensors share one device and one dtype (one fused kernel for all)?"""
    if not tensors:
        return True
    device, dtype = tensors[0].device, tensors[0].dtype
    return all(t.device == device and t.dtype == dtype for t in tensors)


def grouped(params: List[Any], tensors: List[torch.Tensor], uniform: bool = False):
    """Group (param, tensor) pairs by (device, dtype) for the fused norm kernels. `uniform`: the tensors
    are known to share one device and dtype (a cached `one_kind`): one group, nothing read."""
    if not tensors:
        return []
    if uniform or one_kind(tensors):
        return [(params, tensors)]
    groups: Dict[Tuple[Any, Any], Tuple[List[Any], List[torch.Tensor]]] = {}
    for p, t in zip(params, tensors):
        ps, ts = groups.setdefault((t.device, t.dtype), ([], []))
        ps.append(p)
        ts.append(t)
    return list(groups.values())


_NLL_NODES = ("NllLossBackward", "NllLoss2DBackward")  # torch's names end in a version digit (0)
_SCALE_NODES = {"MulBackward0": False, "DivBackward0": True}  # node -> divides


def _inputs(fn: Any) -> List[Any]:
    """The nodes feeding autograd node `fn` (the inputs that require gradients)."""
    return [f for f, _ in fn.next_functions if f is not None]


def _saved(fn: Any, name: str) -> Any:
    """A tensor an autograd node saved, or None where reading it would run a saved-tensor hook (with
    `torch.utils.checkpoint` that recomputes the forward; with `save_on_cpu` it copies the tensor back):
    the graph is looked at, never replayed."""
    raw = getattr(fn, "_raw_saved_" + name, None)
    if raw is None or getattr(raw, "unpack_hook", True) is not None:
        return None
    return getattr(fn, "_saved_" + name, None)


def _output_shape(fn: Any) -> Optional[Tuple[int, ...]]:
    """The shape of the tensor autograd node `fn` produced in the forward, from its metadata."""
    try:
        meta = fn._input_metadata
    except (AttributeError, RuntimeError):  # torch < 2.1
        return None
    return tuple(meta[0].shape) if len(meta) == 1 else None


def _nll_classes(fn: Any) -> Optional[int]:
    """C, when `fn` is the autograd node of a mean-reduced NLL loss (what `F.cross_entropy` ends in) over
    scores (N, C, ...) or (C,): C is read from the metadata of the node that produced the scores."""
    if not type(fn).__name__.startswith(_NLL_NODES):
        return None
    try:
        if fn._saved_reduction != 1:  # 1: mean (a sum is not comparable with ln C)
            return None
        producer = fn.next_functions[0][0]
    except (AttributeError, RuntimeError, IndexError):
        return None
    shape = _output_shape(producer) if producer is not None else None
    if shape is None:
        scores = _saved(fn, "self")
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else None
    if not shape:
        return None
    classes = int(shape[1] if len(shape) >= 2 else shape[0])
    return classes if classes >= 2 else None


def _smoothed_classes(fn: Any) -> Optional[int]:
    """C, when `fn` is torch's label-smoothed cross-entropy: (1 - e) * nll + (e / C) * smoothing term."""
    if type(fn).__name__ != "AddBackward0":
        return None
    nexts = _inputs(fn)
    if len(nexts) != 2 or any(type(f).__name__ != "MulBackward1" for f in nexts):
        return None
    first = _inputs(nexts[0])
    classes = _nll_classes(first[0]) if len(first) == 1 else None
    if classes is None:
        return None
    try:
        a, b = float(nexts[0]._saved_other), float(nexts[1]._saved_other)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    return classes if 0.0 < a < 1.0 and abs(b * classes - (1.0 - a)) <= 1e-6 else None


def _only_next(fn: Any, name: str) -> Any:
    """The single input node of `fn`, if there is one and it is a `name` node."""
    nexts = _inputs(fn)
    return nexts[0] if len(nexts) == 1 and type(nexts[0]).__name__ == name else None


def _soft_classes(fn: Any) -> Optional[int]:
    """C, when `fn` is torch's cross-entropy with class probabilities as targets (mixup, cutmix): the sum
    of -target * log_softmax(scores, dim=1) divided by the number of samples (and positions)."""
    if type(fn).__name__ != "DivBackward1":
        return None
    neg = _only_next(fn, "NegBackward0")
    total = _only_next(neg, "SumBackward0") if neg is not None else None
    mul = _only_next(total, "MulBackward0") if total is not None else None
    if mul is None:
        return None
    try:
        sizes = tuple(total._saved_self_sym_sizes)
        divisor = fn._saved_other
        logs = [f for f in _inputs(mul) if type(f).__name__ == "LogSoftmaxBackward0"]
        if len(logs) != 1 or logs[0]._saved_dim != (1 if len(sizes) >= 2 else 0):
            return None
    except (AttributeError, RuntimeError, TypeError):
        return None
    if not sizes or not isinstance(divisor, (int, float)):
        return None
    classes = int(sizes[1] if len(sizes) >= 2 else sizes[0])
    count = 1
    for n in sizes:
        count *= int(n)
    return classes if classes >= 2 and divisor * classes == count else None


def _class_count(fn: Any) -> Optional[int]:
    return _nll_classes(fn) or _smoothed_classes(fn) or _soft_classes(fn)


def cross_entropy_of(loss: torch.Tensor) -> Optional[Tuple[int, float]]:
    """(C, scale) when `loss` is a mean cross-entropy (or NLL) over C classes as torch computes it (class
    indices or probabilities as targets, label-smoothed or not), or such a loss multiplied or divided by a
    constant (Lightning's `loss / accumulate_grad_batches`): `scale` turns the loss's value into the
    cross-entropy's (1.0 for the loss itself). Read from the autograd graph's metadata (and a constant it saved): no device read,
    no saved-tensor hook run, and a loss computed inside a TorchScript module is recognised as well (not
    one inside a `torch.compile`d region: its graph is one compiled node)."""
    fn = loss.grad_fn
    if fn is None:
        return None
    classes = _class_count(fn)
    if classes is not None:
        return classes, 1.0
    divides = _SCALE_NODES.get(type(fn).__name__)
    if divides is None:
        return None
    nexts = _inputs(fn)
    if len(nexts) != 1:
        return None
    classes = _class_count(nexts[0])
    if classes is None:
        return None
    try:  # the constant is the saved operand (the loss, requiring grad, is not saved)
        k = _saved(fn, "other")
        if k is None and not divides:
            k = _saved(fn, "self")
    except (AttributeError, RuntimeError):
        return None
    if not isinstance(k, torch.Tensor) or k.numel() != 1 or k.requires_grad or k.device.type != "cpu":
        return None  # not a constant, or one on an accelerator (reading it would synchronise)
    k = float(k)
    if k == 0.0 or not math.isfinite(k):
        return None
    return classes, (k if divides else 1.0 / k)
