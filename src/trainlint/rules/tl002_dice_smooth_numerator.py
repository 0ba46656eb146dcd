"""TL002 dice-smooth-numerator: the same smoothing term in numerator and denominator of an overlap ratio.

`1 - (2*inter + smooth) / (denom + smooth)`: when a batch (or an image) has an empty target and the
network predicts nothing, the ratio is smooth/smooth = 1, a "perfect" score with no gradient, and with
a large smooth the loss surface flattens so that training collapses (MONAI issue, field report
`monai-dice-smooth-instability`). With the term only in the denominator it is stable.

The rule looks at every division whose numerator (after following local assignments) is an overlap
(a product of two tensors, a sum of one, or a name like `inter`/`tp`) plus a term, and whose
denominator adds the same term to other terms. The term must look like a constant (a number, a name or
attribute such as `self.smooth`); numerators and denominators with different terms (`smooth_nr`,
`smooth_dr`) are left alone, as are ratios that are not overlaps (`(mean + eps) / (std + eps)`).
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

import libcst as cst

from trainlint.analysis.expr import Resolver, additive_terms, is_number, is_smoothing_term, is_sum
from trainlint.analysis.index import method_name
from trainlint.context import RuleContext
from trainlint.rules import starts_a_word
from trainlint.diagnostics import Edit
from trainlint.analysis.gate import ModuleFacts, contains, is_sum as is_sum_node

CODE = "TL002"
# A division, and a word that names a smoothing term or an overlap (not `tp` in `http`, `inter` in
# `interpolate`).
PREFILTER = (("/",),)
_WORDS = re.compile(r"smooth|eps\b|epsilon|dice|tversky|jaccard|iou\b|overlap|intersect|inter\b|tp\b|true_?pos")


def prefilter(text: str, options) -> bool:
    """A word of a Dice/IoU ratio or of its smoothing (`smooth`, `eps`, `dice`, `iou`, `inter`, `tp`...) starts
    a word somewhere, in any case."""
    return starts_a_word(_WORDS, text.lower())


def gate(facts: ModuleFacts, options) -> bool:
    """A ratio whose numerator and denominator may both be sums (`(2 * inter + s) / (a + b + s)`, the
    sums maybe held by names assigned elsewhere in the module)."""
    return any(not aug and facts.may_be(num, _has_sum, scope) and facts.may_be(den, _has_sum, scope)
               for num, den, aug, scope in facts.divisions)


def _has_sum(expr) -> bool:
    return contains(expr, is_sum_node)


def check(ctx: RuleContext) -> None:
    index = ctx.index
    for div in index.divisions:
        if not isinstance(div, cst.BinaryOperation):
            continue
        scope = index.scope.get(div)
        res = Resolver(index, scope)
        num_node = _owner_sum(div.left, res)
        den = div.right
        if isinstance(den, (cst.Name, cst.Attribute)):
            den = res.value(den)
        den_node = _owner_sum(_unclamped(index, den), res)
        if num_node is None or den_node is None:
            continue
        if not _reaches_a_loss(index, div):
            continue
        num_terms = additive_terms(num_node, added_only=True)
        den_terms = _expanded(additive_terms(den_node), res)
        if len(num_terms) < 2 or len(den_terms) < 2:
            continue
        den_codes = {index.code(t).strip() for t in _expanded(additive_terms(den_node, added_only=True), res, True)}
        for term in num_terms:
            code = index.code(term).strip()
            if code not in den_codes or not is_smoothing_term(term):
                continue
            others = [t for t in num_terms if t is not term]
            if not any(res.is_overlap(t) for t in others):
                continue
            if not any(index.code(t).strip() != code for t in den_terms):
                continue
            ctx.report(
                div,
                f"`{code}` is in both the numerator and the denominator of this Dice/IoU ratio, so an empty "
                "target with an empty prediction scores a perfect 1 and predicting nothing is rewarded",
                fix=_fix(ctx, num_node, term),
            )
            break


_CLAMP_METHODS = {"clamp", "clamp_min", "clip", "clamp_"}
_CLAMP_FUNCS = {"clamp", "clip", "maximum", "max", "clamp_min"}


def _unclamped(index, expr: cst.BaseExpression) -> cst.BaseExpression:
    """`(den + s).clamp_min(eps)`, `torch.clip(den + s, 1e-8)`, `K.maximum(den + s, eps)` -> `den + s`
    (the clamp bound alone is not a smoothing term in the numerator's sense)."""
    if isinstance(expr, cst.Call):
        m = method_name(expr)
        recv = expr.func.value if isinstance(expr.func, cst.Attribute) else None
        module_func = isinstance(recv, (cst.Name, cst.Attribute)) and (
            (index.qualify(recv) or "").split(".")[0] in ("torch", "tensorflow", "numpy", "keras", "jax"))
        if m in _CLAMP_METHODS and recv is not None and not module_func:
            return recv
        last = (index.callee(expr) or "").rsplit(".", 1)[-1]
        if last in _CLAMP_FUNCS and expr.args:
            sums = [a.value for a in expr.args[:2] if is_sum(a.value)]
            if len(sums) == 1:
                return sums[0]
    return expr


_METRIC_NAME = re.compile(r"score|metric|coef|(^|_)acc(uracy)?($|_)|eval|measure|(^|_)(precision|recall|sensitivity|"
                          r"specificity|f1)($|_)", re.IGNORECASE)
_LOSS_NAME = re.compile(r"loss|criterion|objective", re.IGNORECASE)


def _reaches_a_loss(index, div: cst.CSTNode) -> bool:
    """Evaluation metrics may smooth both sides (empty vs empty scores 1) and take no gradient. A ratio
    inside a function or class named like a metric (`dice_score`, `DSCMetric`, `dice_coef`) is only
    reported when the module uses that function as a loss: passes it as `loss=`, calls it from a
    function or class named like a loss, or negates it (`1 - dice_coef(...)`, `-dice_coef(...)`)."""
    owners = []
    fn = index.scope.get(div)
    if fn is not None and isinstance(fn, cst.FunctionDef):
        owners.append(fn.name.value)
    klass = index.cls_of.get(div)
    if klass is not None:
        owners.append(klass.name.value)
    if not owners or any(_LOSS_NAME.search(o) for o in owners):
        return True
    metric_like = [o for o in owners if _METRIC_NAME.search(o)]
    if not metric_like:
        return True
    for call in index.calls:
        name = call.func.value if isinstance(call.func, cst.Name) else (
            call.func.attr.value if isinstance(call.func, cst.Attribute) else None)
        if name in metric_like:
            user = index.scope.get(call)
            user_names = [getattr(getattr(user, "name", None), "value", "")]
            k = index.cls_of.get(call)
            if k is not None:
                user_names.append(k.name.value)
            if any(_LOSS_NAME.search(n or "") for n in user_names):
                return True
            p = index.parent.get(call)
            if isinstance(p, cst.UnaryOperation) and isinstance(p.operator, cst.Minus):
                return True
            if isinstance(p, cst.BinaryOperation) and isinstance(p.operator, cst.Subtract) and p.right is call:
                return True
        for arg in call.args:
            if arg.keyword is not None and arg.keyword.value == "loss" and isinstance(arg.value, cst.Name) \
                    and arg.value.value in metric_like:
                return True
    return False


def _expanded(terms, res: Resolver, added_only: bool = False):
    """Terms with local names that hold sums replaced by their own terms (`b = sp + s; c = st + s;
    2 * a / (b + c)`)."""
    out = []
    for t in terms:
        if isinstance(t, (cst.Name, cst.Attribute)):
            v = res.value(t)
            if v is not t and is_sum(v):
                out.extend(additive_terms(v, added_only))
                continue
        out.append(t)
    return out


def _owner_sum(expr: cst.BaseExpression, res: Resolver) -> Optional[cst.BaseExpression]:
    """The additive expression behind `expr`: itself, the single value of a local name, or the sum in
    `2 * (a + s)`."""
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Multiply):
        if is_number(expr.left):
            return _owner_sum(expr.right, res)
        if is_number(expr.right):
            return _owner_sum(expr.left, res)
        return None
    if is_sum(expr):
        return expr
    if isinstance(expr, (cst.Name, cst.Attribute)):
        v = res.value(expr)
        if is_sum(v):
            return v
    return None


def _fix(ctx: RuleContext, num: cst.BaseExpression, term: cst.BaseExpression):
    found = _parent_sum(num, term)
    if found is None:
        return None
    binop, other = found
    # Edit the smallest range (` + smooth`, or `smooth + `), never re-render the overlap: its layout stays.
    # Positions exclude a node's own parentheses, so they stay around the shortened numerator.
    start, end = ctx.range(binop)
    if binop.left is other:
        edit = Edit("", ctx.end_with_parens(other), end)
    elif not other.lpar:
        edit = Edit("", start, ctx.range(other)[0])
    else:
        edit = ctx.replace(binop, ctx.index.code(other).strip())
    return ctx.fix("unsafe", f"Remove `{ctx.index.code(term).strip()}` from the numerator", edit)


def _parent_sum(node: cst.BaseExpression, term) -> Optional[Tuple[cst.BinaryOperation, cst.BaseExpression]]:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
        if node.right is term:
            return node, node.left
        if node.left is term:
            return node, node.right
        return _parent_sum(node.left, term) or _parent_sum(node.right, term)
    return None
