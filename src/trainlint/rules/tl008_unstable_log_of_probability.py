"""TL008 unstable-log-of-probability: the log of a softmax or sigmoid output, and BCELoss on a sigmoid.

A softmax or sigmoid output underflows to exactly 0 (float32 below about 1e-38, float16 below 6e-8) as
soon as a logit is far from the others, and `log(0)` is -inf: the loss is Inf and its gradient NaN, the
first cause of NaN losses in the field report `nan-loss-causes-zh`. `log_softmax` and `logsigmoid`
compute the same values without forming the probability and never produce -inf.

The rule reports, by the facts of `analysis.activations`:

- `torch.log(p)`, `p.log()`, `tf.math.log(p)`, `K.log(p)` where `p` is a softmax or sigmoid output
  (inline, through local names, or a model of this module that returns one), and `log(1 - p)` for a
  sigmoid output (that is `logsigmoid(-x)`);
- `F.binary_cross_entropy`/`nn.BCELoss` fed a sigmoid output (warning: PyTorch clamps its log at -100,
  so this saturates rather than going NaN, and autocast refuses it).

Silent when the probability is guarded (`p + eps`, `p.clamp(min=eps)`, `torch.clamp(...)`), on
`log_softmax`/`logsigmoid`, on NumPy logs, and on values not known to be probabilities.
"""

from __future__ import annotations

import ast
import re
from typing import List, Optional

import libcst as cst

from trainlint.analysis.activations import SIGMOID, SOFTMAX, activation_function, activation_of, log_argument
from trainlint.analysis.expr import number_value
from trainlint.analysis.filekind import is_test_file
from trainlint.analysis.index import method_name
from trainlint.analysis.names import dotted
from trainlint.analysis.lossfns import BCE, loss_call
from trainlint.context import RuleContext
from trainlint.diagnostics import Edit
from trainlint.analysis.gate import ModuleFacts, root


CODE = "TL008"
PREFILTER = (re.compile(r"log_?\s*\(|BCELoss|binary_cross_entropy"), ("softmax", "sigmoid", "Softmax", "Sigmoid", "expit"))


def gate(facts: ModuleFacts, options) -> bool:
    """A softmax or sigmoid is applied in this module (called, or a Keras `activation="softmax"`), and a
    differentiable log (not NumPy's, math's or a logger's) or a BCE loss is called."""
    if not any(w in n.lower() for n in facts.calls | facts.strings for w in ("softmax", "sigmoid", "expit")):
        return False
    if facts.calls_any(("binary_cross_entropy", "BCELoss")):
        return True
    return any(_tensor_log(call) for name in ("log", "log_") for call in facts.call_nodes.get(name, ()))


def _tensor_log(call: ast.Call) -> bool:
    """Can `log_argument` take this call? `torch.log(p)`, `p.log()`, an imported `log(p)`; not `np.log(x)`,
    `math.log(x)`, `self.log("loss", v)` (Lightning) or `logger.log(...)`."""
    if not isinstance(call.func, ast.Attribute):
        return True
    base = root(call.func.value)
    if call.args:
        return base not in _NOT_TENSOR_LOG
    return base not in _NOT_TENSOR_LOG + ("torch", "tf", "tensorflow")


_NOT_TENSOR_LOG = ("np", "numpy", "math", "cmath", "scipy", "logging", "logger", "log", "self", "jnp", "sympy")

_RENAMEABLE = ("torch", "torch.nn.functional", "F", "nn.functional", "torch.special", "tf.nn", "tensorflow.nn",
               "tf.math", "tensorflow.math")


def check(ctx: RuleContext) -> None:
    index = ctx.index
    # Unit tests compute reference losses with the textbook formula on purpose, on small fixed inputs.
    in_test = is_test_file(ctx.filename)
    for call in index.calls:
        arg = log_argument(index, call)
        if arg is not None:
            if not in_test:
                _check_log(ctx, call, arg)
            continue
        lc = loss_call(index, call)
        if lc is not None and lc.kind == BCE and lc.input is not None and activation_of(index, lc.input) == SIGMOID:
            ctx.report(
                call,
                "BCELoss on a sigmoid output saturates (a confident wrong prediction gets no gradient); pass the "
                "logits to BCEWithLogitsLoss instead",
                fix=_bce_fix(ctx, lc),
                severity="warning",
            )


def _check_log(ctx: RuleContext, call: cst.Call, arg: cst.BaseExpression) -> None:
    index = ctx.index
    act = activation_of(index, arg)
    if act == SOFTMAX:
        ctx.report(call, "The log of a softmax is -inf (and its gradient NaN) once a probability underflows "
                         "to 0; use log_softmax", fix=_log_fix(ctx, call, arg, "log_softmax"))
    elif act == SIGMOID:
        ctx.report(call, "The log of a sigmoid is -inf (and its gradient NaN) once the sigmoid underflows "
                         "to 0; use logsigmoid", fix=_logsigmoid_fix(ctx, call, arg, negate=False))
    elif (isinstance(arg, cst.BinaryOperation) and isinstance(arg.operator, cst.Subtract)
          and number_value(arg.left) == 1 and activation_of(index, arg.right) == SIGMOID):
        ctx.report(call, "log(1 - sigmoid(x)) is -inf (and its gradient NaN) once the sigmoid rounds to 1; "
                         "use logsigmoid(-x)", fix=_logsigmoid_fix(ctx, call, arg.right, negate=True))


# -- fixes ---------------------------------------------------------------------------------------
# Fixes edit around the kept expression (never re-render it), so its own layout and comments stay.


def _wrap(ctx: RuleContext, outer: cst.CSTNode, inner: cst.CSTNode, prefix: str, suffix: str) -> List[Edit]:
    """Replace the text of `outer` before `inner` with `prefix`, and after it with `suffix`."""
    o_start, o_end = ctx.range(outer)
    i_start, i_end = ctx.range(inner)
    edits = [Edit(prefix, o_start, i_start), Edit(suffix, i_end, o_end)]
    return [e for e in edits if e.content or e.location != e.end_location]


def _renamable(ctx: RuleContext, act_call: cst.BaseExpression) -> bool:
    """Is this `F.softmax(...)` / `torch.softmax(...)` / `x.softmax(...)`, with a `log_softmax` twin?"""
    if not isinstance(act_call, cst.Call) or not isinstance(act_call.func, cst.Attribute):
        return False
    index = ctx.index
    if activation_function(index, act_call) != SOFTMAX:
        return False
    mod = (index.callee(act_call) or "").rpartition(".")[0]
    head = (dotted(act_call.func.value) or "").split(".")[0]
    if head in index.imports.aliases or head in ("F", "tf", "K"):
        return mod in _RENAMEABLE  # a module's function: K.softmax has no log_softmax twin
    return method_name(act_call) == "softmax"


def _log_fix(ctx: RuleContext, call: cst.Call, arg: cst.BaseExpression, new: str):
    if not _renamable(ctx, arg):
        return None
    edits = _wrap(ctx, call, arg, "", "") + [ctx.replace(arg.func.attr, new)]  # type: ignore[union-attr]
    return ctx.fix("unsafe", f"Use `{new}`", *edits)


def _functional_alias(ctx: RuleContext) -> Optional[str]:
    """How this module spells torch.nn.functional: `F`, `nn.functional`, `torch.nn.functional`."""
    aliases = ctx.index.imports.aliases
    for local, target in aliases.items():
        if target == "torch.nn.functional":
            return local
    if aliases.get("nn") == "torch.nn":
        return "nn.functional"
    if aliases.get("torch") == "torch":
        return "torch.nn.functional"
    return None


def _sigmoid_input(ctx: RuleContext, act_call: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """`x` of an inline `torch.sigmoid(x)` / `F.sigmoid(x)` / `x.sigmoid()` (PyTorch only)."""
    if not isinstance(act_call, cst.Call) or activation_function(ctx.index, act_call) != SIGMOID:
        return None
    q = ctx.index.callee(act_call) or ""
    if q in ("torch.sigmoid", "torch.nn.functional.sigmoid", "F.sigmoid", "torch.special.expit"):
        if len(act_call.args) == 1 and act_call.args[0].keyword is None and not act_call.args[0].star:
            return act_call.args[0].value
        return None
    head = (dotted(act_call.func) or "").split(".")[0]
    if method_name(act_call) == "sigmoid" and not act_call.args and head not in ctx.index.imports.aliases:
        return act_call.func.value  # type: ignore[union-attr]
    return None


_ATOMIC = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)


def _logsigmoid_fix(ctx: RuleContext, call: cst.Call, act_call: cst.BaseExpression, negate: bool):
    x = _sigmoid_input(ctx, act_call)
    fn = _functional_alias(ctx)
    if x is None or fn is None:
        return None
    prefix, suffix = f"{fn}.logsigmoid(", ")"
    if negate:
        prefix, suffix = (prefix + "-", suffix) if isinstance(x, _ATOMIC) else (prefix + "-(", ")" + suffix)
    return ctx.fix("unsafe", "Use `logsigmoid`", *_wrap(ctx, call, x, prefix, suffix))


def _bce_fix(ctx: RuleContext, lc):
    """`F.binary_cross_entropy(torch.sigmoid(z), y)` -> `F.binary_cross_entropy_with_logits(z, y)`; the
    same for an inline `nn.BCELoss(...)(...)`. A criterion object built elsewhere is left alone (it may
    have other users)."""
    x = _sigmoid_input(ctx, lc.input)
    if x is None:
        return None
    if lc.ctor is None:
        func = lc.call.func
        if not isinstance(func, cst.Attribute) or func.attr.value != "binary_cross_entropy":
            return None
        edits = [ctx.replace(func.attr, "binary_cross_entropy_with_logits")]
    elif lc.call.func is lc.ctor and isinstance(lc.ctor.func, cst.Attribute) and lc.ctor.func.attr.value == "BCELoss":
        edits = [ctx.replace(lc.ctor.func.attr, "BCEWithLogitsLoss")]
    else:
        return None
    edits += _wrap(ctx, lc.input, x, "", "")
    return ctx.fix("unsafe", "Pass the logits to the with-logits loss", *edits)
