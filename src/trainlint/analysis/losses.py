"""Loss values: which expressions are already averaged over the batch, summed, or batch sizes."""

from __future__ import annotations

import re
from typing import List, Optional

import libcst as cst

from trainlint.analysis.expr import Resolver, leaf_name, number_value, reduction_of
from trainlint.analysis.index import ModuleIndex, Scope, call_arg, method_name

# torch.nn.functional losses and their nn.Module classes; all default to reduction="mean".
FUNCTIONAL_LOSSES = {
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "ctc_loss",
    "margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss", "multilabel_margin_loss",
    "soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss", "triplet_margin_loss",
    "triplet_margin_with_distance_loss", "poisson_nll_loss", "gaussian_nll_loss",
}
_LOSS_CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*Loss$")
_BATCH_NAME_EXCLUDE = re.compile(r"loader|dataset|data_set|epoch|step|iter|accum|token|seq|len$|count", re.I)


class Losses:
    """Classifies loss expressions in one scope, following local names and criterion objects."""

    def __init__(self, index: ModuleIndex, scope: Scope, batch_size_names: List[str]):
        self.index = index
        self.scope = scope
        self.res = Resolver(index, scope)
        self.batch_size_names = set(batch_size_names)

    # -- what a loss value is --------------------------------------------------------------------
    def reduction(self, expr: cst.BaseExpression, depth: int = 0) -> Optional[str]:
        """'mean' for a value averaged over the whole batch, 'sum' for a batch sum, else None."""
        if depth > 5:
            return None
        idx = self.index
        if isinstance(expr, (cst.Name, cst.Attribute)):
            v = self.res.value(expr)
            return None if v is expr else self.reduction(v, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            if isinstance(expr.operator, (cst.Add, cst.Subtract)):
                a, b = self.reduction(expr.left, depth + 1), self.reduction(expr.right, depth + 1)
                if a and a == b:
                    return a
                if a and _is_const(expr.right) or b and _is_const(expr.left):
                    return a or b
                return None
            if isinstance(expr.operator, cst.Multiply):
                if _is_const(expr.left):
                    return self.reduction(expr.right, depth + 1)
                if _is_const(expr.right):
                    return self.reduction(expr.left, depth + 1)
            return None
        if not isinstance(expr, cst.Call):
            return None
        m = method_name(expr)
        q = idx.callee(expr) or ""
        last = q.rsplit(".", 1)[-1]
        if m in ("mean", "sum") and isinstance(expr.func, cst.Attribute) and not _has_dim(expr, 0):
            if q.startswith(("np.", "numpy.", "math.")):
                return None
            return m
        if q in ("torch.mean", "torch.sum") and not _has_dim(expr, 1):
            return last
        if last in FUNCTIONAL_LOSSES and (q.startswith("torch.nn.functional.") or q.startswith("F.")):
            return _norm(reduction_of(idx, expr))
        # calling a criterion object: criterion(out, y), self.criterion(out, y)
        if isinstance(expr.func, (cst.Name, cst.Attribute)):
            ctor = self.res.value(expr.func)
            if isinstance(ctor, cst.Call) and self.is_loss_class(ctor):
                return _norm(reduction_of(idx, ctor))
            if ctor is expr.func and isinstance(expr.func, cst.Attribute) and isinstance(expr.func.value, cst.Name) \
                    and expr.func.value.value == "self":
                vals = idx.attr_assigns.get(expr.func.attr.value, [])
                reds = {(_norm(reduction_of(idx, v)) if isinstance(v, cst.Call) and self.is_loss_class(v) else None)
                        for v in vals}
                if len(reds) == 1:
                    return reds.pop()
        return None

    def is_loss_class(self, call: cst.Call) -> bool:
        q = self.index.callee(call) or ""
        last = q.rsplit(".", 1)[-1]
        return q.startswith("torch.nn.") and bool(_LOSS_CLASS.match(last)) or q in (
            f"nn.{last}",) and bool(_LOSS_CLASS.match(last))

    # -- batch sizes -----------------------------------------------------------------------------
    def actual_batch_length(self, expr: cst.BaseExpression, depth: int = 0) -> bool:
        """`x.size(0)`, `x.shape[0]`, `len(x)` of a batch (not of a loader or dataset)."""
        if depth > 3:
            return False
        if isinstance(expr, cst.Call):
            m = method_name(expr)
            q = self.index.callee(expr)
            if m == "size" and expr.args and number_value(expr.args[0].value) == 0:
                return True
            if q == "len" and len(expr.args) == 1:
                name = leaf_name(expr.args[0].value) or self.index.code(expr.args[0].value)
                return not _BATCH_NAME_EXCLUDE.search(name)
            if q in ("float", "int") and len(expr.args) == 1:
                return self.actual_batch_length(expr.args[0].value, depth + 1)
        if isinstance(expr, cst.Subscript) and len(expr.slice) == 1:
            sl = expr.slice[0].slice
            if isinstance(sl, cst.Index) and number_value(sl.value) == 0:
                base = expr.value
                if isinstance(base, cst.Attribute) and base.attr.value == "shape":
                    return True
                if isinstance(base, cst.Call) and method_name(base) == "size" and not base.args:
                    return True
        if isinstance(expr, cst.Name):
            v = self.res.value(expr)
            if v is not expr:
                return self.actual_batch_length(v, depth + 1)
        return False

    def configured_batch_size(self, expr: cst.BaseExpression, literal_sizes=()) -> bool:
        """A name that holds the configured batch size (`batch_size`, `args.batch_size`, ...)."""
        name = leaf_name(expr)
        if name is not None and name in self.batch_size_names:
            v = self.res.value(expr)
            if v is not expr and self.actual_batch_length(v):
                return False  # batch_size = x.size(0): the actual length
            return True
        n = number_value(expr)
        return n is not None and n in literal_sizes and n > 1

    def batch_size(self, expr: cst.BaseExpression, literal_sizes=()) -> bool:
        return self.actual_batch_length(expr) or self.configured_batch_size(expr, literal_sizes)


def _norm(red: Optional[str]) -> Optional[str]:
    if red in ("mean", "elementwise_mean", "batchmean"):
        return "mean"
    if red == "sum":
        return "sum"
    return None


def _is_const(expr) -> bool:
    return number_value(expr) is not None


def _has_dim(call: cst.Call, pos: int) -> bool:
    """Does this reduction name a dimension (so it is not over the whole batch)?"""
    if call_arg(call, "dim") is not None or call_arg(call, "axis") is not None:
        return True
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return len(positional) > pos


def loader_batch_sizes(index: ModuleIndex) -> List[float]:
    out = []
    for call in index.calls:
        q = index.callee(call) or ""
        if q.endswith("DataLoader"):
            a = call_arg(call, "batch_size", 1)
            if a is not None:
                v = number_value(a.value)
                if v is not None:
                    out.append(v)
    return out
