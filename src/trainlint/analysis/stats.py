"""Statistics computed from data: is this value a standard deviation of a tensor or array, unguarded?

`std_source(index, expr)` returns the call that computes the standard deviation `expr` holds, when
`expr` is (directly, through a local name's reaching assignment, or a `self.x` bound once in the module):

- `x.std(...)`, `torch.std(x)`, `np.std(x)`, `np.nanstd(x)`, `tf.math.reduce_std(x)`, pandas `df.std()`;
- `x.var(...).sqrt()`, `torch.sqrt(x.var(...))`, `np.sqrt(np.var(x))`, `x.var() ** 0.5`.

Anything else (`std + eps`, `std.clamp(min=eps)`, `np.maximum(std, eps)`, `torch.where(...)`, a
constant, a parameter) is not a bare standard deviation, and the answer is None. `guarded(index, expr)`
says whether the code repairs a std in place before use: `std[std == 0] = 1`, `std.clamp_(min=eps)`,
`std += eps`, a comparison of it with something (`if (std == 0).any()`, `assert std > 0`,
`np.where(std == 0, 1, std)`), anywhere in the same function (for `self.x`: anywhere in the module).

`only_in_correlation(index, div)` says whether the value a standardisation computes is only used inside
correlation statistics (every use a factor of a product with another standardised value, averaged or
summed: `mean(zx * zy)`), where NaN for a constant series is the defined answer, not a bug.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import ModuleIndex, method_name, receiver
from trainlint.analysis.reaching import binds, bound_value, reaching_value, statement_of
from trainlint.analysis.walk import walk

_STD_FUNCS = {"std", "nanstd", "reduce_std"}
_VAR_FUNCS = {"var", "nanvar", "reduce_variance"}
STD_FUNCTIONS, VAR_FUNCTIONS = frozenset(_STD_FUNCS), frozenset(_VAR_FUNCS)  # for the rule's gate
_MODULES = ("torch", "numpy", "np", "tensorflow", "tf", "tf.math", "tensorflow.math", "jax.numpy", "jnp")


def _std_call(index: ModuleIndex, call: cst.Call, names=_STD_FUNCS) -> bool:
    m = method_name(call)
    q = index.callee(call) or ""
    mod, _, last = q.rpartition(".")
    if last in names and mod in _MODULES:
        return True
    if m in names and last == m:
        recv = receiver(call)
        rq = index.qualify(recv) if recv is not None else None
        return not (rq and rq.split(".")[0] in ("torch", "np", "numpy", "tf", "tensorflow", "statistics", "math",
                                                 "self"))
    return False


def std_source(index: ModuleIndex, expr: cst.BaseExpression, depth: int = 0) -> Optional[cst.Call]:
    """The data-derived standard deviation `expr` holds, unguarded (see the module docstring), else None."""
    if depth > 4:
        return None
    if isinstance(expr, cst.Name):
        v = reaching_value(index, expr)
        return std_source(index, v, depth + 1) if v is not None else None
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        v = bound_value(index, expr)
        return std_source(index, v, depth + 1) if v is not None else None
    if isinstance(expr, cst.Call):
        if _std_call(index, expr):
            return expr
        # sqrt of a variance
        m = method_name(expr)
        q = index.callee(expr) or ""
        if m == "sqrt" and not expr.args and isinstance(expr.func, cst.Attribute):
            inner = expr.func.value
            if isinstance(inner, cst.Call) and _std_call(index, inner, _VAR_FUNCS):
                return expr
        if q.rsplit(".", 1)[-1] == "sqrt" and q.rpartition(".")[0] in _MODULES + ("math",) and len(expr.args) == 1:
            inner = expr.args[0].value
            if isinstance(inner, cst.Call) and _std_call(index, inner, _VAR_FUNCS):
                return expr
        return None
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Power) \
            and number_value(expr.right) == 0.5 and isinstance(expr.left, cst.Call) \
            and _std_call(index, expr.left, _VAR_FUNCS):
        return expr.left
    return None


def guarded(index: ModuleIndex, expr: cst.BaseExpression) -> bool:
    """Is the std named by `expr` (a local name or `self.x`) repaired or checked somewhere in its scope?"""
    if isinstance(expr, cst.Name):
        scope = index.scope.get(expr)
        root: cst.CSTNode = scope.body if scope is not None else index.module  # type: ignore[union-attr]
        want = lambda e: isinstance(e, cst.Name) and e.value == expr.value  # noqa: E731
    elif isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        root = index.module
        attr = expr.attr.value
        want = lambda e: isinstance(e, cst.Attribute) and e.attr.value == attr and \
            isinstance(e.value, cst.Name) and e.value.value == "self"  # noqa: E731
    else:
        return False
    for node, _ in walk(root):
        if isinstance(node, cst.Assign):
            for t in node.targets:
                if isinstance(t.target, cst.Subscript) and want(t.target.value):
                    return True  # std[std == 0] = 1
        elif isinstance(node, cst.AugAssign) and want(node.target):
            return True  # std += eps
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and want(node.func.value) \
                and node.func.attr.value.endswith("_") and not node.func.attr.value.startswith("_"):
            return True  # std.clamp_(min=eps), std.add_(eps)
        elif isinstance(node, cst.Comparison) and (want(node.left) or any(want(c.comparator)
                                                                          for c in node.comparisons)):
            return True  # if (std == 0).any(), assert std > 0, np.where(std == 0, 1, std)
    return False


def centred(index: ModuleIndex, expr: cst.BaseExpression, depth: int = 0) -> bool:
    """Is `expr` a difference (`x - mean`, `x.sub(mean)`), directly or through a local name?"""
    if depth > 3:
        return False
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Subtract):
        return True
    if isinstance(expr, cst.Call) and method_name(expr) in ("sub", "subtract") and expr.args:
        return True
    if isinstance(expr, cst.Call) and (index.callee(expr) or "").rsplit(".", 1)[-1] == "subtract" and expr.args:
        return True
    if isinstance(expr, cst.Name):
        v = reaching_value(index, expr)
        return v is not None and centred(index, v, depth + 1)
    return False


# -- correlation statistics -----------------------------------------------------------------------
# A Pearson correlation standardises two series and averages their product: mean(zx * zy). Its
# `/ std` is not a normalisation of data that a model or a loss then consumes; the result is a statistic
# of the data, and for a constant series it is undefined, so NaN is its defined value (scipy.stats.pearsonr
# and numpy.corrcoef give NaN too). `only_in_correlation` recognises that use from the data flow alone.

_REDUCTIONS = {"mean", "sum", "nanmean", "nansum", "average", "reduce_mean", "reduce_sum"}
_FACTOR_OPS = (cst.Multiply, cst.Divide)


def standardised(index: ModuleIndex, expr: cst.BaseExpression, depth: int = 0) -> bool:
    """Is `expr` a centred value (`y - y.mean()`) or one divided by a std (`(y - my) / y.std()`, guarded
    or not), directly or through a local name?"""
    if depth > 3:
        return False
    if isinstance(expr, cst.Name):
        v = reaching_value(index, expr)
        if v is None:
            return _divided_in_place(index, expr)
        return standardised(index, v, depth + 1)
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Divide):
        return centred(index, expr.left) and _a_std(index, expr.right)
    return centred(index, expr)


def _divided_in_place(index: ModuleIndex, name: cst.Name) -> bool:
    """Is the last binding of `name` before this read, in the same block, `name /= <a std>`?"""
    stmt = statement_of(index, name)
    block = index.parent.get(stmt) if stmt is not None else None
    body = list(getattr(block, "body", ()))
    i = next((k for k, s in enumerate(body) if s is stmt), None)
    if i is None:
        return False
    for s in reversed(body[:i]):
        if not binds(s, name.value):
            continue
        last = s.body[-1] if isinstance(s, cst.SimpleStatementLine) and s.body else None
        return isinstance(last, cst.AugAssign) and isinstance(last.operator, cst.DivideAssign) \
            and isinstance(last.target, cst.Name) and last.target.value == name.value and _a_std(index, last.value)
    return False


def _a_std(index: ModuleIndex, expr: cst.BaseExpression) -> bool:
    """A std, bare or guarded (`s`, `x.std()`, `x.std() + eps`, `np.maximum(x.std(), eps)`, `s.clamp(...)`)."""
    if std_source(index, expr) is not None:
        return True
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
        return std_source(index, expr.left) is not None or std_source(index, expr.right) is not None
    if isinstance(expr, cst.Call):
        if isinstance(expr.func, cst.Attribute) and std_source(index, expr.func.value) is not None:
            return True  # x.std().clamp(min=eps)
        return any(std_source(index, a.value) is not None for a in expr.args)  # np.maximum(x.std(), eps)
    return False


def _reduced(index: ModuleIndex, expr: cst.BaseExpression) -> bool:
    """Is `expr` averaged or summed: `torch.mean(expr)`, `np.sum(expr, axis=1)`, `expr.mean()`?"""
    p = index.parent.get(expr)
    if isinstance(p, cst.Arg) and p.keyword is None:
        call = index.parent.get(p)
        if isinstance(call, cst.Call) and call.args and call.args[0] is p:
            last = (index.callee(call) or method_name(call) or "").rsplit(".", 1)[-1]
            return last in _REDUCTIONS
        return False
    if isinstance(p, cst.Attribute) and p.value is expr and p.attr.value in _REDUCTIONS:
        call = index.parent.get(p)
        return isinstance(call, cst.Call) and call.func is p
    return False


def _correlation_use(index: ModuleIndex, use: cst.BaseExpression) -> bool:
    """Is `use` a factor of a product with another standardised value, and that product averaged or summed?
    Further factors and divisions (`zx * zy / n`) may sit in between."""
    node: cst.BaseExpression = use
    partner = False
    while True:
        p = index.parent.get(node)
        if not isinstance(p, cst.BinaryOperation) or not isinstance(p.operator, _FACTOR_OPS):
            break
        if isinstance(p.operator, cst.Divide) and p.left is not node:
            return False  # `n / z`: not a product
        other = p.right if p.left is node else p.left
        if isinstance(p.operator, cst.Multiply) and standardised(index, other):
            partner = True
        node = p
    return partner and _reduced(index, node)


def _reads(index: ModuleIndex, name: str, stmt: cst.CSTNode, value: cst.CSTNode):
    """The reads of local `name` in the scope of `stmt`, outside `stmt`, that may see the value it binds:
    those after it (or anywhere in a loop around it) whose reaching value is `value`, or cannot be told."""
    scope = index.scope.get(stmt)
    root: cst.CSTNode = scope.body if scope is not None else index.module  # type: ignore[union-attr]
    inside = {id(node) for node, _ in walk(stmt)}
    loops = []  # the loops around `stmt` in its scope: a read earlier in one of them sees the next iteration
    node = index.parent.get(stmt)
    while node is not None and node is not root:
        if isinstance(node, (cst.For, cst.While)):
            loops.append(node)
        node = index.parent.get(node)
    in_loop = {id(n) for loop in loops for n, _ in walk(loop)}
    after = False
    for node, par in walk(root):
        if node is stmt:
            after = True
        if not isinstance(node, cst.Name) or node.value != name or id(node) in inside:
            continue
        if not after and id(node) not in in_loop:
            continue  # read before the value exists
        if isinstance(par, (cst.AssignTarget, cst.Param, cst.For, cst.CompFor, cst.ImportAlias, cst.AsName,
                            cst.FunctionDef, cst.ClassDef)):
            continue
        if isinstance(par, cst.Attribute) and par.attr is node:
            continue
        if isinstance(par, cst.Arg) and par.keyword is node:
            continue
        v = reaching_value(index, node)
        if v is None or v is value:
            yield node


def only_in_correlation(index: ModuleIndex, div: cst.CSTNode) -> bool:
    """Is the standardised value that `div` (`(x - mx) / sx`, or `x /= sx`) computes used only inside
    correlation statistics: every use a factor of a product with another standardised value, averaged
    or summed (`mean(zx * zy)`)? A use that escapes (returned, stored on `self`, passed to a model or a
    loss, compared, subtracted) makes it a normalisation."""
    p = index.parent.get(div)
    if isinstance(div, cst.AugAssign):
        name, stmt = div.target, div
    elif isinstance(p, cst.Assign) and p.value is div and len(p.targets) == 1:
        name, stmt = p.targets[0].target, p
    else:
        return _correlation_use(index, div)  # written in place: `((x - mx) / sx * zy).mean()`
    if not isinstance(name, cst.Name):
        return False  # `self.z = ...`, `out[i] = ...`: stored for others
    uses = list(_reads(index, name.value, stmt, div))
    return bool(uses) and all(_correlation_use(index, u) for u in uses)
