"""TL017 forward-called-directly: `model.forward(x)` instead of `model(x)`.

`nn.Module.__call__` runs the forward pre-hooks and hooks, and registers the backward hooks, around
`forward`. Calling `forward` directly skips all of them: pruning, quantisation and weight-norm
reparametrisations, feature-extraction hooks, and the hooks of tools such as trainlint's own runtime
mode. DDP/DataParallel wrappers are left alone: their work happens inside their own `forward`.

Reported when the receiver is, in this file, a torch module (`analysis/modules.py`,
`is_torch_module_value`): an instance of a local nn.Module class or of a `torch.nn` layer, a
torchvision/timm/hub/`from_pretrained` model, a parameter annotated `nn.Module`, or a
model the file trains. Inside the methods of an nn.Module (`self.backbone.forward(x)`) it is a warning:
common, and only the submodule's own hooks are skipped. `super().forward(...)`, `Base.forward(self, ...)`,
`self.forward(...)` and `module.forward` passed as a callable (checkpointing) are left alone.
"""

from __future__ import annotations

import ast
import os
import re

import libcst as cst

from trainlint.analysis.graph import backward_target
from trainlint.analysis.index import method_name, receiver
from trainlint.analysis.modes import trained_models
from trainlint.analysis.modules import enclosing_method, is_parallel_wrapper, is_torch_module_value, module_classes
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL017"
PREFILTER = ((".forward(",),)

_TEST_FILE = re.compile(r"(^|/)(tests?|testing)/|(^|/)test_[^/]*\.py$|_test\.py$|conftest\.py$")


def gate(facts: ModuleFacts, options) -> bool:
    """`x.forward(...)` is called on a name or attribute other than `self`, `cls` or a class, outside a test
    file."""
    if _TEST_FILE.search(facts.filename.replace(os.sep, "/")):
        return False
    for call in facts.call_nodes.get("forward", ()):
        recv = call.func.value if isinstance(call.func, ast.Attribute) else None
        if isinstance(recv, ast.Name) and recv.id not in ("self", "cls") and not recv.id[:1].isupper():
            return True
        if isinstance(recv, ast.Attribute) and not recv.attr[:1].isupper():
            return True
    return False



def check(ctx: RuleContext) -> None:
    if _TEST_FILE.search(ctx.filename.replace(os.sep, "/")):
        return  # tests call forward on purpose (shape checks of a bare forward)
    index = ctx.index
    trained = None
    classes = module_classes(index)
    trains = any(backward_target(index, c) is not None for c in index.calls)
    for call in index.calls:
        if method_name(call) != "forward":
            continue
        recv = receiver(call)
        if not isinstance(recv, (cst.Name, cst.Attribute)):
            continue  # super().forward(...), factory().forward(...)
        if isinstance(recv, cst.Name) and (recv.value in ("self", "cls") or recv.value[:1].isupper()):
            continue  # self.forward(...) from another method; Base.forward(self, ...)
        if isinstance(recv, cst.Attribute) and recv.attr.value[:1].isupper():
            continue  # nn.Module.forward(self, x), module.Base.forward(self, x)
        scope = index.scope.get(call)
        if is_parallel_wrapper(index, recv, scope):
            continue  # DDP/DataParallel do their work in forward itself
        if not is_torch_module_value(index, recv, scope):
            if trained is None:
                trained = trained_models(index)
            last = recv.attr.value if isinstance(recv, cst.Attribute) else recv.value
            if last not in trained or (isinstance(recv, cst.Attribute) and not _self_attr(recv)):
                continue
        if not trains and _under_main_guard(index, call):
            continue  # a smoke test at the bottom of a model file: no hooks to skip
        method = enclosing_method(index, call)
        inside_module = method is not None and classes.is_module(index.cls_of.get(method))
        text = index.code(recv).strip()
        ctx.report(
            call,
            f"`{text}.forward(...)` skips the module's hooks (pruning, quantisation, feature extraction, "
            f"`trainlint run`); call `{text}(...)` instead.",
            # training code: hooks (DDP, trainlint run) matter; elsewhere only the module's own hooks
            severity="warning" if inside_module or not trains else None,
            fix=ctx.fix("unsafe", f"Call `{text}(...)`", ctx.replace(call.func, index.code(recv).strip()))
            if "\n" not in index.code(recv) else None,
        )


def _under_main_guard(index, node) -> bool:
    cur = index.parent.get(node)
    while cur is not None:
        if isinstance(cur, cst.If) and isinstance(cur.test, cst.Comparison) and \
                isinstance(cur.test.left, cst.Name) and cur.test.left.value == "__name__":
            return True
        cur = index.parent.get(cur)
    return False


def _self_attr(expr: cst.Attribute) -> bool:
    return isinstance(expr.value, cst.Name) and expr.value.value == "self"
