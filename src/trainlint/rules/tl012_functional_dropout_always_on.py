"""TL012 functional-dropout-always-on: dropout in a module that `model.eval()` does not switch off.

`torch.nn.functional.dropout(x, p)` defaults to `training=True`: unlike `nn.Dropout`, it does not follow
the module's mode, so it keeps dropping activations at evaluation and inference. The same holds for
`F.dropout1d/2d/3d`, `F.alpha_dropout`, `F.feature_alpha_dropout`, for
`F.scaled_dot_product_attention(..., dropout_p=...)` with a rate that does not depend on
`self.training`, and for an `nn.Dropout(...)` created inside `forward` (a fresh module is in training
mode every call).

Reported inside methods of nn.Module classes (see `analysis/modules.py`) only: a plain function cannot
know the mode. Calls that pass `training=` (any value: `training=True` is deliberate Monte Carlo
dropout), pass `**kwargs`, or use a rate of literal 0 are left alone.
"""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import call_arg
from trainlint.analysis.modules import enclosing_method, inference_only, mode_guarded, module_classes, self_name
from trainlint.analysis.walk import walk
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL012"
# a dropout call or construction (or SDPA), in a file with a class
PREFILTER = (("ropout", "scaled_dot_product_attention"), ("class ",),
             re.compile(r"[Dd]ropout\w*\s*\(|scaled_dot_product_attention|import[^\n]*[Dd]ropout"))

# functional dropouts: name -> position of `p` (training is the next positional argument)
FUNCTIONAL = {"dropout": 1, "dropout1d": 1, "dropout2d": 1, "dropout3d": 1, "alpha_dropout": 1,
              "feature_alpha_dropout": 1}
MODULE_DROPOUTS = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
_FUNCTIONAL_CALLS = frozenset(FUNCTIONAL) | {"scaled_dot_product_attention"}
_FUNCTIONAL_PREFIXES = ("torch.nn.functional.", "F.", "nn.functional.")


def gate(facts: ModuleFacts, options) -> bool:
    """A functional dropout or scaled_dot_product_attention called in a method whose name does not say
    training, or a dropout module built in a `forward`."""
    for name in _FUNCTIONAL_CALLS:
        if any(method and "train" not in fn.lower() for fn, method in facts.call_owners.get(name, ())):
            return True
    return any(fn == "forward" for name in MODULE_DROPOUTS for fn, _ in facts.call_owners.get(name, ()))



def check(ctx: RuleContext) -> None:
    index = ctx.index
    classes = module_classes(index)
    for call in index.calls:
        q = index.callee(call)
        if not q:
            continue
        last = q.rsplit(".", 1)[-1]
        kind = None
        if last in FUNCTIONAL and q.startswith(_FUNCTIONAL_PREFIXES):
            kind = "functional"
        elif last == "scaled_dot_product_attention" and q.startswith(_FUNCTIONAL_PREFIXES):
            kind = "sdpa"
        elif last in MODULE_DROPOUTS and q.startswith(("torch.nn.", "nn.")):
            kind = "module"
        if kind is None:
            continue
        method = enclosing_method(index, call)
        if method is None or not classes.is_module(index.cls_of.get(method)):
            continue
        me = self_name(method)
        if me is None or inference_only(index, method) or "train" in method.name.value.lower():
            continue  # static methods cannot see the mode; no_grad methods only sample (noise dropout);
            # training_step and other training-only methods are always in training
        if any(a.star for a in call.args) or mode_guarded(index, call, method):
            continue
        if kind == "functional":
            _check_functional(ctx, call, last, me)
        elif kind == "sdpa":
            _check_sdpa(ctx, call, method, me)
        elif method.name.value == "forward" and not _lazy_init(index, call, method):
            ctx.report(
                call,
                f"`{index.code(call.func).strip()}` is built inside `forward`: a new module is in training mode "
                "on every call, so `model.eval()` never switches this dropout off.",
            )


def _lazy_init(index, call: cst.Call, method: cst.FunctionDef) -> bool:
    """`if self.drop is None: self.drop = nn.Dropout(p)`: built once, then registered and following the
    module's mode."""
    parent = index.parent.get(call)
    if not (isinstance(parent, cst.Assign) and any(isinstance(t.target, cst.Attribute) for t in parent.targets)):
        return False
    node = parent
    while node is not None and node is not method:
        if isinstance(node, cst.If):
            return True
        node = index.parent.get(node)
    return False


def _check_functional(ctx: RuleContext, call: cst.Call, name: str, me: str) -> None:
    pos = FUNCTIONAL[name]
    if call_arg(call, "training", pos + 1) is not None:
        return
    p = call_arg(call, "p", pos)
    if p is not None and number_value(p.value) == 0:
        return
    fix = None
    edit = ctx.insert_after_last_arg(call, f", training={me}.training")
    if edit is not None:
        fix = ctx.fix("unsafe", f"Pass training={me}.training", edit)
    ctx.report(
        call,
        f"`{ctx.index.code(call.func).strip()}` without `training=` stays on in eval mode (functional dropout "
        f"defaults to training=True); pass `training={me}.training`.",
        fix=fix,
    )


def _check_sdpa(ctx: RuleContext, call: cst.Call, method: cst.FunctionDef, me: str) -> None:
    arg = call_arg(call, "dropout_p", 4)
    if arg is None or _depends_on_mode(ctx, arg.value, method, me, 0):
        return
    value = number_value(arg.value)
    if value == 0:
        return
    ctx.report(
        arg.value,
        f"`dropout_p` of `scaled_dot_product_attention` does not depend on `{me}.training`, so attention "
        f"dropout stays on in eval mode; use `dropout_p=... if {me}.training else 0.0`.",
        fix=_sdpa_fix(ctx, arg, me),
    )


def _depends_on_mode(ctx: RuleContext, expr: cst.BaseExpression, method: cst.FunctionDef, me: str,
                     depth: int) -> bool:
    """Does the rate mention `training` (directly, or through a local name assigned in the method)? An
    unknown non-literal rate counts as depending: silence rather than a guess."""
    if depth > 3:
        return True
    for node, _ in walk(expr):
        if isinstance(node, cst.Name) and node.value == "training":
            return True
        if isinstance(node, cst.Attribute) and node.attr.value == "training":
            return True
    if isinstance(expr, cst.Name):
        values = ctx.index.values_of(expr.value, method) if method in ctx.index.assigns else []
        if values:
            return any(not isinstance(v, cst.BaseExpression) or _depends_on_mode(ctx, v, method, me, depth + 1)
                       for v in values)
        return True  # a parameter or a name from elsewhere
    if isinstance(expr, cst.Attribute):
        # `self.dropout_p`: a rate attribute; it depends on the mode only if the module assigns it from
        # something that mentions training (or changes it in train()/eval() overrides).
        vals = ctx.index.attr_assigns.get(expr.attr.value, [])
        return len(vals) != 1 or _mentions_training(vals[0])
    return number_value(expr) is None and not isinstance(expr, cst.BinaryOperation)


def _mentions_training(expr) -> bool:
    if not isinstance(expr, cst.CSTNode):
        return True
    return any(isinstance(n, (cst.Name, cst.Attribute)) and (getattr(n, "value", None) == "training" or
                                                           isinstance(n, cst.Attribute) and n.attr.value == "training")
               for n, _ in walk(expr))


def _sdpa_fix(ctx: RuleContext, arg: cst.Arg, me: str) -> Optional[object]:
    if arg.keyword is None:
        return None
    text = ctx.index.code(arg.value).strip()
    if "\n" in text:
        return None
    wrapped = text if isinstance(arg.value, (cst.Name, cst.Attribute, cst.Integer, cst.Float)) else f"({text})"
    return ctx.fix("unsafe", f"Use `{wrapped} if {me}.training else 0.0`",
                   ctx.replace(arg.value, f"{wrapped} if {me}.training else 0.0"))
