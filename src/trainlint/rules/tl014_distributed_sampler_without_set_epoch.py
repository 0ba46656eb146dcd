"""TL014 distributed-sampler-without-set-epoch: a shuffling DistributedSampler never told the epoch.

`DistributedSampler` seeds its shuffle with `seed + epoch`, and the epoch only changes through
`sampler.set_epoch(epoch)`. Without that call every epoch visits the data in exactly the same order on
every rank (the PyTorch docs: "Otherwise, the same ordering will be always used").

For each torch `DistributedSampler` that shuffles (the default), the rule finds the training DataLoader
built on it (`sampler=`), and an epoch loop of this file that goes over that loader once per iteration
(`analysis/loaders.py`). It reports when nothing in the file calls `set_epoch` on a sampler or on that
loader. Validation/test samplers and loaders, and loaders that this file never loops over, are left
alone.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, call_arg
from trainlint.analysis.loaders import (EVAL_NAME, aliases, dataloaders_with_sampler, goes_over, loop_target_name,
                                        set_epoch_receivers)
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL014"
PREFILTER = (("DistributedSampler",),)

_TORCH_SAMPLERS = ("torch.utils.data.distributed.DistributedSampler", "torch.utils.data.DistributedSampler")


def gate(facts: ModuleFacts, options) -> bool:
    """A DistributedSampler is named in the code."""
    return facts.uses_any(("DistributedSampler",))



def check(ctx: RuleContext) -> None:
    index = ctx.index
    receivers = None
    for call in index.calls:
        if (index.callee(call) or "") not in _TORCH_SAMPLERS or any(a.star for a in call.args):
            continue
        shuffle = call_arg(call, "shuffle", 3)
        if shuffle is not None and isinstance(shuffle.value, cst.Name) and shuffle.value.value == "False":
            continue  # the order is fixed anyway
        sampler_label = _label(index, call)
        if sampler_label and EVAL_NAME.search(sampler_label):
            continue
        if receivers is None:
            receivers = set_epoch_receivers(index)
        for loader in dataloaders_with_sampler(index, call, sampler_label):
            loader_label = _label(index, loader)
            if loader_label is None or EVAL_NAME.search(loader_label):
                continue
            if _told(receivers, sampler_label, loader_label):
                break
            loop = _epoch_loop(index, loader, loader_label)
            if loop is None:
                continue
            ctx.report(
                call,
                f"this DistributedSampler of `{loader_label}` is never told the epoch (no `set_epoch(epoch)` in "
                f"the epoch loop at line {ctx.range(loop)[0].row}), so every epoch shuffles the data in the "
                "same order.",
                fix=_fix(ctx, loop, sampler_label, call, loader_label, loader),
            )
            break


def _label(index: ModuleIndex, node: cst.CSTNode) -> Optional[str]:
    """The name a construction is assigned to, also through `x if cond else None`."""
    from trainlint.analysis.loaders import assigned_label

    parent = index.parent.get(node)
    if isinstance(parent, cst.IfExp):
        return assigned_label(index, parent)
    return assigned_label(index, node)


def _told(receivers, sampler_label: Optional[str], loader_label: str) -> bool:
    loader_last = loader_label.rsplit(".", 1)[-1]
    for _, recv in receivers:
        if "sampler" in recv.lower() or recv.rsplit(".", 1)[-1] == loader_last or loader_last in recv:
            return True
        if sampler_label and recv == sampler_label:
            return True
    return False


def _same_owner(index: ModuleIndex, label: str, defined_at: cst.CSTNode, loop: cst.CSTNode) -> bool:
    if label.startswith("self."):
        klass = index.cls_of.get(defined_at)
        return klass is not None and index.cls_of.get(loop) is klass
    return index.scope.get(defined_at) is index.scope.get(loop)


def _epoch_loop(index: ModuleIndex, loader: cst.Call, label: str):
    labels = [label]
    if "." not in label:
        labels += aliases(index, label, index.scope.get(loader))
    candidates = [lp for lp in index.loops if _same_owner(index, label, loader, lp) and not _runs_once(index, lp)
                  and any(goes_over(index, lp, lb) for lb in labels)]
    # the innermost: a candidate that holds no other candidate
    inner = [lp for lp in candidates if not any(o is not lp and _inside(index, o, lp) for o in candidates)]
    return inner[0] if inner else None


def _runs_once(index: ModuleIndex, loop) -> bool:
    """`for _ in range(1):`: a loop that runs a single time is no epoch loop."""
    if not isinstance(loop, cst.For) or not isinstance(loop.iter, cst.Call):
        return False
    it = loop.iter
    if index.callee(it) != "range" or len(it.args) != 1:
        return False
    return isinstance(it.args[0].value, cst.Integer) and int(it.args[0].value.value) <= 1


def _inside(index: ModuleIndex, node: cst.CSTNode, outer: cst.CSTNode) -> bool:
    cur = index.parent.get(node)
    while cur is not None:
        if cur is outer:
            return True
        cur = index.parent.get(cur)
    return False


def _fix(ctx: RuleContext, loop, sampler_label: Optional[str], sampler: cst.Call, loader_label: str,
         loader: cst.Call):
    epoch = loop_target_name(loop)
    body = loop.body
    if epoch is None or epoch == "_" or not isinstance(body, cst.IndentedBlock) or not body.body:
        return None
    index = ctx.index
    first = body.body[0]
    kind = _binding(index, sampler, sampler_label)
    sampler_here = sampler_label is not None and _same_owner(index, sampler_label, sampler, loop)
    loader_here = _same_owner(index, loader_label, loader, loop)
    guard = None
    if kind == "always" and sampler_here:
        handle = sampler_label
    elif kind == "always" and loader_here:
        handle = f"{loader_label}.sampler"
    elif kind == "or-none" and sampler_here:
        handle, guard = sampler_label, f"{sampler_label} is not None"
    elif kind == "or-other" and sampler_here:
        handle, guard = sampler_label, f'hasattr({sampler_label}, "set_epoch")'
    elif loader_here:
        handle = f"{loader_label}.sampler"
        guard = None if kind == "always" else f'hasattr({handle}, "set_epoch")'
    else:
        return None
    line = f"{handle}.set_epoch({epoch})"
    if guard:
        inner = ctx.indent_of(first)
        step = inner[len(ctx.indent_of(loop)):] or "    "
        text = f"if {guard}:\n{inner}{step}{line}"
    else:
        text = line
    return ctx.fix("unsafe", f"Call `{line}` at the start of the epoch loop", ctx.insert_before_statement(first, text))


def _binding(index: ModuleIndex, sampler: cst.Call, label: Optional[str]) -> str:
    """What the sampler's name holds at the epoch loop: "always" the DistributedSampler, "or-none" it or
    None, "or-other" it or another sampler (RandomSampler when not distributed), or "maybe-unbound" (only
    assigned under an `if`/`try`, or not named at all while built conditionally)."""
    parent = index.parent.get(sampler)
    if isinstance(parent, cst.IfExp):
        other = parent.orelse if parent.body is sampler else parent.body
        return "or-none" if _is_none(other) else "or-other"
    conditional = False
    cur, scope = parent, index.scope.get(sampler)
    while cur is not None and cur is not scope:
        if isinstance(cur, (cst.If, cst.Try)):
            conditional = True
            break
        cur = index.parent.get(cur)
    if label is None:
        return "maybe-unbound" if conditional else "always"
    values = index.attr_assigns.get(label[5:], []) if label.startswith("self.") else index.values_of(label, scope)
    others = [v for v in values if v is not sampler]
    if not others:
        return "maybe-unbound" if conditional else "always"
    return "or-none" if all(_is_none(v) for v in others) else "or-other"


def _is_none(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "None"
