"""Learning-rate schedulers and optimizer steps as calls: which call steps which optimizer or scheduler.

A scheduler is a value built by `torch.optim.lr_scheduler.*` (or a `transformers`/`diffusers`
`get_*schedule*` factory, which return `LambdaLR`s, or a class named like `...LR`/`...Scheduler`),
else a name that says so (`scheduler`, `lr_scheduler`, `sched_g`). Its optimizer is the first argument
of that constructor when the module shows it.
"""

from __future__ import annotations

import re
from typing import List, Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, call_arg, method_name, receiver
from trainlint.analysis.optim import assigned_values, is_grad_scaler, is_optimizer

_SCHED_NAME = re.compile(r"sched|(^|_)lr_?s(_|$)", re.IGNORECASE)
# Schedulers whose step() takes a metric or an epoch and sets the rate from it (order does not skip one).
_STEP_WITH_ARGUMENT = ("ReduceLROnPlateau",)
# Libraries whose schedulers are not torch LRSchedulers (timm's step(epoch), step_update(n)).
_NOT_TORCH_SCHEDULERS = ("timm.", "mmcv.", "mmengine.", "detectron2.solver.build_lr_scheduler")


def scheduler_constructor(index: ModuleIndex, value) -> Optional[str]:
    """The qualified name of the scheduler a value is built by, else None."""
    if not isinstance(value, cst.Call):
        return None
    q = index.callee(value) or ""
    last = q.rsplit(".", 1)[-1]
    if "lr_scheduler" in q or re.match(r"get_\w*schedule", last) or last.endswith(("LR", "Scheduler")) or \
            last in ("OneCycleLR", "LambdaLR", "SequentialLR", "ChainedScheduler"):
        return q
    return None


def scheduler_values(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> List[cst.BaseExpression]:
    return [v for v in assigned_values(index, expr, scope) if isinstance(v, cst.BaseExpression)]


def _leaf(expr) -> Optional[str]:
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return expr.value if isinstance(expr, cst.Name) else None


def is_scheduler(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> bool:
    values = scheduler_values(index, expr, scope)
    if values:
        if any(scheduler_constructor(index, v) for v in values):
            return True
        if all(isinstance(v, cst.Call) for v in values):
            return False  # bound to something else we can see
    return bool(_SCHED_NAME.search(_leaf(expr) or ""))


def is_torch_style_scheduler(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> bool:
    """A scheduler whose argument-less step() advances one position (torch's LRScheduler protocol)."""
    for v in scheduler_values(index, expr, scope):
        q = scheduler_constructor(index, v) or (index.callee(v) if isinstance(v, cst.Call) else "") or ""
        if q.startswith(_NOT_TORCH_SCHEDULERS) or q.rsplit(".", 1)[-1] in _STEP_WITH_ARGUMENT:
            return False
        if isinstance(v, cst.Call) and (q.rsplit(".", 1)[-1].startswith("create_scheduler")):
            return False
    return True


_FACTORY_LIBRARIES = ("transformers.", "diffusers.", "torch.optim.lr_scheduler.")


def standard_scheduler(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> bool:
    """Is the scheduler known to follow torch's LRScheduler protocol (the constructor sets the initial
    rate; `step()` moves to the next one)? Only when every constructor this file assigns to the name (in
    `scope`, else anywhere in the file) is `torch.optim.lr_scheduler.*`, a `transformers`/`diffusers`
    schedule factory, or a local subclass of torch's scheduler that keeps its `step()`. A project's own
    scheduler may set the rate for the coming step in `step()` (NVIDIA's BERT schedulers read the
    optimizer's step count), where calling it first is right."""
    values = [v for v in scheduler_values(index, expr, scope) if isinstance(v, cst.Call)]
    if not values:
        name = _leaf(expr)
        if name is None:
            return False
        values = [v for sc in index.assigns.values() for v in sc.get(name, []) if isinstance(v, cst.Call)]
        values += [v for v in index.attr_assigns.get(name, []) if isinstance(v, cst.Call)]
    if not values:
        return False
    return all(_standard_constructor(index, v) for v in values)


def _standard_constructor(index: ModuleIndex, call: cst.Call) -> bool:
    q = index.callee(call) or ""
    last = q.rsplit(".", 1)[-1]
    if q.startswith(_FACTORY_LIBRARIES):
        return True
    if re.match(r"get_\w*schedule", last) and "." not in q:
        return True  # `from transformers import get_linear_schedule_with_warmup` resolves to the library
    klass = index.classes.get(q)
    if klass is not None:
        bases = [index.qualify(b.value) or "" for b in klass.bases]
        keeps_step = (klass.name.value, "step") not in index.methods
        return keeps_step and any(b.startswith("torch.optim.lr_scheduler.") for b in bases)
    return False


def scheduler_optimizer(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> Optional[cst.BaseExpression]:
    """The optimizer a scheduler was built on, when the module shows a single constructor."""
    values = [v for v in scheduler_values(index, expr, scope) if scheduler_constructor(index, v)]
    if len(values) != 1:
        return None
    arg = call_arg(values[0], "optimizer", 0)
    if arg is None or not isinstance(arg.value, (cst.Name, cst.Attribute)):
        return None
    return arg.value


def stepped_optimizer(index: ModuleIndex, call: cst.Call, scope: Scope) -> Optional[cst.BaseExpression]:
    """The optimizer a call steps: `opt.step()`, `scaler.step(opt)`, `xm.optimizer_step(opt)`."""
    m = method_name(call)
    recv = receiver(call)
    if m == "step" and recv is not None:
        if is_optimizer(index, recv, scope) and not is_scheduler(index, recv, scope):
            return recv
        if call.args and is_grad_scaler(index, recv, scope) and is_optimizer(index, call.args[0].value, scope):
            return call.args[0].value
        return None
    if m == "optimizer_step" and call.args and is_optimizer(index, call.args[0].value, scope):
        return call.args[0].value
    return None
