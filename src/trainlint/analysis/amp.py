"""AMP loss scaling: the GradScaler phases of a training step, in the order the code runs them.

With `torch.amp.GradScaler` a step is

    scaler.scale(loss).backward()     # SCALED_BACKWARD: every .grad is multiplied by the scale
    scaler.unscale_(optimizer)        # UNSCALE (optional): divides the grads back, once per step
    clip_grad_norm_(params, max_norm) # CLIP / NORM_READ: only meaningful on unscaled grads
    scaler.step(optimizer)            # STEP: unscales (if not done yet), skips inf/NaN steps
    scaler.update()

`scaler_events(index, scope)` lists these events of one function in source order. Calls of functions
defined in the same module that clip gradients (`clip_gradient(optimizer, 5.0)`) count as CLIP. A
scaler is a name bound to `GradScaler(...)`/`ShardedGradScaler(...)` or named like one (`scaler`,
`grad_scaler`, `self.scaler`); a scaler built with `enabled=False` is not one. `exclusive(a, b)` says
whether two nodes are in different branches of one `if` (or a `try` body and its handler), so that an
`if amp: ... else: ...` split is not read as one sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, call_arg, method_name, receiver
from trainlint.analysis.optim import is_grad_scaler
from trainlint.analysis.reaching import bound_value, reaching_value
from trainlint.analysis.walk import walk

SCALED_BACKWARD, UNSCALE, STEP, CLIP, NORM_READ = "scaled_backward", "unscale", "step", "clip", "norm_read"

CLIP_FUNCTIONS = {"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grad_value",
                  "clip_grads_with_norm_", "get_total_norm", "dispatch_clip_grad"}
_ACCELERATORS = ("accelerator", "fabric", "trainer", "engine", "strategy", "deepspeed", "model_engine")


@dataclass(frozen=True)
class ScalerEvent:
    kind: str
    node: cst.Call
    scaler: Optional[str] = None  # the scaler's text, for SCALED_BACKWARD, UNSCALE, STEP
    optimizer: Optional[cst.BaseExpression] = None  # for UNSCALE and STEP
    via: Optional[str] = None  # CLIP through a local helper: its name


def _text(index: ModuleIndex, expr: cst.BaseExpression) -> str:
    return index.code(expr).strip()


def _scaler(index: ModuleIndex, expr: Optional[cst.BaseExpression], scope: Scope) -> bool:
    if expr is None or not isinstance(expr, (cst.Name, cst.Attribute)):
        return False
    if not is_grad_scaler(index, expr, scope):
        return False
    ctor = bound_value(index, expr)
    if isinstance(ctor, cst.Call):
        enabled = call_arg(ctor, "enabled")
        if enabled is not None and isinstance(enabled.value, cst.Name) and enabled.value.value == "False":
            return False
    return True


def _scaled_backward(index: ModuleIndex, call: cst.Call, scope: Scope) -> Optional[str]:
    """`scaler.scale(loss).backward()` (or `s = scaler.scale(loss); s.backward()`): the scaler's text."""
    if method_name(call) != "backward":
        return None
    recv = receiver(call)
    if isinstance(recv, cst.Name):
        recv = reaching_value(index, recv)
    if isinstance(recv, cst.Call) and method_name(recv) == "scale":
        s = receiver(recv)
        if _scaler(index, s, scope):
            return _text(index, s)  # type: ignore[arg-type]
    return None


def is_clip_call(index: ModuleIndex, call: cst.Call) -> bool:
    """`torch.nn.utils.clip_grad_norm_(...)` and friends (any import spelling), timm's
    `dispatch_clip_grad`, and an FSDP model's `model.clip_grad_norm_(...)`; not an accelerator's or a
    trainer's own clipping, which unscales first."""
    q = index.callee(call) or ""
    last = q.rsplit(".", 1)[-1]
    if last not in CLIP_FUNCTIONS:
        return False
    if q.startswith("torch.") or last == "dispatch_clip_grad":
        return True
    if "." not in q:  # a bare name: imported from torch
        return index.imports.aliases.get(last, "").startswith(("torch.", "timm."))
    recv = receiver(call)
    name = (index.code(recv).strip().rsplit(".", 1)[-1] if recv is not None else "").lower()
    if any(a in name for a in _ACCELERATORS):
        return False
    ctor = bound_value(index, recv) if isinstance(recv, (cst.Name, cst.Attribute)) else None
    if isinstance(ctor, cst.Call):
        cq = (index.callee(ctor) or "").rsplit(".", 1)[-1]
        return cq in ("FSDP", "FullyShardedDataParallel")
    return False


def is_norm_read(index: ModuleIndex, call: cst.Call) -> bool:
    """A gradient norm computed by hand: `p.grad.norm()`, `p.grad.data.norm(2)`, `torch.norm(p.grad)`."""
    m = method_name(call)
    q = index.callee(call) or ""
    if m == "norm" and _reads_grad(receiver(call)):
        return True
    if q in ("torch.norm", "torch.linalg.norm", "torch.linalg.vector_norm") and call.args:
        return _reads_grad(call.args[0].value)
    return False


def _reads_grad(expr: Optional[cst.BaseExpression]) -> bool:
    while isinstance(expr, cst.Attribute):
        if expr.attr.value == "grad":
            return True
        expr = expr.value
    return False


def _clipping_helpers(index: ModuleIndex) -> Dict[str, cst.FunctionDef]:
    """Module-level functions whose body clips gradients or clamps `.grad` by hand."""

    def compute():
        out = {}
        for name, fn in index.functions.items():
            clips = unscales = False
            for node, _ in walk(fn.body):
                if isinstance(node, cst.Call):
                    if method_name(node) == "unscale_":
                        unscales = True  # a helper that unscales before clipping is the right way round
                    elif is_clip_call(index, node) or (
                            method_name(node) in ("clamp_", "clip_") and _reads_grad(receiver(node))):
                        clips = True
            if clips and not unscales:
                out[name] = fn
        return out

    return index.cached("amp.clipping_helpers", compute)


def scaler_events(index: ModuleIndex, scope: Scope) -> List[ScalerEvent]:
    """The GradScaler events of one function (or the module level), in source order."""
    cache = index.cached("amp.events", dict)
    key = id(scope)
    if key in cache:
        return cache[key]
    helpers = _clipping_helpers(index)
    events: List[ScalerEvent] = []
    for call in index.calls:
        if index.scope.get(call) is not scope:
            continue
        s = _scaled_backward(index, call, scope)
        if s is not None:
            events.append(ScalerEvent(SCALED_BACKWARD, call, s))
            continue
        m = method_name(call)
        recv = receiver(call)
        if m in ("unscale_", "step") and _scaler(index, recv, scope):
            opt = call_arg(call, "optimizer", 0)
            if m == "step" and opt is None:
                continue
            events.append(ScalerEvent(UNSCALE if m == "unscale_" else STEP, call, _text(index, recv),  # type: ignore
                                      opt.value if opt is not None else None))
            continue
        if is_clip_call(index, call):
            events.append(ScalerEvent(CLIP, call))
        elif isinstance(call.func, cst.Name) and call.func.value in helpers and index.functions.get(
                call.func.value) is not scope:
            events.append(ScalerEvent(CLIP, call, via=call.func.value))
        elif is_norm_read(index, call):
            events.append(ScalerEvent(NORM_READ, call))
    cache[key] = events
    return events


def scaled_scopes(index: ModuleIndex) -> List[Scope]:
    """The functions (and the module level) with a scaled backward."""

    def compute():
        seen: List[Scope] = []
        for call in index.calls:
            if method_name(call) == "backward":
                sc = index.scope.get(call)
                if sc not in seen and _scaled_backward(index, call, sc) is not None:
                    seen.append(sc)
        return seen

    return index.cached("amp.scopes", compute)


# -- branches ------------------------------------------------------------------------------------


def _branches(index: ModuleIndex, node: cst.CSTNode) -> Dict[int, str]:
    out: Dict[int, str] = {}
    child, par = node, index.parent.get(node)
    while par is not None:
        if isinstance(par, cst.If):
            if child is par.body:
                out[id(par)] = "body"
            elif child is par.orelse:
                out[id(par)] = "else"
        elif isinstance(par, cst.Try):
            if child is par.body:
                out[id(par)] = "body"
            elif isinstance(child, cst.ExceptHandler):
                out[id(par)] = f"handler{id(child)}"
        elif isinstance(par, (cst.FunctionDef, cst.Lambda)):
            break
        child, par = par, index.parent.get(par)
    return out


def exclusive(index: ModuleIndex, a: cst.CSTNode, b: cst.CSTNode) -> bool:
    """Are `a` and `b` in different branches of one `if`/`try` (so never both in one pass)?"""
    ba, bb = _branches(index, a), _branches(index, b)
    return any(k in bb and bb[k] != v for k, v in ba.items())


def innermost_loop(index: ModuleIndex, node: cst.CSTNode) -> Optional[cst.CSTNode]:
    p = index.parent.get(node)
    while p is not None and not isinstance(p, (cst.FunctionDef, cst.Lambda)):
        if isinstance(p, (cst.For, cst.While)):
            return p
        p = index.parent.get(p)
    return None


def inside(index: ModuleIndex, node: cst.CSTNode, ancestor: Optional[cst.CSTNode]) -> bool:
    if ancestor is None:
        return True
    p = index.parent.get(node)
    while p is not None:
        if p is ancestor:
            return True
        p = index.parent.get(p)
    return False
