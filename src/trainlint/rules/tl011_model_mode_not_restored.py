"""TL011 model-mode-not-restored: training goes on in eval mode, or evaluation runs in train mode.

1. A training loop that puts a model in eval mode (`model.eval()`, `model.train(False)`, directly or in
   a same-file helper such as `validate(model, ...)`) and then steps the optimizer again without
   `model.train()` in between (the loop's iterations are read as a cycle: the eval at the end of epoch
   1 reaches the steps of epoch 2). BatchNorm keeps its frozen statistics and Dropout stays off for
   the rest of training.
2. An evaluation loop over a validation/test loader under `torch.no_grad()` that calls a model this file
   builds or trains, while nothing in the file ever puts that model in eval mode: BatchNorm normalises
   with the batch's statistics and Dropout drops activations, so the metrics are wrong and noisy.

Only models this file trains (put in train mode somewhere, or whose parameters an optimizer gets) or
builds from its own nn.Module classes are judged; a class that provably has no mode-dependent layer
is left alone (`analysis/modes.py`).
"""

from __future__ import annotations

import ast
import re
from typing import List, Optional, Set

import libcst as cst

from trainlint.analysis.graph import under_no_grad
from trainlint.analysis.index import ModuleIndex, receiver
from trainlint.analysis.loaders import EVAL_NAME
from trainlint.analysis.modes import (built_by_factory_with_norm, constructed_model_class, keys_match,
                                      mode_free, mode_switch, model_aliases, model_expr, optimizer_models,
                                      trained_models)
from trainlint.analysis.modules import inference_only
from trainlint.analysis.schedulers import stepped_optimizer
from trainlint.analysis.sequence import Site, sequences
from trainlint.analysis.walk import walk
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL011"
PREFILTER = ((".eval", ".train", "no_grad", "inference_mode"),)
_TO_EVAL = re.compile(r"\.eval\s*\(\s*\)|\.train\s*\(\s*(mode\s*=\s*)?False")
_STEP = re.compile(r"step\s*\(")
_MODE_LAYER_WORD = re.compile(r"Norm|[Dd]ropout|drop_path|DropPath|training|torchvision|timm")


def gate(facts: ModuleFacts, options) -> bool:
    """Case 1: a model's `.eval()`/`.train(...)` and `.step()` are called, and a loop calls `step()` (maybe
    through a function of this module); case 2: a `for` loop over an evaluation loader, and `no_grad` or
    `inference_mode`."""
    switches = any(isinstance(c.func, ast.Attribute) for n in ("eval", "train") for c in facts.call_nodes.get(n, ()))
    if switches and facts.calls_any(("step",)) and facts.loop_calls_local_or(("step",)):
        return True
    return facts.uses_any(("no_grad", "inference_mode")) and any(
        EVAL_NAME.search(n) and ("loader" in n.lower() or "data" in n.lower()) for n in facts.loop_iterables)


def prefilter(text: str, options) -> bool:
    """Case 1 needs a switch to eval mode and an optimizer step; case 2 no_grad, a loader and a model with a
    mode-dependent layer in sight (the gate then asks for a loop over an evaluation loader). Cheap tests
    first: the text of most files fails one."""
    if ("step" in text and (".eval" in text or ".train" in text) and _STEP.search(text)
            and _TO_EVAL.search(text)):
        return True
    if "no_grad" not in text and "inference_mode" not in text:
        return False
    low = text.lower()
    return ("loader" in low or "data" in low) and _MODE_LAYER_WORD.search(text) is not None


def check(ctx: RuleContext) -> None:
    reported: Set[cst.CSTNode] = set()
    _training_left_in_eval(ctx, reported)
    _evaluation_in_train_mode(ctx, reported)


# -- 1. eval() and then optimizer steps ---------------------------------------------------------------
def _training_left_in_eval(ctx: RuleContext, reported: Set[cst.CSTNode]) -> None:
    index = ctx.index
    trained = trained_models(index)
    seqs = sequences(index)
    for loop in index.loops:
        sites = seqs.iteration(loop)
        if not sites:
            continue
        steps = {}
        for i, s in enumerate(sites):
            opt = stepped_optimizer(index, s.call, s.scope)
            if opt is not None:
                steps[i] = s.text(index, opt)
        if not steps:
            continue
        switches = []
        for i, s in enumerate(sites):
            kind = mode_switch(s.call)
            recv = model_expr(receiver(s.call)) if receiver(s.call) is not None else None
            if kind is None or not isinstance(recv, (cst.Name, cst.Attribute, cst.Subscript)):
                continue
            switches.append((i, kind, s.text(index, recv)))
        scope = index.scope.get(loop)
        single = len(set(steps.values())) == 1
        for i, kind, key in switches:
            if kind != "eval" or not _is_trained(key, trained):
                continue
            site = sites[i]
            if site.via in reported or _set_per_branch(sites, switches, i, key):
                continue
            models = _model_names(index, key, scope)
            trains = {j for j, opt in steps.items() if _trains(index, opt, scope, models, single)}
            # validation after training: a step of this model's optimizer earlier in the same iteration
            if not any(j < i and not sites[j].excludes(site) for j in trains):
                continue
            step = _next_step_without_train(sites, switches, trains, i, key)
            if step is None:
                continue
            reported.add(site.via)
            what = "" if site.depth == 0 else f" (through `{_callee_text(index, site.via)}`)"
            ctx.report(
                site.via,
                f"`{key}` is put in eval mode here{what} and the loop steps the optimizer again without "
                f"`{key}.train()`, so BatchNorm and Dropout stay in eval mode for the rest of training.",
                fix=_restore_fix(ctx, loop, site, sites[step], key),
            )


def _model_names(index: ModuleIndex, key: str, scope) -> Set[str]:
    parts = [p for p in re.findall(r"[A-Za-z_]\w*", key.split("[")[0]) if p != "self"]
    if not parts:
        return set()
    names = set(parts)
    if not key.startswith("self."):
        names |= model_aliases(index, parts[0], scope)
    return names


def _trains(index: ModuleIndex, opt_text: str, scope, models: Set[str], single: bool) -> bool:
    """Does the optimizer (by its text in the loop's scope) train one of `models`? Unknown: only when it
    is the loop's single optimizer."""
    expr: Optional[cst.BaseExpression] = None
    if re.fullmatch(r"[A-Za-z_]\w*", opt_text):
        expr = cst.Name(opt_text)
    elif re.fullmatch(r"self\.[A-Za-z_]\w*", opt_text):
        expr = cst.Attribute(value=cst.Name("self"), attr=cst.Name(opt_text[5:]))
    trained = optimizer_models(index, expr, scope) if expr is not None else None
    if trained is None:
        return single
    return bool(trained & models)


def _is_trained(key: str, trained: Set[str]) -> bool:
    return any(part in trained for part in re.findall(r"[A-Za-z_]\w*", key) if part != "self")


def _set_per_branch(sites: List[Site], switches, i: int, key: str) -> bool:
    """`if phase == "train": model.train() else: model.eval()`: the mode is chosen every iteration."""
    me = sites[i]
    for j, kind, other in switches:
        if j != i and kind in ("train", "set") and keys_match(other, key) and sites[j].excludes(me):
            return True
    return False


def _next_step_without_train(sites: List[Site], switches, steps: Set[int], i: int, key: str) -> Optional[int]:
    """The first optimizer step after switch `i`, going round the loop, with no train() of `key` before it."""
    restores = {j for j, kind, other in switches if kind in ("train", "set") and keys_match(other, key)}
    n = len(sites)
    for k in range(1, n + 1):
        j = (i + k) % n
        if j in restores:
            return None
        if j in steps and not sites[j].excludes(sites[i]):
            return j
    return None


def _callee_text(index: ModuleIndex, call: cst.Call) -> str:
    return index.code(call.func).strip() + "(...)"


def _restore_fix(ctx: RuleContext, loop, eval_site: Site, step_site: Site, key: str):
    body = loop.body
    if not isinstance(body, cst.IndentedBlock) or step_site.top is eval_site.top or step_site.top not in body.body:
        return None
    if eval_site.top not in body.body:
        return None
    return ctx.fix("unsafe", f"Put `{key}` back in train mode before the optimizer steps",
                   ctx.insert_before_statement(step_site.top, f"{key}.train()"))


# -- 2. evaluation without eval() --------------------------------------------------------------------
def _evaluation_in_train_mode(ctx: RuleContext, reported: Set[cst.CSTNode]) -> None:
    index = ctx.index
    evaled = _names_put_in_eval(index)
    has_steps = any(stepped_optimizer(index, c, index.scope.get(c)) is not None for c in index.calls)
    for loop in index.loops:
        if not isinstance(loop, cst.For) or not _over_eval_loader(index, loop):
            continue
        fn = index.scope.get(loop)
        if not (under_no_grad(index, loop) or (isinstance(fn, cst.FunctionDef) and inference_only(index, fn))):
            continue
        for call in _model_calls(loop):
            func = call.func
            name = func.attr.value if isinstance(func, cst.Attribute) else func.value
            if name in evaled or call in reported:
                continue
            # only models known to hold a mode-dependent layer: a local class with BatchNorm/Dropout, a
            # torchvision/timm model (a model from another file may have none: silence)
            klass = constructed_model_class(index, func, fn)
            known = (klass is not None and not mode_free(index, klass)) or \
                built_by_factory_with_norm(index, func, fn)
            if not known:
                continue
            reported.add(call)
            key = index.code(func).strip()
            ctx.report(
                call,
                f"`{key}` runs over an evaluation loader but is never put in eval mode in this file, so "
                f"BatchNorm and Dropout behave as in training; call `{key}.eval()` before evaluating.",
                fix=None if has_steps else _eval_fix(ctx, loop, key),
            )
            break


def _names_put_in_eval(index: ModuleIndex) -> Set[str]:
    out: Set[str] = set()
    for call in index.calls:
        if mode_switch(call) in ("eval", "set"):
            recv = receiver(call)
            if recv is not None:
                out.update(n for n in re.findall(r"[A-Za-z_]\w*", index.code(recv)) if n != "self")
    return out


def _over_eval_loader(index: ModuleIndex, loop: cst.For) -> bool:
    for node, _ in walk(loop.iter):
        if isinstance(node, (cst.Name, cst.Attribute)):
            name = node.attr.value if isinstance(node, cst.Attribute) else node.value
            if EVAL_NAME.search(name) and ("loader" in name.lower() or "data" in name.lower()):
                return True
    return False


def _model_calls(loop: cst.For) -> List[cst.Call]:
    """Calls `model(x)` / `self.model(x)` in the loop body (defs not entered)."""
    out = []
    for node, _ in walk(loop.body):
        if isinstance(node, cst.Call) and node.args:
            func = node.func
            if isinstance(func, cst.Name) or (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name)
                                              and func.value.value == "self"):
                out.append(node)
    return out


def _eval_fix(ctx: RuleContext, loop: cst.For, key: str):
    index = ctx.index
    stmt: cst.CSTNode = loop
    parent = index.parent.get(stmt)
    # before the `with torch.no_grad():` that holds the loop, when the loop is its first statement
    while isinstance(parent, cst.IndentedBlock):
        grand = index.parent.get(parent)
        if isinstance(grand, cst.With) and parent.body and parent.body[0] is stmt:
            stmt = grand
            parent = index.parent.get(stmt)
            continue
        break
    if not isinstance(parent, (cst.IndentedBlock, cst.Module)):
        return None
    return ctx.fix("unsafe", f"Call `{key}.eval()` before the evaluation loop",
                   ctx.insert_before_statement(stmt, f"{key}.eval()"))
