"""Which objects are optimizers, schedulers, losses and DataLoaders, by construction or by name."""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, method_name, receiver

# torch.optim classes, and well-known optimizers of other libraries.
ADAPTIVE_OPTIMIZERS = {
    "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "SparseAdam",
}
OTHER_OPTIMIZERS = {
    "SGD", "LBFGS", "ASGD", "Rprop", "Adafactor", "Lion", "LAMB", "Lamb", "FusedAdam", "FusedLAMB",
    "FusedSGD", "AdamW8bit", "Adam8bit", "PagedAdamW", "PagedAdamW8bit", "Adan", "AdaBelief",
    "Shampoo", "Muon", "ZeroRedundancyOptimizer",
}
OPTIMIZER_FACTORIES = {"create_optimizer", "create_optimizer_v2", "build_optimizer", "get_optimizer",
                       "make_optimizer", "configure_optimizer"}
_OPT_NAME = re.compile(r"(^|_)(opt|optim|optimizer|optimiser)s?(_|$|\d)|optim", re.IGNORECASE)
_SCHED_NAME = re.compile(r"sched|lr_|warmup|swa", re.IGNORECASE)


def is_optimizer_class(qualname: Optional[str]) -> bool:
    if not qualname:
        return False
    last = qualname.rsplit(".", 1)[-1]
    if "lr_scheduler" in qualname or "scheduler" in qualname.lower():
        return False
    if qualname.startswith("torch.optim.") and last[:1].isupper() and last != "Optimizer":
        return True
    return last in ADAPTIVE_OPTIMIZERS or last in OTHER_OPTIMIZERS


def is_optimizer_constructor(index: ModuleIndex, value: cst.BaseExpression) -> bool:
    if not isinstance(value, cst.Call):
        return False
    q = index.callee(value)
    if q is None:
        return False
    last = q.rsplit(".", 1)[-1]
    return is_optimizer_class(q) or last in OPTIMIZER_FACTORIES


def _last_name(expr: cst.BaseExpression) -> Optional[str]:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    if isinstance(expr, cst.Subscript):
        return _last_name(expr.value)
    return None


def assigned_values(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope):
    if isinstance(expr, cst.Name):
        return index.values_of(expr.value, scope)
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        return index.attr_assigns.get(expr.attr.value, [])
    return []


def is_optimizer(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> bool:
    """Is `expr` an optimizer? By the value bound to it in this module, else by its name."""
    values = assigned_values(index, expr, scope)
    if values:
        if any(is_optimizer_constructor(index, v) for v in values):
            return True
        if all(isinstance(v, cst.Call) for v in values):
            # Bound to calls of something else (a scheduler, an engine): trust the binding unless
            # the name says optimizer and the call is unknown.
            if any(_is_scheduler_call(index, v) for v in values):
                return False
    name = _last_name(expr)
    if not name or _SCHED_NAME.search(name):
        return False
    return bool(_OPT_NAME.search(name))


def _is_scheduler_call(index: ModuleIndex, call: cst.Call) -> bool:
    q = index.callee(call) or ""
    return "lr_scheduler" in q or "sched" in q.lower() or q.endswith("LR")


def is_grad_scaler(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> bool:
    for v in assigned_values(index, expr, scope):
        if isinstance(v, cst.Call) and (index.callee(v) or "").endswith("GradScaler"):
            return True
    name = _last_name(expr) or ""
    return "scaler" in name.lower()


BACKWARD_METHODS = ("backward", "manual_backward")


def is_backward_call(index: ModuleIndex, call: cst.Call) -> bool:
    """`loss.backward()`, `scaler.scale(loss).backward()`, `accelerator.backward(loss)`,
    `fabric.backward(loss)`, `self.manual_backward(loss)`, `torch.autograd.backward(...)`."""
    m = method_name(call)
    if m in BACKWARD_METHODS:
        return True
    q = index.callee(call)
    return q in ("torch.autograd.backward", "torch.autograd.backward.backward")


def grad_attribute_clear(node: cst.CSTNode) -> bool:
    """`p.grad.zero_()`, `p.grad.data.zero_()`, `p.grad = None` style clearing of a gradient."""
    if isinstance(node, cst.Call):
        m = method_name(node)
        if m in ("zero_", "fill_", "detach_") or m == "zero_grad":
            r = receiver(node)
            while isinstance(r, cst.Attribute):
                if r.attr.value == "grad":
                    return m != "detach_"
                r = r.value
    return False
