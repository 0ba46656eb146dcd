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
                module_function = q.split(".")[0] in ("torch", "tensorflow", "tf", "numpy", "np", "K", "keras", "jax")
                inner = expr.func.value if m in ("sum", "mean") and isinstance(expr.func, cst.Attribute) \
                    and not module_function else (expr.args[0].value if expr.args else None)
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


def reduction_of(index: ModuleIndex, call: cst.Call, default: str = "mean", scope: Scope = None) -> Optional[str]:
    """The reduction of a loss call/constructor: `reduction=` (a string, followed through names), or the
    legacy `size_average=`/`reduce=` flags (True/False, followed through `self.x` and parameter defaults);
    `default` when none is given; None when unknown."""
    arg = call_arg(call, "reduction")
    if arg is None:
        if any(a.star for a in call.args):
            return None
        reduce = call_arg(call, "reduce")
        size_average = call_arg(call, "size_average")
        if reduce is not None:
            v = literal_value(index, reduce.value, scope)
            if v is False:
                return "none"
            if v is not True and v is not None:
                return None
        if size_average is not None:
            v = literal_value(index, size_average.value, scope)
            if v is True or v is None:  # None: the legacy default, a mean
                return "mean"
            if v is False:
                return "sum"
            return None
        return default
    if isinstance(arg.value, cst.Attribute) and arg.value.attr.value in ("SUM", "NONE", "SUM_OVER_BATCH_SIZE", "AUTO"):
        return arg.value.attr.value.lower()  # Keras: tf.keras.losses.Reduction.SUM
    v = literal_value(index, arg.value, scope)
    return v if isinstance(v, str) else None


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def literal_value(index: ModuleIndex, expr: Optional[cst.BaseExpression], scope: Scope, depth: int = 0,
                  defaults: bool = True):
    """The Python value of a literal (number, string, True/False/None), followed through names, module
    constants, `self.x` set in `__init__` and (with `defaults`) parameter defaults; UNKNOWN otherwise."""
    if expr is None or depth > 5:
        return UNKNOWN
    if isinstance(expr, (cst.Integer, cst.Float)) or (
            isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus)):
        v = number_value(expr)
        return UNKNOWN if v is None else v
    if isinstance(expr, cst.SimpleString):
        v = expr.evaluated_value
        return v if isinstance(v, str) else UNKNOWN
    if isinstance(expr, cst.Name) and expr.value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[expr.value]
    if isinstance(expr, (cst.Name, cst.Attribute)):
        v, sc = index.resolve(expr, scope)
        if v is not expr:
            return literal_value(index, v, sc, depth + 1, defaults)
        if defaults and isinstance(expr, cst.Name) and not index.values_of(expr.value, scope) \
                and index.is_param(expr.value, scope):
            return literal_value(index, index.param_default(expr.value, scope), index.scope.get(scope), depth + 1)
    return UNKNOWN


def returns_of(index: ModuleIndex, fn: cst.FunctionDef) -> List[cst.Return]:
    """The `return <value>` statements of `fn` itself (not of nested functions)."""
    def compute():
        from trainlint.analysis.walk import walk

        out = []
        for node, _ in walk(fn.body):
            if isinstance(node, cst.Return) and node.value is not None and index.scope.get(node) is fn:
                out.append(node)
        return out

    return index.cached(("returns", id(fn)), compute)


def calls_by_name(index: ModuleIndex):
    """Every call of the module keyed by the last name of what it calls (`f(...)`, `self.f(...)`)."""
    def compute():
        out = {}
        for call in index.calls:
            func = call.func
            name = func.value if isinstance(func, cst.Name) else func.attr.value if isinstance(func, cst.Attribute) else None
            if name:
                out.setdefault(name, []).append(call)
        return out

    return index.cached("calls_by_name", compute)


def param_values(index: ModuleIndex, name: str, fn: Scope):
    """[(value, scope)] that parameter `name` of `fn` receives: the arguments of the module's calls of
    `fn` (`f(...)`, or `self.f(...)` for a method), and its default where a call leaves it out."""
    if not isinstance(fn, cst.FunctionDef):
        return []
    params = [*fn.params.posonly_params, *fn.params.params]
    is_method = index._owner_class(fn) is not None
    if is_method:
        params = params[1:]
    positions = {p.name.value: i for i, p in enumerate(params)}
    default = index.param_default(name, fn)
    owner = index._owner_class(fn) if is_method else None
    if owner is not None and fn.name.value == "__init__":  # Net(...) calls Net.__init__
        calls = calls_by_name(index).get(owner.name.value, [])
    else:
        calls = [c for c in calls_by_name(index).get(fn.name.value, []) if _calls_it(index, c, fn, is_method)]
    out = []
    for call in calls:
        arg = call_arg(call, name, positions.get(name))
        if arg is None:
            if any(a.star for a in call.args):
                return []  # passed through *args/**kwargs: unknown
            if default is not None:
                out.append((default, index.scope.get(fn)))
            continue
        out.append((arg.value, index.scope.get(call)))
    if not out and default is not None:
        out.append((default, index.scope.get(fn)))
    return out


def _calls_it(index: ModuleIndex, call: cst.Call, fn: cst.FunctionDef, is_method: bool) -> bool:
    """`f(...)` for a function, `self.f(...)` from the same class for a method."""
    func = call.func
    if is_method:
        return isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) \
            and func.value.value == "self" and index.cls_of.get(call) is index.cls_of.get(fn)
    return isinstance(func, cst.Name)
