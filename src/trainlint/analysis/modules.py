"""nn.Module classes: which classes of a module are torch modules, and which method a node sits in.

A class is a torch module when its bases reach `torch.nn.Module` (or any `torch.nn` layer class, or
Lightning's `LightningModule`) through the classes of the same module. A class whose base comes from
elsewhere (a project base class in another file) is taken as a module only when it defines `forward`:
in PyTorch code that is the mark of a module. Keras/TensorFlow bases are never torch modules.
"""

from __future__ import annotations

from typing import Dict, Optional, Set

import libcst as cst

from trainlint.analysis.index import ModuleIndex

_TORCH_BASE_PREFIXES = ("torch.nn.", "nn.")
# Bases that are not torch modules: other frameworks, torch's non-module classes (autograd.Function
# has a static `forward`), and plain Python bases.
_NOT_TORCH = ("keras", "tensorflow", "tf.", "flax", "jax", "haiku", "mxnet", "paddle", "mindspore", "oneflow",
              "torch.")
_PLAIN_BASES = {"object", "ABC", "abc.ABC", "Exception", "dict", "list", "tuple", "typing.NamedTuple",
                "NamedTuple", "enum.Enum", "Enum", "typing.Generic", "Generic", "typing.Protocol", "Protocol"}


class ModuleClasses:
    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self._memo: Dict[str, bool] = {}

    def is_module(self, klass: Optional[cst.ClassDef]) -> bool:
        if klass is None:
            return False
        return self._is_module(klass, set())

    def _is_module(self, klass: cst.ClassDef, seen: Set[str]) -> bool:
        name = klass.name.value
        if name in self._memo:
            return self._memo[name]
        if name in seen:
            return False
        seen.add(name)
        result, unknown = False, False
        for base in klass.bases:
            if base.keyword is not None:
                continue
            q = self.index.qualify(base.value)
            if q is None:
                unknown = True
            elif q.startswith(_TORCH_BASE_PREFIXES) or q.endswith("LightningModule"):
                result = True
            elif q.startswith(_NOT_TORCH) or q in _PLAIN_BASES:
                continue
            elif q in self.index.classes and self.index.classes[q] is not klass:
                result = self._is_module(self.index.classes[q], seen)
            else:
                unknown = True
            if result:
                break
        if not result and unknown and (name, "forward") in self.index.methods:
            imports = self.index.imports
            result = any(imports.imports_module(m) for m in ("torch", "lightning", "pytorch_lightning"))
        self._memo[name] = result
        return result


def module_classes(index: ModuleIndex) -> ModuleClasses:
    return index.cached("module_classes", lambda: ModuleClasses(index))


def enclosing_method(index: ModuleIndex, node: cst.CSTNode) -> Optional[cst.FunctionDef]:
    """The method (a def directly in a class body) that holds `node`, through nested functions."""
    fn = index.scope.get(node)
    while fn is not None:
        if isinstance(fn, cst.FunctionDef) and index._owner_class(fn) is not None:
            return fn
        fn = index.scope.get(fn)
    return None


def self_name(method: cst.FunctionDef) -> Optional[str]:
    """The name of a method's first parameter (`self`), unless it is a static or class method."""
    for d in method.decorators:
        dec = d.decorator
        name = dec.value if isinstance(dec, cst.Name) else dec.attr.value if isinstance(dec, cst.Attribute) else ""
        if name in ("staticmethod", "classmethod"):
            return None
    params = [*method.params.posonly_params, *method.params.params]
    return params[0].name.value if params else None


_NO_GRAD = {"torch.no_grad", "torch.inference_mode", "no_grad", "inference_mode"}


def inference_only(index: ModuleIndex, fn: cst.FunctionDef) -> bool:
    """A function decorated `@torch.no_grad()` / `@torch.inference_mode()`: it only runs at inference
    (sampling, evaluation), where what it does on purpose is not a training-mode bug."""
    for d in fn.decorators:
        dec = d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator
        q = index.qualify(dec) or ""
        if q in _NO_GRAD:
            return True
    return False


def mentions_training(expr: cst.CSTNode) -> bool:
    """Does an expression read a `training` flag (`self.training`, `training`, `is_training`)?"""
    from trainlint.analysis.walk import walk

    for node, _ in walk(expr):
        name = node.value if isinstance(node, cst.Name) else (
            node.attr.value if isinstance(node, cst.Attribute) else None)
        if isinstance(name, str) and "training" in name.lower():
            return True
    return False


def mode_guarded(index: ModuleIndex, node: cst.CSTNode, stop: Optional[cst.CSTNode] = None) -> bool:
    """Is `node` under an `if`/conditional expression (up to `stop`) whose test reads the training flag?"""
    child, cur = node, index.parent.get(node)
    while cur is not None and cur is not stop:
        if isinstance(cur, (cst.If, cst.IfExp)) and child is not cur.test and mentions_training(cur.test):
            return True
        child, cur = cur, index.parent.get(cur)
    return False


_MODEL_FACTORIES = ("torchvision.models.", "timm.create_model", "timm.models.", "torch.hub.load",
                    "segmentation_models_pytorch.", "smp.")
_WRAPPERS = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "DDP", "FSDP")


def is_torch_module_value(index: ModuleIndex, expr: cst.BaseExpression, scope) -> bool:
    """Is `expr` (a name or `self.x`) bound, in this file, to a torch module: an instance of a local
    nn.Module class or of a `torch.nn` layer, a torchvision/timm/hub model, a `from_pretrained` model, a
    DDP/DataParallel wrapper of one, or a parameter annotated `nn.Module`?"""
    if isinstance(expr, cst.Name):
        values = index.values_of(expr.value, scope)
        if not values and isinstance(scope, cst.FunctionDef):
            return _annotated_module(index, scope, expr.value)
    elif isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        values = index.attr_assigns.get(expr.attr.value, [])
    else:
        return False
    for v in values:
        while isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and \
                v.func.attr.value in ("to", "cuda", "cpu", "float", "half", "double", "eval", "train"):
            v = v.func.value
        if not isinstance(v, cst.Call):
            continue
        q = index.callee(v) or ""
        last = q.rsplit(".", 1)[-1]
        if q.startswith(("torch.nn.", "nn.")) and last[:1].isupper() and not last.endswith("Loss"):
            return True
        if last in _WRAPPERS or q.startswith(_MODEL_FACTORIES) or last == "from_pretrained":
            return True
        local = index.classes.get(q)
        if local is not None and module_classes(index).is_module(local):
            return True
    return False


def _annotated_module(index: ModuleIndex, fn: cst.FunctionDef, name: str) -> bool:
    for p in [*fn.params.posonly_params, *fn.params.params, *fn.params.kwonly_params]:
        if p.name.value == name and p.annotation is not None:
            q = index.qualify(p.annotation.annotation) or ""
            return q in ("torch.nn.Module", "nn.Module") or q.endswith("LightningModule")
    return False


def is_parallel_wrapper(index: ModuleIndex, expr: cst.BaseExpression, scope) -> bool:
    """Is `expr` last bound to a DDP/DataParallel/FSDP wrapper? Their own `forward` does the wrapper's work
    (scatter, reducer preparation), so calling it directly loses nothing of theirs."""
    if isinstance(expr, cst.Name):
        values = index.values_of(expr.value, scope)
    elif isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        values = index.attr_assigns.get(expr.attr.value, [])
    else:
        return False
    # the last binding in the file's order: `model = Net(); model = DDP(model)` ends as the wrapper
    last = values[-1] if values else None
    return isinstance(last, cst.Call) and (index.callee(last) or "").rsplit(".", 1)[-1] in _WRAPPERS
