"""Precision facts: which models (by expression text) are made float16 in a scope or the module."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, call_arg, method_name, receiver
from trainlint.analysis.walk import walk

FP16 = {"torch.float16", "torch.half"}
FP32 = {"torch.float32", "torch.float", "torch.float64", "torch.double"}
HALF_DTYPE_STRINGS = {"float16", "fp16", "half"}


def dtype_of(index: ModuleIndex, expr) -> Optional[str]:
    """'fp16', 'fp32', 'bf16' for a dtype expression, else None."""
    if isinstance(expr, cst.SimpleString):
        v = expr.evaluated_value
        if v in HALF_DTYPE_STRINGS:
            return "fp16"
        if v in ("bfloat16", "bf16"):
            return "bf16"
        if v in ("float32", "fp32", "float"):
            return "fp32"
        return None
    q = index.qualify(expr)
    if q in FP16:
        return "fp16"
    if q in FP32:
        return "fp32"
    if q == "torch.bfloat16":
        return "bf16"
    return None


def cast_of(index: ModuleIndex, call: cst.Call) -> Optional[str]:
    """The dtype a call casts its receiver to: `.half()`, `.to(torch.float16)`, `.float()`, ..."""
    m = method_name(call)
    if m == "half":
        return "fp16"
    if m in ("float", "double"):
        return "fp32"
    if m == "bfloat16":
        return "bf16"
    if m in ("to", "type"):
        dt = call_arg(call, "dtype")
        if dt is not None:
            return dtype_of(index, dt.value)
        for a in call.args:
            if a.keyword is None:
                d = dtype_of(index, a.value)
                if d:
                    return d
    if m == "from_pretrained":
        dt = call_arg(call, "torch_dtype") or call_arg(call, "dtype")
        if dt is not None:
            return dtype_of(index, dt.value)
    return None


def _root_text(index: ModuleIndex, expr) -> Optional[str]:
    """`model` for `model.half().cuda()`: the innermost receiver of a method chain."""
    while isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
        expr = expr.func.value
    if isinstance(expr, (cst.Name, cst.Attribute)):
        return index.code(expr).strip()
    return None


def _casts(index: ModuleIndex):
    """Every cast in the module, once: [(scope, assigned-to text, cast receiver text, dtype)], and the
    dtypes given to `torch.set_default_dtype`."""

    def compute():
        casts = []
        defaults = set()
        for call in index.calls:
            if index.callee(call) == "torch.set_default_dtype" and call.args:
                d = dtype_of(index, call.args[0].value)
                if d:
                    defaults.add(d)
            c = cast_of(index, call)
            if c is None:
                continue
            target = None
            p = index.parent.get(call)
            # `model = Net().half()` / `model = X.from_pretrained(..., torch_dtype=torch.float16)`
            while isinstance(p, (cst.Call, cst.Attribute)):
                p = index.parent.get(p)
            if isinstance(p, cst.Assign) and len(p.targets) == 1:
                target = index.code(p.targets[0].target).strip()
            recv = receiver(call)
            on = _root_text(index, recv) if recv is not None else None
            casts.append((index.scope.get(call), target, on, c))
        return casts, defaults

    return index.cached("precision.casts", compute)


def model_dtype(index: ModuleIndex, model: str, scope: Scope) -> Optional[str]:
    """The dtype `model` is cast to in `scope` (or the module), when all casts agree; else None."""
    casts, defaults = _casts(index)
    found = set(defaults)  # torch.set_default_dtype(torch.float16) makes every new model fp16
    for sc, target, on, c in casts:
        if sc is not scope and sc is not None and not model.startswith("self."):
            continue
        if target == model or on == model:
            found.add(c)
    if len(found) == 1:
        return found.pop()
    return None


def params_model(index: ModuleIndex, expr, scope: Scope, depth: int = 0) -> Optional[str]:
    """The model whose parameters an optimizer gets: `model.parameters()`, param groups, filtered lists.
    Returns None when the parameters are copied or cast (fp32 master weights)."""
    if depth > 3:
        return None
    if isinstance(expr, cst.Name):
        v = index.resolve_value(expr, scope)
        if v is expr:
            return None
        return params_model(index, v, scope, depth + 1)
    for node, _ in walk(expr):
        if isinstance(node, cst.Call) and cast_of(index, node) in ("fp32", "bf16"):
            return None  # master weights: [p.float() for p in model.parameters()]
    for node, _ in walk(expr):
        if isinstance(node, cst.Call) and method_name(node) in ("parameters", "named_parameters"):
            recv = receiver(node)
            if recv is not None:
                return index.code(recv).strip()
    return None


def possible_strings(index: ModuleIndex, expr, scope: Scope, depth: int = 0) -> set:
    """The string values an expression can take: literals, both arms of `a if c else b`, every value
    assigned to a name, and a parameter's default."""
    if expr is None or depth > 4:
        return set()
    if isinstance(expr, cst.SimpleString):
        v = expr.evaluated_value
        return {v} if isinstance(v, str) else set()
    if isinstance(expr, cst.IfExp):
        return possible_strings(index, expr.body, scope, depth + 1) | possible_strings(index, expr.orelse, scope, depth + 1)
    if isinstance(expr, cst.Name):
        out = set()
        for v in index.values_of(expr.value, scope):
            out |= possible_strings(index, v, scope, depth + 1)
        if index.is_param(expr.value, scope):
            out |= possible_strings(index, index.param_default(expr.value, scope), scope, depth + 1)
        return out
    return set()


def fabric_half_precision(index: ModuleIndex):
    """The Lightning Fabric constructions of the module whose `precision` can be a "true" float16
    setting ("16-true", "half"): Fabric then converts the model's parameters themselves to float16, and an
    optimizer it sets up runs on them. [(call, precision string)]"""
    from trainlint.analysis.library import FABRIC_FP16_PARAMS

    def compute():
        out = []
        for call in index.calls:
            q = index.callee(call) or ""
            if q.rsplit(".", 1)[-1] != "Fabric" or not q.startswith(("lightning", "L.", "lightning_fabric")):
                continue
            arg = call_arg(call, "precision")
            if arg is None:
                continue
            half = possible_strings(index, arg.value, index.scope.get(call)) & FABRIC_FP16_PARAMS
            if half:
                out.append((call, sorted(half)[0]))
        return out

    return index.cached("precision.fabric-half", compute)


def set_up_by_fabric(index: ModuleIndex, optimizer_call: cst.Call) -> bool:
    """Is the optimizer built by this call handed to `fabric.setup(...)`/`setup_optimizers(...)`?"""
    p = index.parent.get(optimizer_call)
    if not (isinstance(p, cst.Assign) and len(p.targets) == 1 and isinstance(p.targets[0].target, cst.Name)):
        return False
    name = p.targets[0].target.value
    scope = index.scope.get(optimizer_call)
    for call in index.calls:
        if method_name(call) in ("setup", "setup_optimizers") and index.scope.get(call) is scope:
            if any(isinstance(a.value, cst.Name) and a.value.value == name for a in call.args):
                return True
    return False
