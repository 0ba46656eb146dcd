"""TL013 loss-graph-kept-alive: a running total or list of loss tensors kept across iterations.

`total_loss += loss` with `loss` a tensor makes `total_loss` a tensor whose history reaches back through
every iteration's graph: nothing of it can be freed, and memory grows until the run is out of memory
(the PyTorch FAQ's first entry on memory). `losses.append(loss)` does the same.

In every loop, the losses that the loop backpropagates and their additive terms (`analysis/graph.py`)
are followed into accumulations: `acc += <loss>`, `acc = acc + <loss>`, `acc.append(<loss>)`,
`acc.extend([<loss>])`, where the value still carries the graph (arithmetic, `.mean()`, indexing, but
not `.item()`, `float()`, `.detach()`, `.data` or a helper call). Reported when the accumulator lives
across iterations: it is bound outside the loop (or is a `self.` attribute) and neither re-bound nor
cleared inside it, and it is not itself backpropagated later (accumulating a loss to call backward on
the total is deliberate). Accumulations under `torch.no_grad()` are left alone.
"""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from trainlint.analysis.graph import backward_target, calls_in, graph_losses, graph_use, under_no_grad
from trainlint.analysis.index import ModuleIndex, method_name, receiver
from trainlint.analysis.walk import children, walk
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts
from trainlint.analysis.optim import BACKWARD_METHODS

CODE = "TL013"
# a backward *call* (not `def backward(ctx, ...)`) and something that accumulates
PREFILTER = (("backward", "autograd import"), re.compile(r"(\.|manual_)backward\s*\(|autograd import"),
             ("+=", "append", "extend", " + "))

_LIST_METHODS = ("append", "extend", "insert")


def gate(facts: ModuleFacts, options) -> bool:
    """A loop that runs a backward pass itself."""
    return facts.loop_calls_all(BACKWARD_METHODS)



def check(ctx: RuleContext) -> None:
    index = ctx.index
    for loop in index.loops:
        losses = graph_losses(index, loop)
        if not losses:
            continue
        for node in _own_nodes(index, loop):
            found = _accumulation(index, node, losses)
            if found is None:
                continue
            acc, value, use, name = found
            if under_no_grad(index, node) or not _lives_across(index, loop, node, acc) \
                    or _backpropagated(index, loop, acc):
                continue
            acc_text = index.code(acc).strip()
            how = "item" if _scalar_total(index, loop, node, acc, name) else "detach"
            ctx.report(
                node,
                f"`{acc_text}` keeps `{name}` with its autograd graph across iterations, so every iteration's "
                f"graph stays in memory until it runs out; keep `{name}.{how}()` instead.",
                fix=_fix(ctx, use, how),
            )


def _own_nodes(index: ModuleIndex, loop):
    """Statements and calls of the loop body whose innermost loop is `loop` (defs not entered)."""
    stack = list(children(loop.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda, cst.For, cst.While)):
            continue
        if isinstance(node, (cst.AugAssign, cst.Assign, cst.Call)):
            yield node
        stack.extend(children(node))


def _accumulation(index: ModuleIndex, node, losses):
    """(accumulator, value, graph use, loss name) when `node` adds a graph loss to an accumulator."""
    if isinstance(node, cst.AugAssign) and isinstance(node.operator, (cst.AddAssign, cst.SubtractAssign)):
        return _with_loss(node.target, node.value, losses)
    if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.value, cst.BinaryOperation) \
            and isinstance(node.value.operator, cst.Add):
        target = node.targets[0].target
        text = index.code(target).strip()
        left, right = node.value.left, node.value.right
        if index.code(left).strip() == text:
            return _with_loss(target, right, losses)
        if index.code(right).strip() == text:
            return _with_loss(target, left, losses)
        return None
    if isinstance(node, cst.Call) and method_name(node) in _LIST_METHODS and node.args:
        acc = receiver(node)
        parent = index.parent.get(node)
        if not isinstance(parent, cst.Expr):
            return None
        value = node.args[-1].value
        return _with_loss(acc, value, losses)
    return None


def _with_loss(acc, value, losses):
    if acc is None or not _accumulator_shape(acc):
        return None
    for name in sorted(losses):
        use = graph_use(value, name)
        if use is not None:
            return acc, value, use, name
    return None


def _accumulator_shape(acc) -> bool:
    if isinstance(acc, cst.Name):
        return True
    if isinstance(acc, cst.Attribute):
        return isinstance(acc.value, cst.Name) and acc.value.value == "self"
    if isinstance(acc, cst.Subscript):
        return _accumulator_shape(acc.value)
    return False


def _root(acc) -> str:
    while isinstance(acc, cst.Subscript):
        acc = acc.value
    if isinstance(acc, cst.Name):
        return acc.value
    return f"self.{acc.attr.value}"


def _lives_across(index: ModuleIndex, loop, node, acc) -> bool:
    """Bound outside the loop (or a `self.` attribute), never re-bound or cleared inside it."""
    root = _root(acc)
    for other, _ in walk(loop.body):
        if other is node:
            continue
        targets = []
        if isinstance(other, cst.Assign):
            targets = [t.target for t in other.targets]
            if _accumulation_of(index, other, root):
                continue
        elif isinstance(other, cst.AnnAssign):
            targets = [other.target]
        elif isinstance(other, (cst.For, cst.CompFor)):
            targets = [other.target]
        elif isinstance(other, cst.Del):
            targets = [other.target]
        elif isinstance(other, cst.Call) and method_name(other) in ("clear", "pop", "popleft", "zero_", "fill_"):
            targets = [receiver(other)]
        for t in targets:
            for sub, _ in walk(t):
                if isinstance(sub, (cst.Name, cst.Attribute, cst.Subscript)) and _root_or_none(sub) == root:
                    return False
    if root.startswith("self."):
        return True
    scope = index.scope.get(loop)
    return bool(index.assigns.get(scope, {}).get(root))


def _root_or_none(expr) -> Optional[str]:
    try:
        return _root(expr) if _accumulator_shape(expr) else None
    except AttributeError:
        return None


def _accumulation_of(index: ModuleIndex, assign: cst.Assign, root: str) -> bool:
    """`acc = acc + x`: another accumulation, not a reset."""
    if len(assign.targets) != 1 or not isinstance(assign.value, cst.BinaryOperation):
        return False
    text = index.code(assign.targets[0].target).strip()
    return text.split("[")[0] == root and text in (index.code(assign.value.left).strip(),
                                                   index.code(assign.value.right).strip())


def _backpropagated(index: ModuleIndex, loop, acc) -> bool:
    """Is the accumulator (or something computed from it) backpropagated in the loop's function?"""
    root = _root(acc).split(".")[-1]
    scope = index.scope.get(loop)
    body = scope.body if scope is not None else index.module
    for call in calls_in(body):
        target = backward_target(index, call)
        if target is None:
            continue
        if _reads(target, root):
            return True
        if isinstance(target, cst.Name):
            for v in index.values_of(target.value, scope):
                if isinstance(v, cst.CSTNode) and _reads(v, root):
                    return True
    return False


def _reads(expr, name: str) -> bool:
    return any(isinstance(n, cst.Name) and n.value == name or isinstance(n, cst.Attribute) and n.attr.value == name
               for n, _ in walk(expr))


def _scalar_total(index: ModuleIndex, loop, node, acc, name: str) -> bool:
    """`.item()` is safe: a `+=` total started from a number and never used as a tensor."""
    if isinstance(node, cst.Call) or not isinstance(acc, cst.Name):
        return False
    scope = index.scope.get(loop)
    values = index.assigns.get(scope, {}).get(acc.value, [])
    starts = [v for v in values if isinstance(v, (cst.Integer, cst.Float))]
    if not starts:
        return False
    body = scope.body if scope is not None else index.module
    for sub, _ in walk(body):
        if isinstance(sub, cst.Attribute) and isinstance(sub.value, cst.Name) and sub.value.value == acc.value:
            return False  # total.item(), total.cpu(): used as a tensor
    return True


def _fix(ctx: RuleContext, use: cst.BaseExpression, how: str):
    end = ctx.end_with_parens(use)
    from trainlint.diagnostics import Edit

    needs_parens = not isinstance(use, (cst.Name, cst.Attribute, cst.Call, cst.Subscript))
    if needs_parens:
        return None
    return ctx.fix("unsafe", f"Keep `.{how}()` of the loss", Edit(f".{how}()", end, end))
