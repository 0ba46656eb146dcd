"""Small expression helpers shared by the loss rules: additive terms, overlaps, reductions."""

from __future__ import annotations

import re
from typing import List, Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, call_arg, method_name

_OVERLAP_NAME = re.compile(r"inter|overlap|(^|_)tp($|_)|true_?pos|(^|_)num(erator)?($|_)", re.IGNORECASE)
_SMOOTH_NAME = re.compile(r"smooth|eps|epsilon|delta|laplace|(^|_)s($|_)|(^|_)k($|_)|offset", re.IGNORECASE)


def additive_terms(expr: cst.BaseExpression, added_only: bool = False) -> List[cst.BaseExpression]:
    """`a + b - c` -> [a, b, c] (or [a, b] with `added_only`); inner parentheses are looked through."""
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
        return additive_terms(expr.left, added_only) + additive_terms(expr.right, added_only)
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Subtract):
        return additive_terms(expr.left, added_only) + ([] if added_only else [expr.right])
    return [expr]


def is_sum(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Add, cst.Subtract))


def leaf_name(expr: cst.BaseExpression) -> Optional[str]:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return None


def is_number(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, (cst.Integer, cst.Float)):
        return True
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        return is_number(expr.expression)
    return False


def number_value(expr: cst.BaseExpression) -> Optional[float]:
    try:
        if isinstance(expr, (cst.Integer, cst.Float)):
            return float(expr.value.replace("_", ""))
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
            v = number_value(expr.expression)
            return None if v is None else -v
    except ValueError:
        return None
    return None


def is_product(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.BinaryOperation) and isinstance(
        expr.operator, (cst.Multiply, cst.BitAnd, cst.MatrixMultiply))


class Resolver:
    """Follows local names (and `self.x`) to their single assigned value, up to a depth."""

    def __init__(self, index: ModuleIndex, scope: Scope, depth: int = 4):
        self.index = index
        self.scope = scope
        self.depth = depth

    def value(self, expr: cst.BaseExpression) -> cst.BaseExpression:
        return self.index.resolve_value(expr, self.scope, self.depth)

    def is_overlap(self, expr: cst.BaseExpression, depth: int = 0) -> bool:
        """A product of prediction and target, a sum of one, or a name like `inter`/`tp`."""
        if depth > 4:
            return False
        name = leaf_name(expr)
        if name and _OVERLAP_NAME.search(name):
            return True
        if is_product(expr):
            left, right = expr.left, expr.right  # type: ignore[attr-defined]
            if is_number(left):
                return self.is_overlap(right, depth + 1)
            if is_number(right):
                return self.is_overlap(left, depth + 1)
            return not is_number(left) and not is_number(right) and not _is_smooth(left) and not _is_smooth(right)
        if isinstance(expr, cst.Call):
            m = method_name(expr)
            q = self.index.callee(expr) or ""
            last = q.rsplit(".", 1)[-1]
            if m in ("sum", "mean") or last in ("sum", "reduce_sum", "mean", "reduce_mean", "einsum", "dot"):
                inner = expr.func.value if m in ("sum", "mean") and isinstance(expr.func, cst.Attribute) else (
                    expr.args[0].value if expr.args else None)
                if last == "einsum":
                    return True
                return inner is not None and self.is_overlap(inner, depth + 1)
        if isinstance(expr, (cst.Name, cst.Attribute)):
            v = self.value(expr)
            if v is not expr:
                return self.is_overlap(v, depth + 1)
        return False


def _is_smooth(expr) -> bool:
    name = leaf_name(expr)
    return bool(name and _SMOOTH_NAME.search(name))


def is_smoothing_term(expr: cst.BaseExpression) -> bool:
    """A constant, or a name/attribute that reads like a smoothing constant (not a tensor product)."""
    if is_number(expr):
        return True
    if isinstance(expr, (cst.Name, cst.Attribute)):
        name = leaf_name(expr) or ""
        return not _OVERLAP_NAME.search(name)
    return False


def reduction_of(index: ModuleIndex, call: cst.Call, default: str = "mean") -> Optional[str]:
    """The `reduction=` of a loss call/constructor: a string, `default` when absent, None when unknown."""
    arg = call_arg(call, "reduction")
    if arg is None:
        if any(a.star for a in call.args):
            return None
        for kw in ("size_average", "reduce"):
            a = call_arg(call, kw)
            if a is not None:
                if isinstance(a.value, cst.Name) and a.value.value == "False":
                    return "sum" if kw == "size_average" else "none"
                return None
        return default
    if isinstance(arg.value, cst.SimpleString):
        return arg.value.evaluated_value if isinstance(arg.value.evaluated_value, str) else None
    return None
