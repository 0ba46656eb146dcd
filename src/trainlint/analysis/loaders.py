"""DataLoaders and samplers: where a loader is built, what it is called, which sampler it draws from,
and which loops go over it once per outer iteration (an epoch loop).

A loader is labelled by the name or `self.` attribute its construction is assigned to (`train_loader`,
`self.loaders["train"]` is left unlabelled). A loop *goes over* a loader when, in one of its
iterations (`analysis/sequence.py`, through same-file calls), a nested `for` iterates it, or a call
other than a builtin is handed it (`train_one_epoch(model, train_loader)`, `iter(train_loader)`).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.index import ModuleIndex, call_arg
from trainlint.analysis.sequence import sequences
from trainlint.analysis.walk import walk

EVAL_NAME = re.compile(r"val|test|eval|dev|infer|predict|calib", re.IGNORECASE)
_PASSIVE_CALLS = {"len", "print", "str", "repr", "isinstance", "type", "id", "hasattr", "getattr", "format",
                  "logging.info", "logger.info"}


def is_dataloader_name(qualname: str) -> bool:
    """`DataLoader`, `torch.utils.data.DataLoader`, any `x.DataLoader`."""
    return qualname == "DataLoader" or qualname.endswith(".DataLoader")


def is_dataloader_call(index: ModuleIndex, call: cst.Call) -> bool:
    return is_dataloader_name(index.callee(call) or "")


def assigned_label(index: ModuleIndex, node: cst.CSTNode) -> Optional[str]:
    """`x` or `self.x` for the single target a value is assigned to, else None."""
    parent = index.parent.get(node)
    if isinstance(parent, cst.Assign) and len(parent.targets) == 1:
        target = parent.targets[0].target
    elif isinstance(parent, cst.AnnAssign):
        target = parent.target
    else:
        return None
    if isinstance(target, cst.Name):
        return target.value
    if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self":
        return f"self.{target.attr.value}"
    return None


def dataloaders_with_sampler(index: ModuleIndex, sampler_call: cst.Call,
                             sampler_label: Optional[str]) -> List[cst.Call]:
    """DataLoader constructions whose `sampler=` is this sampler (inline or by its label)."""
    out = []
    for call in index.calls:
        if not is_dataloader_call(index, call):
            continue
        arg = call_arg(call, "sampler", 2)
        if arg is None:
            continue
        if arg.value is sampler_call:
            out.append(call)
        elif sampler_label is not None and index.code(arg.value).strip() == sampler_label:
            if "." in sampler_label or index.scope.get(call) is index.scope.get(sampler_call):
                out.append(call)
    return out


def _mentions(index: ModuleIndex, expr: cst.CSTNode, label: str, renames: Dict[str, str]) -> bool:
    for node, _ in walk(expr):
        if isinstance(node, (cst.Name, cst.Attribute)):
            text = index.code(node).strip()
            head, sep, rest = text.partition(".")
            if head in renames:
                text = renames[head] + (sep + rest if sep else "")
            if text == label:
                return True
    return False


def goes_over(index: ModuleIndex, loop: cst.CSTNode, label: str) -> Optional[cst.CSTNode]:
    """The node by which one iteration of `loop` goes over the loader `label` (a nested `for`, or a call
    handed the loader), else None. A loop that itself iterates the loader is the batch loop: None."""
    if isinstance(loop, cst.For) and _mentions(index, loop.iter, label, {}):
        return None
    for node, _ in walk(loop.body):
        if isinstance(node, cst.For) and _mentions(index, node.iter, label, {}):
            return node
    reached: Dict[cst.CSTNode, Dict[str, str]] = {}
    for site in sequences(index).iteration(loop):
        if site.depth > 0 and site.scope is not None:
            reached.setdefault(site.scope, dict(site.renames))
        q = index.callee(site.call) or ""
        if q in _PASSIVE_CALLS or q.startswith(("logging.", "print")):
            continue
        renames = dict(site.renames)
        for arg in site.call.args:
            if _mentions(index, arg.value, label, renames):
                return site.call
    for fn, renames in reached.items():
        for node, _ in walk(fn.body):
            if isinstance(node, cst.For) and _mentions(index, node.iter, label, renames):
                return node
    return None


# Wrappers that take over the sampler's epoch themselves (Accelerate's prepared loaders, Fabric's).
_EPOCH_AWARE_WRAPPERS = ("prepare", "setup_dataloaders")


def aliases(index: ModuleIndex, label: str, scope) -> List[str]:
    """Names bound, in `scope`, to a call that is handed the loader: `distr_dl` in
    `(model, opt, distr_dl) = backend.distribute(model, opt, training_data=dl)`. Wrappers that manage
    the sampler's epoch themselves (`accelerator.prepare`, `fabric.setup_dataloaders`) are not followed."""
    out: List[str] = []
    for name, values in index.assigns.get(scope, {}).items():
        for v in values:
            if isinstance(v, cst.Call) and name != label and _mentions(index, v, label, {}):
                q = (index.callee(v) or "").rsplit(".", 1)[-1]
                if not any(w in q for w in _EPOCH_AWARE_WRAPPERS) and q not in _PASSIVE_CALLS:
                    out.append(name)
    # tuple targets are not in `assigns`: look at the assignments themselves
    for call in index.calls:
        if index.scope.get(call) is not scope or not _mentions(index, call, label, {}):
            continue
        parent = index.parent.get(call)
        if isinstance(parent, cst.Assign) and len(parent.targets) == 1 and \
                isinstance(parent.targets[0].target, (cst.Tuple, cst.List)):
            q = (index.callee(call) or "").rsplit(".", 1)[-1]
            if any(w in q for w in _EPOCH_AWARE_WRAPPERS):
                continue
            for el in parent.targets[0].target.elements:
                if isinstance(el.value, cst.Name) and el.value.value not in out:
                    out.append(el.value.value)
    return out


def loop_target_name(loop: cst.CSTNode) -> Optional[str]:
    """`epoch` for `for epoch in ...` / `for epoch, x in ...`? Only a plain name counts."""
    if isinstance(loop, cst.For) and isinstance(loop.target, cst.Name):
        return loop.target.value
    return None


def set_epoch_receivers(index: ModuleIndex) -> List[Tuple[cst.Call, str]]:
    out = []
    for call in index.calls:
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "set_epoch":
            out.append((call, index.code(func.value).strip()))
    return out
