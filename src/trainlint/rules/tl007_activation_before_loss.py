"""TL007 activation-before-loss: an activated value fed to a loss that applies its own activation.

`F.cross_entropy`/`nn.CrossEntropyLoss` apply log_softmax to their input and `BCEWithLogitsLoss` applies
a sigmoid; `NLLLoss` expects log-probabilities. Fed a softmax (or sigmoid) output, the first two squash
values that are already in (0, 1): the loss cannot go below about log(C) - 1 and its gradient shrinks, so
training plateaus (SciCo #2: the loss floored at 0.74). `NLLLoss` on a softmax output computes `-p`
instead of `-log p`, a different and badly scaled objective.

Facts come from `analysis.lossfns` (which loss, which input) and `analysis.activations` (is the input a
softmax/sigmoid output: inline, through local names, an activation module, or a model of this module
whose `forward` returns one on every path). A log_softmax fed to cross-entropy is not reported:
log_softmax is idempotent, so the loss is unchanged.
"""

from __future__ import annotations

from typing import List, Optional

import libcst as cst

from trainlint.analysis.activations import (LOG_SOFTMAX, SIGMOID, SOFTMAX, activation_function, activation_module,
                                             activation_of, keras_model_activation)
from trainlint.analysis.index import call_arg, method_name, receiver
from trainlint.analysis.lossfns import BCE_LOGITS, CROSS_ENTROPY, NLL, loss_call, loss_constructor
from trainlint.analysis.reaching import bound_value
from trainlint.analysis.names import dotted
from trainlint.context import RuleContext
from trainlint.diagnostics import Edit
from trainlint.analysis.gate import ModuleFacts
from trainlint.analysis.lossfns import LOSS_NAMES

CODE = "TL007"
PREFILTER = (("softmax", "sigmoid", "Softmax", "Sigmoid", "expit"),
             ("cross_entropy", "CrossEntropy", "nll_loss", "NLLLoss", "BCEWithLogits", "with_logits", "Crossentropy",
              "crossentropy"))


def gate(facts: ModuleFacts, options) -> bool:
    """A cross-entropy, NLL or with-logits loss is called or built (directly, or in a Keras `compile`)."""
    return facts.calls_any(LOSS_NAMES)


# loss kind -> activations that must not come before it
_DOUBLED = {CROSS_ENTROPY: (SOFTMAX, SIGMOID), BCE_LOGITS: (SIGMOID, SOFTMAX), NLL: (SOFTMAX, SIGMOID)}
_WHAT = {CROSS_ENTROPY: "This cross-entropy applies its own log_softmax",
         BCE_LOGITS: "This with-logits loss applies its own sigmoid"}


def check(ctx: RuleContext) -> None:
    index = ctx.index
    for call in index.calls:
        lc = loss_call(index, call)
        if lc is None or lc.input is None or lc.kind not in _DOUBLED:
            continue
        act = activation_of(index, lc.input)
        if act not in _DOUBLED[lc.kind]:
            continue
        if lc.kind == NLL:
            message = (f"NLLLoss expects log-probabilities, but gets a {act} output, so it computes -p instead "
                       "of -log p; use log_softmax")
            fix = _rename_fix(ctx, lc.input) if act == SOFTMAX else None
        else:
            message = (f"{_WHAT[lc.kind]}, so the {act} output fed to it is activated twice and training "
                       "plateaus; pass the logits")
            fix = _remove_fix(ctx, lc.input)
        ctx.report(call, message, fix=fix)
    for call in index.calls:
        if method_name(call) == "compile" and receiver(call) is not None:
            _check_keras_compile(ctx, call)


def _check_keras_compile(ctx: RuleContext, call: cst.Call) -> None:
    """`model.compile(loss=...(from_logits=True))` on a Keras model whose last layer has the activation."""
    index = ctx.index
    arg = call_arg(call, "loss")
    if arg is None:
        return
    ctor = arg.value if isinstance(arg.value, cst.Call) else bound_value(index, arg.value)
    if not isinstance(ctor, cst.Call):
        return
    kind = loss_constructor(index, ctor)
    if kind not in (CROSS_ENTROPY, BCE_LOGITS):
        return
    act = keras_model_activation(index, receiver(call))
    if act not in _DOUBLED[kind]:
        return
    flag = call_arg(ctor, "from_logits")
    fix = None
    if flag is not None and ctor is arg.value:
        fix = ctx.fix("unsafe", "Set from_logits=False (the model outputs probabilities)",
                      ctx.replace(flag.value, "False"))
    ctx.report(arg.value, f"The model's last layer already applies {act}, but this loss is built with "
                          "from_logits=True and applies it again, so training plateaus; drop the activation "
                          "or set from_logits=False", fix=fix)


def _activation_input(ctx: RuleContext, act_call: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """The logits of an inline activation: `x` of `F.softmax(x, 1)`, `x.softmax(1)`, `self.softmax(x)`."""
    if not isinstance(act_call, cst.Call) or any(a.star for a in act_call.args):
        return None
    index = ctx.index
    if activation_function(index, act_call) is not None:
        head = (dotted(act_call.func) or "").split(".")[0]
        is_module_function = head in index.imports.aliases or head in ("F", "tf", "K", "torch")
        if not is_module_function and isinstance(act_call.func, cst.Attribute):
            return act_call.func.value  # `x.softmax(-1)`
        a = call_arg(act_call, "input", 0) or call_arg(act_call, "logits", 0) or call_arg(act_call, "x", 0)
        return a.value if a is not None else None
    if activation_module(index, act_call.func) is not None and len(act_call.args) == 1 \
            and act_call.args[0].keyword is None:
        return act_call.args[0].value  # `self.softmax(x)`, `nn.Softmax(dim=1)(x)`
    return None


def _remove_fix(ctx: RuleContext, act_call: cst.BaseExpression):
    """Drop an inline activation around the logits (the text of the logits is kept as written)."""
    x = _activation_input(ctx, act_call)
    if x is None:
        return None
    return ctx.fix("unsafe", "Remove the activation and pass the logits", *_wrap(ctx, act_call, x))


def _rename_fix(ctx: RuleContext, act_call: cst.BaseExpression):
    """`F.softmax(x, dim=1)` -> `F.log_softmax(x, dim=1)` for NLLLoss (function and tensor-method forms)."""
    if not isinstance(act_call, cst.Call) or not isinstance(act_call.func, cst.Attribute) \
            or activation_function(ctx.index, act_call) != SOFTMAX or act_call.func.attr.value != "softmax":
        return None
    q = ctx.index.callee(act_call) or ""
    if q.rpartition(".")[0] not in ("torch", "torch.nn.functional", "F", "nn.functional", "torch.special") \
            and (dotted(act_call.func.value) or "").split(".")[0] in ctx.index.imports.aliases:
        return None
    return ctx.fix("unsafe", "Use log_softmax", ctx.replace(act_call.func.attr, LOG_SOFTMAX))


def _wrap(ctx: RuleContext, outer: cst.CSTNode, inner: cst.CSTNode) -> List[Edit]:
    o_start, o_end = ctx.range(outer)
    i_start, i_end = ctx.range(inner)
    edits = [Edit("", o_start, i_start), Edit("", i_end, o_end)]
    return [e for e in edits if e.location != e.end_location]

