"""TL003 double-loss-reduction: a loss already averaged over the batch is divided by the batch size again.

PyTorch: `F.cross_entropy(out, y) / x.size(0)` divides a batch mean by the batch size, so the loss (and
every gradient) scales with 1/batch: the learning rate silently depends on the batch size, and the short
last batch of an epoch gets a larger step (the once-per-epoch spike of the Keras SSD field report).

Keras/TF: a loss function passed to `compile(loss=...)` that returns per-sample values divided by a
batch-wide count (`tf.reduce_sum(...)` or `K.sum(...)` without an axis): Keras averages the per-sample
values over the batch again, so the loss becomes inversely proportional to the batch size.

Silent on: sums divided by the batch size (one average), division by accumulation steps or by a token
count, scalars returned from Keras losses, `.item()` values (logging).
"""

from __future__ import annotations

import ast
from typing import List, Optional, Set

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import ModuleIndex, call_arg, method_name
from trainlint.analysis.losses import Losses, branches_on_reduction, loader_batch_sizes
from trainlint.context import RuleContext
from trainlint.diagnostics import Edit
from trainlint.analysis.gate import ModuleFacts, leaf

CODE = "TL003"
PREFILTER = (
    ("/", "* (1", "*(1"),
    ("loss", "Loss", "mean(", "reduce_sum", "K.sum"),
)
_BATCH_WORDS = ("size(", "shape", "len(", "compile(")


def gate(facts: ModuleFacts, options) -> bool:
    """A division by something that may be a batch size (`x.size(0)`, `x.shape[0]`, `len(x)`, `n, c = x.shape`, a configured
    batch-size name, a DataLoader's literal batch size), or a Keras `compile(loss=...)`."""
    if facts.calls_any(("compile",)) and facts.imports_any(("tensorflow", "keras")):
        return True
    names = set(options.get("batch-size-names", ["batch_size", "bs", "bsz"]))
    literal = set()  # the DataLoaders' literal batch sizes (`loader_batch_sizes`)
    for call in facts.call_nodes.get("DataLoader", ()):
        size = next((k.value for k in call.keywords if k.arg == "batch_size"), call.args[1] if len(call.args) > 1 else None)
        if isinstance(size, ast.Constant) and isinstance(size.value, (int, float)) and size.value > 1:
            literal.add(size.value)

    def batch_like(expr) -> bool:
        if isinstance(expr, ast.Call):
            return leaf(expr.func) in ("size", "len", "shape")
        if isinstance(expr, ast.Subscript):  # x.shape[0], x.size()[0], tf.shape(x)[0]
            base = expr.value
            return isinstance(expr.slice, ast.Constant) and expr.slice.value == 0 and (
                leaf(base) == "shape" or isinstance(base, ast.Call) and leaf(base.func) in ("size", "shape"))
        if isinstance(expr, (ast.Name, ast.Attribute)):
            return leaf(expr) in names or leaf(expr) == "shape"  # `n, c, h, w = x.shape`
        return isinstance(expr, ast.Constant) and isinstance(expr.value, (int, float)) and expr.value in literal

    return any(facts.may_be(den, batch_like, scope) for _, den, _, scope in facts.divisions)


def prefilter(text: str, options) -> bool:
    """A batch size must appear: `x.size(0)`, `x.shape[0]`, `len(`, `n, c, h, w = x.size()` (or
    `.shape`), a configured batch-size name, or a Keras `compile(` (whose loss functions are checked)."""
    names = options.get("batch-size-names", ["batch_size", "bs", "bsz"])
    return any(w in text for w in _BATCH_WORDS) or any(n in text for n in names)


def check(ctx: RuleContext) -> None:
    index = ctx.index
    names = ctx.option("batch-size-names", ["batch_size", "bs", "bsz"])
    sizes = loader_batch_sizes(index)
    for node, value, denom in double_reductions(index, names, sizes):
        fix = _fix(ctx, node, value)
        scope = index.scope.get(node)
        if Losses(index, scope, names).actual_batch_length(denom):
            effect = "the short last batch of each epoch gets a larger step"
        else:
            effect = "the effective learning rate shrinks with the batch size"
        ctx.report(
            node,
            f"`{index.code(value).strip()}` is already a batch mean and is divided by "
            f"`{index.code(denom).strip()}` again, so {effect}",
            fix=fix,
        )
    _check_keras(ctx)


def double_reductions(index: ModuleIndex, names: List[str], sizes=()):
    """(node, loss value, denominator) for each mean-reduced loss divided by a batch size."""
    found = []
    for node in index.divisions:
        scope = index.scope.get(node)
        if branches_on_reduction(index, node):
            continue
        losses = Losses(index, scope, names)
        if isinstance(node, cst.BinaryOperation):
            value, denom = node.left, node.right
        else:  # AugAssign: loss /= bs
            value, denom = node.target, node.value
            if isinstance(value, cst.Name):  # judge the value the name held just before
                vals = index.values_of(value.value, scope)
                i = next((k for k, v in enumerate(vals) if v is node), 0)
                if i == 0 or losses.reduction(vals[i - 1]) != "mean" or not losses.batch_size(denom, sizes):
                    continue
                found.append((node, value, denom))
                continue
        judged = value
        if isinstance(value, cst.Name) and len(index.values_of(value.value, scope)) > 1:
            judged = index.reaching_value(value.value, scope, node) or value  # loss = loss / n
        if losses.reduction(judged) == "mean" and losses.batch_size(denom, sizes):
            found.append((node, value, denom))
    for node in _reciprocal_products(index):  # loss * (1 / bs)
        scope = index.scope.get(node)
        losses = Losses(index, scope, names)
        for value, other in ((node.left, node.right), (node.right, node.left)):
            recip = other
            if (
                isinstance(recip, cst.BinaryOperation)
                and isinstance(recip.operator, cst.Divide)
                and number_value(recip.left) == 1
                and losses.reduction(value) == "mean"
                and losses.batch_size(recip.right, sizes)
            ):
                found.append((node, value, recip.right))
                break
    return found


def _reciprocal_products(index: ModuleIndex):
    out = []
    for div in index.divisions:
        p = index.parent.get(div)
        if isinstance(p, cst.BinaryOperation) and isinstance(p.operator, cst.Multiply) and isinstance(div, cst.BinaryOperation) \
                and number_value(div.left) == 1:
            out.append(p)
    return out


def _fix(ctx: RuleContext, node, value):
    index = ctx.index
    if isinstance(node, cst.AugAssign):
        line = index.parent.get(node)
        if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1:
            block = index.parent.get(line)
            if isinstance(block, cst.IndentedBlock) and len(block.body) == 1:  # the only statement of its block
                return ctx.fix("unsafe", "Remove the second division by the batch size", ctx.replace(node, "pass"))
            return ctx.fix("unsafe", "Remove the second division by the batch size", ctx.delete_statement_line(line))
        return None
    # Edit the smallest range (` / x.size(0)`), never re-render the loss expression: its layout stays.
    if isinstance(node, cst.BinaryOperation) and node.left is value:
        _, end = ctx.range(node)
        edit = Edit("", ctx.end_with_parens(value), end)
    elif isinstance(node, cst.BinaryOperation) and node.right is value and not value.lpar:
        start, _ = ctx.range(node)
        edit = Edit("", start, ctx.range(value)[0])
    else:
        edit = ctx.replace(node, index.code(value).strip())
    return ctx.fix("unsafe", "Remove the second division by the batch size", edit)


# -- Keras --------------------------------------------------------------------------------------------

_FULL_REDUCTIONS = {"reduce_sum", "sum", "count_nonzero", "reduce_mean"}


def _check_keras(ctx: RuleContext) -> None:
    index = ctx.index
    if not (index.imports.imports_module("tensorflow") or index.imports.imports_module("keras")):
        return
    for fn in _compiled_loss_functions(index):
        for ret, div in _returned_divisions(index, fn):
            ctx.report(
                div,
                f"`{fn.name.value}` is passed to compile(loss=...) and returns per-sample values divided by "
                f"`{index.code(div.right).strip()}`, a count over the whole batch; Keras then averages over "
                "the batch again, so the loss scales with 1/batch size and the short last batch spikes. "
                "Normalise per sample, or multiply by the batch size (`tf.cast(tf.shape(y_true)[0], "
                "tf.float32)`) to undo Keras' averaging",
            )


def _compiled_loss_functions(index: ModuleIndex) -> List[cst.FunctionDef]:
    out: List[cst.FunctionDef] = []
    for call in index.calls:
        if method_name(call) != "compile":
            continue
        arg = call_arg(call, "loss", 1)
        if arg is None:
            continue
        targets = [arg.value]
        if isinstance(arg.value, (cst.List, cst.Tuple)):
            targets = [e.value for e in arg.value.elements]
        elif isinstance(arg.value, cst.Dict):
            targets = [e.value for e in arg.value.elements if isinstance(e, cst.DictElement)]
        for t in targets:
            fn = _function_of(index, t, index.scope.get(call))
            if fn is not None and fn not in out:
                out.append(fn)
    return out


def _function_of(index: ModuleIndex, expr, scope) -> Optional[cst.FunctionDef]:
    if isinstance(expr, cst.Name):
        if expr.value in index.functions:
            return index.functions[expr.value]
        v = index.resolve_value(expr, scope)
        if isinstance(v, cst.Call):  # loss=make_loss(...) returning an inner function
            return None
    if isinstance(expr, cst.Attribute):
        obj = expr.value
        method = expr.attr.value
        v = index.resolve_value(obj, scope) if isinstance(obj, (cst.Name, cst.Attribute)) else obj
        if isinstance(v, cst.Call):
            cls = index.callee(v)
            if cls and cls in index.classes:
                return index.methods.get((cls, method))
    return None


def _returned_divisions(index: ModuleIndex, fn: cst.FunctionDef):
    from trainlint.analysis.walk import walk

    seen: Set[cst.CSTNode] = set()
    for node, _ in walk(fn.body):
        if isinstance(node, (cst.FunctionDef, cst.Lambda)) and node is not fn:
            continue
        if not isinstance(node, cst.Return) or node.value is None:
            continue
        if index.scope.get(node) is not fn:
            continue
        div = _division_behind(index, node.value, fn, 0)
        if div is not None and div not in seen:
            seen.add(div)
            yield node, div


def _division_behind(index: ModuleIndex, expr, fn, depth):
    """The division `per_sample / batch_wide` that the returned value comes from, unless undone."""
    if depth > 4:
        return None
    if isinstance(expr, cst.Name):
        vals = index.values_of(expr.value, fn)
        if not vals:
            return None
        # `total = a / n; total = total * batch_size` undoes Keras' averaging: look at the last value.
        last = vals[-1]
        if isinstance(last, cst.BinaryOperation) and isinstance(last.operator, cst.Multiply):
            return None
        for v in vals:
            d = _division_behind(index, v, fn, depth + 1)
            if d is not None:
                return d
        return None
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Divide):
        if _batch_wide(index, expr.right, fn, 0) and _per_sample(index, expr.left, fn, 0):
            return expr
    return None


def _reduce_name(index: ModuleIndex, call: cst.Call) -> str:
    q = index.callee(call) or ""
    return q.rsplit(".", 1)[-1]


def _is_backend_reduce(index: ModuleIndex, call: cst.Call) -> bool:
    q = index.callee(call) or ""
    return q.startswith(("tensorflow.", "tf.", "keras.", "K.")) or ".backend." in q


def _batch_wide(index: ModuleIndex, expr, fn, depth) -> bool:
    if depth > 4:
        return False
    if isinstance(expr, cst.Name):
        vals = index.values_of(expr.value, fn)
        return len(vals) == 1 and _batch_wide(index, vals[0], fn, depth + 1)
    if isinstance(expr, cst.Call) and _is_backend_reduce(index, expr):
        name = _reduce_name(index, expr)
        if name in ("reduce_sum", "sum", "count_nonzero"):
            return call_arg(expr, "axis", 1) is None and not any(a.star for a in expr.args)
        if name in ("maximum", "cast", "to_float", "stop_gradient") and expr.args:
            return any(_batch_wide(index, a.value, fn, depth + 1) for a in expr.args[:2])
    return False


def _per_sample(index: ModuleIndex, expr, fn, depth) -> bool:
    """A value with one entry per sample: built from a backend reduction over an explicit axis."""
    if depth > 5:
        return False
    if isinstance(expr, cst.Name):
        vals = index.values_of(expr.value, fn)
        return bool(vals) and all(_per_sample(index, v, fn, depth + 1) for v in vals)
    if isinstance(expr, cst.BinaryOperation):
        return _per_sample(index, expr.left, fn, depth + 1) or _per_sample(index, expr.right, fn, depth + 1)
    if isinstance(expr, cst.Call) and _is_backend_reduce(index, expr):
        name = _reduce_name(index, expr)
        if name.startswith("reduce_") or name in ("sum", "mean"):
            return call_arg(expr, "axis", 1) is not None
        if name in ("cast", "to_float") and expr.args:
            return _per_sample(index, expr.args[0].value, fn, depth + 1)
    return False
