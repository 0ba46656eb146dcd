"""TL004 train-loader-drop-last: a training DataLoader keeps the short last batch while the loss scale
depends on the batch size.

When the dataset size is not a multiple of the batch size, the last batch of every epoch is short. If the
loss is a sum over the batch, is divided by a fixed configured batch size, or is averaged twice (TL003),
that batch's loss (and gradient) has a different scale: a spike once per epoch that momentum carries on
(Keras SSD field report; the PyTorch answer there is `drop_last=True`).

A DataLoader is for training when a loop that runs backward() iterates it; when no loop in the module
iterates it, when its name says `train` or it shuffles. Validation/test loaders, mean-reduced losses,
losses divided by the actual batch length (`x.size(0)`) and datasets whose literal size is a multiple of
the literal batch size are left alone.
"""

from __future__ import annotations

import re
from typing import List, Optional

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import ModuleIndex, call_arg, method_name, receiver
from trainlint.analysis.losses import Losses
from trainlint.analysis.batches import dataloader_call, guards_remainder_of_one, trained_model_batchnorm
from trainlint.analysis.training import training_analysis
from trainlint.analysis.walk import walk
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts
from trainlint.analysis.optim import BACKWARD_METHODS

CODE = "TL004"
PREFILTER = (("DataLoader",),)


def gate(facts: ModuleFacts, options) -> bool:
    """A DataLoader (or a `*Loader` class) is built, and it may be a training loader: a loop of this module
    runs backward(), or a loader is shuffled or named for training (a loader no loop iterates is judged by
    those; see the check)."""
    if not ("DataLoader" in facts.names or any(n.endswith("Loader") for n in facts.calls)):
        return False
    if facts.calls_any(BACKWARD_METHODS) or "shuffle" in facts.names or "shuffle" in facts.strings:
        return True
    if any("train" in n.lower() for n in facts.names):
        return True
    return any(len(call.args) > 2 for name in facts.calls if name.endswith("Loader")
               for call in facts.call_nodes.get(name, ()))  # DataLoader(ds, 32, True): shuffled

_EVAL = re.compile(r"val|test|eval|dev|infer|predict|calib", re.IGNORECASE)
_TRAIN = re.compile(r"train", re.IGNORECASE)


def check(ctx: RuleContext) -> None:
    index = ctx.index
    names = ctx.option("batch-size-names", ["batch_size", "bs", "bsz"])
    names = ctx.options.get("TL003", {}).get("batch-size-names", names)
    analysis = training_analysis(index)
    for call in index.calls:
        loader = dataloader_call(index, call)
        if loader is None or loader.drops or loader.batch_sampler:
            continue
        if loader.batch_size == 1:
            continue  # a batch of one every time: no short last batch
        label = _label(index, call)
        loops = _loops_iterating(index, label, index.scope.get(call)) if label else []
        if loops:
            training = [lp for lp in loops if _has_backward(analysis, lp)]
            if not training:
                continue  # iterated only by loops without backward(): evaluation
        else:
            if label and _EVAL.search(label):
                continue
            if not (label and _TRAIN.search(label)) and not loader.shuffles:
                continue
            training = [f.loop for f in analysis.loops() if f.has_backward()]
        if _divisible(index, call):
            continue
        reason = None
        for lp in training:
            reason = _batch_dependence(index, analysis, lp, names, loader.batch_size)
            if reason:
                break
        fix = _fix(ctx, call, loader.drop_arg) if loader.fixable else None
        if reason:
            where, why = reason
            ctx.report(
                call,
                f"training DataLoader{f' `{label}`' if label else ''} keeps the short last batch while the loss "
                f"(line {ctx.range(where)[0].row}) {why}, so that batch's step is larger: a spike once per epoch",
                fix=fix,
            )
            continue
        if loader.subclass_handles or guards_remainder_of_one(index, call):
            continue
        layer = trained_model_batchnorm(index)
        if layer is not None:
            desc, path, line = layer
            where = f" ({_where(ctx, path, line)})" if path else ""
            ctx.report(
                call,
                f"training DataLoader{f' `{label}`' if label else ''} keeps a last batch of one sample when "
                f"len(dataset) % batch_size == 1, which crashes the model's {desc}{where}",
                fix=fix,
                severity="warning",
            )


def _where(ctx: RuleContext, path: str, line: int) -> str:
    import os

    here = os.path.dirname(os.path.abspath(ctx.filename))
    try:
        rel = os.path.relpath(path, here)
    except ValueError:
        rel = path
    if os.path.abspath(path) == os.path.abspath(ctx.filename):
        return f"line {line}"
    return f"{rel}:{line}" if line else rel


def _label(index: ModuleIndex, call: cst.Call) -> Optional[str]:
    p = index.parent.get(call)
    if isinstance(p, cst.Assign) and len(p.targets) == 1:
        return index.code(p.targets[0].target).strip()
    if isinstance(p, (cst.AnnAssign,)):
        return index.code(p.target).strip()
    if isinstance(p, cst.Return):
        fn = index.scope.get(call)
        return getattr(getattr(fn, "name", None), "value", None)
    if isinstance(p, cst.Arg) and p.keyword is not None:
        return p.keyword.value
    return None


def _loops_iterating(index: ModuleIndex, label: str, scope) -> List[cst.For]:
    """Loops over the loader: a local name only in its own scope (a module-level name in every function of
    the module, unless the function binds it too), `self.x` anywhere in the module."""
    local = "." not in label
    out = []
    for loop in index.loops:
        if not isinstance(loop, cst.For):
            continue
        if local and index.scope.get(loop) is not scope and (
                scope is not None or index.assigns.get(index.scope.get(loop), {}).get(label)):
            continue
        for node, _ in walk(loop.iter):
            if isinstance(node, (cst.Name, cst.Attribute)) and index.code(node).strip() == label:
                out.append(loop)
                break
    return out


def _has_backward(analysis, loop) -> bool:
    facts = analysis.facts(loop)
    return facts is not None and facts.has_backward()


def _batch_size_literal(call: cst.Call) -> Optional[float]:
    a = call_arg(call, "batch_size", 1)
    return number_value(a.value) if a is not None else None


def _divisible(index: ModuleIndex, call: cst.Call) -> bool:
    """The dataset's literal length is a multiple of the literal batch size: no short batch."""
    bs = _batch_size_literal(call)
    if not bs or not call.args or call.args[0].keyword is not None:
        return False
    scope = index.scope.get(call)
    ds = index.resolve_value(call.args[0].value, scope)
    n = _literal_length(index, ds, scope, 0)
    return n is not None and n % bs == 0


def _literal_length(index: ModuleIndex, expr, scope, depth) -> Optional[float]:
    if depth > 3 or not isinstance(expr, cst.Call) or not expr.args:
        return None
    q = (index.callee(expr) or "").rsplit(".", 1)[-1]
    first = index.resolve_value(expr.args[0].value, scope)
    if q == "linspace" and len(expr.args) >= 3:  # linspace(start, end, steps)
        return number_value(index.resolve_value(expr.args[2].value, scope))
    if q in ("randn", "rand", "zeros", "ones", "empty", "arange", "range", "randint", "full"):
        if q == "randint" and len(expr.args) >= 3:
            size = expr.args[2].value
            if isinstance(size, (cst.Tuple, cst.List)) and size.elements:
                return number_value(size.elements[0].value)
            return None
        return number_value(first)
    return _literal_length(index, first, scope, depth + 1)


def _loss_of_backward(call: cst.Call) -> Optional[cst.BaseExpression]:
    m = method_name(call)
    recv = receiver(call)
    if m == "backward" and recv is not None and not call.args:
        if isinstance(recv, cst.Call) and method_name(recv) == "scale" and recv.args:
            return recv.args[0].value
        return recv
    if call.args:
        return call.args[0].value
    return recv


def _batch_dependence(index: ModuleIndex, analysis, loop, names, bs_literal):
    facts = analysis.facts(loop)
    if facts is None:
        return None
    sizes = (bs_literal,) if bs_literal else ()
    for ev in facts.events:
        if ev.kind != "B":
            continue
        loss = _loss_of_backward(ev.node)
        if loss is None:
            continue
        scope = index.scope.get(ev.node)
        why = _dependence(Losses(index, scope, names), loss, sizes, 0)
        if why:
            return ev.node, why
    return None


def _dependence(losses: Losses, expr, sizes, depth) -> Optional[str]:
    """Why the short batch's loss is off-scale: only a batch mean divided again by the batch's own
    length is (its gradient grows by batch_size / len(short batch)). A sum, or a sum or a mean divided
    by a fixed batch size, weighs every sample alike or rescales every batch alike: nothing spikes."""
    if depth > 5:
        return None
    if isinstance(expr, cst.Name):
        vals = losses.index.values_of(expr.value, losses.scope)
        for v in vals:
            if isinstance(v, cst.AugAssign):
                if isinstance(v.operator, cst.DivideAssign) and losses.actual_batch_length(v.value):
                    i = vals.index(v)
                    if i > 0 and losses.reduction(vals[i - 1]) == "mean":
                        return "is averaged twice (TL003)"
                continue
            why = _dependence(losses, v, sizes, depth + 1)
            if why:
                return why
        return None
    if isinstance(expr, cst.BinaryOperation):
        if isinstance(expr.operator, cst.Divide):
            if losses.actual_batch_length(expr.right):
                left = expr.left
                if isinstance(left, cst.Name) and len(losses.index.values_of(left.value, losses.scope)) > 1:
                    left = losses.index.reaching_value(left.value, losses.scope, expr) or left
                if losses.reduction(left) == "mean":
                    return "is averaged twice (TL003)"
                return None
            return _dependence(losses, expr.left, sizes, depth + 1)
        if isinstance(expr.operator, (cst.Add, cst.Subtract, cst.Multiply)):
            return _dependence(losses, expr.left, sizes, depth + 1) or _dependence(losses, expr.right, sizes, depth + 1)
        return None
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name):
        fn = losses.index.functions.get(expr.func.value)
        if fn is not None:  # a loss helper of this module: judge what it returns
            inner = Losses(losses.index, fn, list(losses.batch_size_names))
            for node, _ in walk(fn.body):
                if isinstance(node, cst.Return) and node.value is not None and losses.index.scope.get(node) is fn:
                    why = _dependence(inner, node.value, sizes, depth + 1)
                    if why:
                        return why
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value in ("mean", "sum") \
            and not expr.args:
        return None
    return None


def _fix(ctx: RuleContext, call: cst.Call, drop: Optional[cst.Arg]):
    if drop is not None:
        if drop.keyword is None:
            return None
        edit = ctx.replace(drop.value, "True")
    else:
        edit = ctx.insert_after_last_arg(call, ", drop_last=True")
        if edit is None:
            return None
    return ctx.fix("unsafe", "Pass drop_last=True (drops up to batch_size - 1 samples per epoch)", edit)
