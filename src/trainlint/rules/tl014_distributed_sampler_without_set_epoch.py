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

CODE = "TL014"
PREFILTER = (("DistributedSampler",),)

_TORCH_SAMPLERS = ("torch.utils.data.distributed.DistributedSampler", "torch.utils.data.DistributedSampler")


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
    if epoch is None or not isinstance(body, cst.IndentedBlock) or not body.body:
        return None
    index = ctx.index
    first = body.body[0]
    maybe_none = _conditional(index, sampler, sampler_label, loop)
    sampler_here = sampler_label is not None and _same_owner(index, sampler_label, sampler, loop)
    loader_here = _same_owner(index, loader_label, loader, loop)
    guard = None
    if sampler_here and not maybe_none:
        handle = sampler_label
    elif not maybe_none and loader_here:
        handle = f"{loader_label}.sampler"
    elif sampler_here and not _maybe_unbound(index, sampler, sampler_label):
        handle = sampler_label
        guard = f"{handle} is not None"
    elif loader_here:
        handle = f"{loader_label}.sampler"
        guard = f'hasattr({handle}, "set_epoch")'
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


def _maybe_unbound(index: ModuleIndex, sampler: cst.Call, label: Optional[str]) -> bool:
    """Assigned once, under an `if`/`try`: on the other path the name does not exist at all."""
    if label is None or isinstance(index.parent.get(sampler), cst.IfExp):
        return False
    scope = index.scope.get(sampler)
    count = len(index.attr_assigns.get(label[5:], [])) if label.startswith("self.") else \
        len(index.values_of(label, scope))
    return count <= 1


def _conditional(index: ModuleIndex, sampler: cst.Call, label: Optional[str], loop) -> bool:
    """May the sampler's name hold None (`DistributedSampler(ds) if distributed else None`, or built
    under an `if`, or assigned more than once)?"""
    if isinstance(index.parent.get(sampler), cst.IfExp):
        return True
    cur = index.parent.get(sampler)
    scope = index.scope.get(sampler)
    while cur is not None and cur is not scope:
        if isinstance(cur, (cst.If, cst.Try)):
            return True
        cur = index.parent.get(cur)
    if label is None:
        return False
    if label.startswith("self."):
        return len(index.attr_assigns.get(label[5:], [])) != 1
    return len(index.values_of(label, scope)) != 1
