"""Train/eval mode of models: which calls switch a model's mode, which models this file trains, and
whether a model provably has no mode-dependent layer.

- `mode_switch(call)`: "eval" for `m.eval()` / `m.train(False)`, "train" for `m.train()` /
  `m.train(True)`, "set" for `m.train(flag)` (a mode from a variable), else None. A `.train(...)` with
  any other argument (`model.train(data)`, scikit-learn style) is no switch.
- `trained_models(index)`: the last names of receivers put in train mode somewhere in the file, and of
  models whose `.parameters()` are handed to an optimizer constructor: the models this file trains.
- `constructed_model_class(index, expr, scope)`: the local nn.Module class a name is built from.
- `mode_free(index, klass)`: the class (and the local classes it uses) provably has no BatchNorm,
  Dropout or other layer whose behaviour depends on the mode.
"""

from __future__ import annotations

import re
from typing import Optional, Set

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, method_name, receiver
from trainlint.analysis.modules import module_classes
from trainlint.analysis.optim import is_optimizer_constructor
from trainlint.analysis.walk import walk

_MODE_LAYERS = re.compile(r"Norm|[Dd]ropout|drop_path|DropPath|training")


def mode_switch(call: cst.Call) -> Optional[str]:
    m = method_name(call)
    if m == "eval" and not call.args:
        return "eval"
    if m != "train":
        return None
    if not call.args:
        return "train"
    if len(call.args) != 1 or call.args[0].star:
        return None
    arg = call.args[0]
    if arg.keyword is not None and arg.keyword.value != "mode":
        return None
    v = arg.value
    if isinstance(v, cst.Name) and v.value in ("True", "False"):
        return "train" if v.value == "True" else "eval"
    if isinstance(v, (cst.Name, cst.Attribute)) and _flag_like(v):
        return "set"
    return None


def _flag_like(expr) -> bool:
    name = expr.attr.value if isinstance(expr, cst.Attribute) else expr.value
    return bool(re.search(r"mode|train|flag|is_|enable|eval", name, re.IGNORECASE))


def last_name(text: str) -> str:
    """`model` for `self.model`, `models` for `models[0]`."""
    names = re.findall(r"[A-Za-z_]\w*", text.split("[")[0])
    return names[-1] if names else text


def keys_match(a: str, b: str) -> bool:
    """Same model: equal, or one is the other's submodule/wrapper (`model.module` and `model`)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def trained_models(index: ModuleIndex) -> Set[str]:
    def compute() -> Set[str]:
        out: Set[str] = set()
        for call in index.calls:
            if mode_switch(call) in ("train", "set"):
                recv = receiver(call)
                if isinstance(recv, (cst.Name, cst.Attribute)):
                    name = recv.attr.value if isinstance(recv, cst.Attribute) else recv.value
                    if name != "self":
                        out.add(name)
            elif is_optimizer_constructor(index, call):
                for node, _ in walk(call):
                    if isinstance(node, cst.Call) and method_name(node) in ("parameters", "named_parameters"):
                        recv = receiver(node)
                        if isinstance(recv, cst.Name):
                            out.add(recv.value)
                        elif isinstance(recv, cst.Attribute):
                            out.add(recv.attr.value)
        return out

    return index.cached("trained_models", compute)


_SAME_MODULE_METHODS = ("to", "cuda", "cpu", "float", "double", "half", "bfloat16", "eval", "train",
                        "requires_grad_")


def model_expr(expr: cst.BaseExpression) -> cst.BaseExpression:
    """`transformer` for `transformer.to(device)`: calls that return the module itself are looked through."""
    while isinstance(expr, cst.Call) and method_name(expr) in _SAME_MODULE_METHODS:
        expr = receiver(expr)
    return expr


def constructed_model_class(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> Optional[cst.ClassDef]:
    """The local nn.Module class that `expr` (a name or `self.x`) is built from, when every value the file
    assigns to it is an instance of that one class."""
    klass = None
    for value in _values(index, expr, scope):
        value = model_expr(value)
        if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Name):
            return None
        k = index.classes.get(value.func.value)
        if k is None or (klass is not None and k is not klass) or not module_classes(index).is_module(k):
            return None
        klass = k
    return klass


_NORM_FACTORIES = ("torchvision.models.", "timm.create_model", "timm.models.")


def built_by_factory_with_norm(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> bool:
    """Every value is a torchvision/timm model (their architectures use BatchNorm or Dropout)."""
    values = _values(index, expr, scope)
    return bool(values) and all(
        isinstance(model_expr(v), cst.Call) and (index.callee(model_expr(v)) or "").startswith(_NORM_FACTORIES)
        for v in values)


def _values(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope):
    from trainlint.analysis.optim import assigned_values

    return [v for v in assigned_values(index, expr, scope) if isinstance(v, cst.BaseExpression)]


def mode_free(index: ModuleIndex, klass: cst.ClassDef, depth: int = 0) -> bool:
    """No mode-dependent layer in the class, its local bases and the local classes it instantiates; every
    other layer it builds comes from `torch.nn` and is one of the mode-free kinds."""
    if depth > 4:
        return False
    if _MODE_LAYERS.search(index.code(klass)):
        return False
    for base in klass.bases:
        q = index.qualify(base.value) or ""
        if q.startswith(("torch.nn.", "nn.")):
            if q.rsplit(".", 1)[-1] not in ("Module",):
                return False  # nn.Sequential etc. of unknown content: not provable
            continue
        local = index.classes.get(q)
        if local is None or not mode_free(index, local, depth + 1):
            return False
    for node, _ in walk(klass):
        if isinstance(node, cst.Call) and isinstance(node.func, (cst.Name, cst.Attribute)):
            q = index.callee(node) or ""
            last = q.rsplit(".", 1)[-1]
            if not last[:1].isupper():
                continue  # function calls (F.relu, torch.cat) have no mode
            if q.startswith(("torch.nn.", "nn.")):
                continue  # the pattern above already ruled out the mode-dependent torch.nn layers
            local = index.classes.get(q)
            if local is None or local is klass or not mode_free(index, local, depth + 1):
                return False
    return True


def optimizer_models(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope) -> Optional[Set[str]]:
    """Last names of the models whose `.parameters()` the optimizer `expr` was built on; None if unknown."""
    from trainlint.analysis.optim import assigned_values

    out: Set[str] = set()
    values = [v for v in assigned_values(index, expr, scope) if isinstance(v, cst.Call)]
    if not values:
        return None
    for v in values:
        if not is_optimizer_constructor(index, v):
            return None
        for node, _ in walk(v):
            if isinstance(node, cst.Call) and method_name(node) in ("parameters", "named_parameters"):
                recv = model_expr(receiver(node))
                if isinstance(recv, cst.Name):
                    out.add(recv.value)
                elif isinstance(recv, cst.Attribute):
                    out.add(recv.attr.value)
                    if isinstance(recv.value, cst.Name) and recv.value.value != "self":
                        out.add(recv.value.value)
    return out or None


def model_aliases(index: ModuleIndex, name: str, scope: Scope) -> Set[str]:
    """`ddp_model` for `model` when `ddp_model = DDP(model, ...)` (and the reverse), in `scope`."""
    out = {name}
    for other, values in index.assigns.get(scope, {}).items():
        for v in values:
            if isinstance(v, cst.Call) and v.args and isinstance(model_expr(v.args[0].value), cst.Name):
                inner = model_expr(v.args[0].value).value
                if inner == name:
                    out.add(other)
                elif other == name:
                    out.add(inner)
    return out
