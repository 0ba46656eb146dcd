"""TL010 pool-stride-exceeds-kernel: a pooling window that moves further than its own size.

With stride > kernel size, the windows do not touch: the rows and columns between two windows are
never read, and neither their values nor their gradients take part in training (named among the causes
of bad training in the field report `nan-loss-causes-zh`). The usual cause is swapped or mistyped
arguments (`MaxPool2d(2, 3)`).

Reported for PyTorch `MaxPool*`/`AvgPool*`/`LPPool*` modules and their functional forms, Keras
`MaxPooling*`/`AveragePooling*` layers and `tf.nn.max_pool*`/`avg_pool*`, when kernel and stride are
literal integers or tuples (directly, or through a name bound once to one). A kernel of 1 is a plain
subsampling and is left alone, as is a dilated max pooling (its windows have holes by design).
"""

from __future__ import annotations

import ast
from typing import List, Optional

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import call_arg
from trainlint.analysis.reaching import bound_value
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL010"
PREFILTER = (("MaxPool", "AvgPool", "LPPool", "max_pool", "avg_pool", "lp_pool", "AveragePooling"),)

# name -> (framework, kernel keyword, kernel position, stride keyword, stride position)
_TORCH_MODULES = {f"{k}{d}d": ("kernel_size", 0, "stride", 1) for k in ("MaxPool", "AvgPool") for d in (1, 2, 3)}
_TORCH_MODULES.update({f"LPPool{d}d": ("kernel_size", 1, "stride", 2) for d in (1, 2, 3)})
_TORCH_FUNCS = {f"{k}_pool{d}d": ("kernel_size", 1, "stride", 2) for k in ("max", "avg") for d in (1, 2, 3)}
_TORCH_FUNCS.update({f"lp_pool{d}d": ("kernel_size", 2, "stride", 3) for d in (1, 2, 3)})
_KERAS_LAYERS = {f"{k}{d}D": ("pool_size", 0, "strides", 1)
                 for k in ("MaxPooling", "AveragePooling", "MaxPool", "AvgPool") for d in (1, 2, 3)}
_TF_FUNCS = {n: ("ksize", 1, "strides", 2) for n in ("max_pool", "avg_pool", "max_pool1d", "max_pool2d",
                                                     "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d")}
_KERAS_DEFAULT_KERNEL = {"pool_size": 2}
_POOLS = set(_TORCH_MODULES) | set(_TORCH_FUNCS) | set(_KERAS_LAYERS) | set(_TF_FUNCS)


def gate(facts: ModuleFacts, options) -> bool:
    """A pooling layer or function is called with a stride, not both literals with stride <= kernel."""
    for name in _POOLS & facts.calls:
        for call in facts.call_nodes.get(name, ()):
            if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
                continue  # the check skips unpacked arguments too
            if any(_may_skip(call, *sig) for sig in _SIGNATURES_OF[name]):
                return True
    return False


def _may_skip(call: ast.Call, k_kw: str, k_pos: int, s_kw: str, s_pos: int) -> bool:
    stride = _ast_arg(call, s_kw, s_pos)
    if stride is None:
        return False  # the default stride is the kernel size
    kernel = _ast_arg(call, k_kw, k_pos)
    k, s = _ast_ints(kernel), _ast_ints(stride)
    if kernel is None and k_kw in _KERAS_DEFAULT_KERNEL:
        k = [_KERAS_DEFAULT_KERNEL[k_kw]]
    if k is None or s is None:
        return True  # names: the check follows them
    k, s = (k * len(s) if len(k) == 1 else k), (s * len(k) if len(s) == 1 else s)
    return any(sv > kv > 1 for kv, sv in zip(k, s))


# name -> its signatures (`max_pool2d` is both torch's and TensorFlow's)
_SIGNATURES_OF: dict = {}
for _table in (_TORCH_MODULES, _TORCH_FUNCS, _KERAS_LAYERS, _TF_FUNCS):
    for _name, _sig in _table.items():
        _SIGNATURES_OF.setdefault(_name, []).append(_sig)


def _ast_arg(call, keyword: str, position: int):
    for k in call.keywords:
        if k.arg == keyword:
            return k.value
    return call.args[position] if position < len(call.args) else None


def _ast_ints(expr):
    """A literal int, or a tuple/list of them, else None."""
    if isinstance(expr, ast.Constant) and type(expr.value) is int:
        return [expr.value]
    if isinstance(expr, (ast.Tuple, ast.List)) and expr.elts and all(
            isinstance(e, ast.Constant) and type(e.value) is int for e in expr.elts):
        return [e.value for e in expr.elts]
    return None


def _signature(index, call: cst.Call):
    q = index.callee(call) or ""
    mod, _, last = q.rpartition(".")
    imported = index.imports.aliases.get(last, "") if not mod else q
    if last in _TORCH_MODULES and (mod in ("torch.nn", "nn") or imported.startswith("torch.nn")):
        return _TORCH_MODULES[last]
    if last in _TORCH_FUNCS and (mod in ("torch.nn.functional", "F", "nn.functional", "torch")
                                 or imported.startswith("torch.nn.functional")):
        return _TORCH_FUNCS[last]
    if last in _KERAS_LAYERS and ("keras" in mod or mod in ("layers", "L", "tf.keras.layers")
                                  or "keras" in imported):
        return _KERAS_LAYERS[last]
    if last in _TF_FUNCS and mod in ("tf.nn", "tensorflow.nn"):
        return _TF_FUNCS[last]
    return None


def _ints(index, expr: Optional[cst.BaseExpression]) -> Optional[List[int]]:
    """A literal int or tuple/list of ints (through a name bound once), else None."""
    if expr is None:
        return None
    if isinstance(expr, (cst.Name, cst.Attribute)):
        v = bound_value(index, expr)
        if v is None or v is expr:
            return None
        expr = v
    n = number_value(expr)
    if n is not None:
        return [int(n)] if n == int(n) else None
    if isinstance(expr, (cst.Tuple, cst.List)):
        out = []
        for el in expr.elements:
            if isinstance(el, cst.StarredElement):
                return None
            v = number_value(el.value)
            if v is None or v != int(v):
                return None
            out.append(int(v))
        return out or None
    return None


def check(ctx: RuleContext) -> None:
    index = ctx.index
    for call in index.calls:
        sig = _signature(index, call)
        if sig is None or any(a.star for a in call.args):
            continue
        k_kw, k_pos, s_kw, s_pos = sig
        dil = call_arg(call, "dilation")
        if dil is not None and _ints(index, dil.value) not in ([1], [1, 1], [1, 1, 1]):
            continue  # dilated windows have holes by design
        k_arg = call_arg(call, k_kw, k_pos)
        s_arg = call_arg(call, s_kw, s_pos)
        if s_arg is None:
            continue  # the default stride is the kernel size
        kernel = _ints(index, k_arg.value) if k_arg is not None else (
            [_KERAS_DEFAULT_KERNEL[k_kw]] if k_kw in _KERAS_DEFAULT_KERNEL else None)
        stride = _ints(index, s_arg.value)
        if kernel is None or stride is None:
            continue
        if len(kernel) == 1 and len(stride) > 1:
            kernel = kernel * len(stride)
        if len(stride) == 1 and len(kernel) > 1:
            stride = stride * len(kernel)
        if len(kernel) != len(stride):
            continue
        # A window of 1 is a strided slice written as a pooling, always on purpose in real code (FPN's P6,
        # NASNet's factorized reduction, EfficientFormerV2): silent, see the rule page.
        skipped = [(k, s) for k, s in zip(kernel, stride) if s > k > 1]
        if not skipped:
            continue
        k, s = skipped[0]
        ctx.report(call, f"This pooling moves {s} steps with a window of {k}, so {s - k} of every {s} inputs "
                         "are never seen; use a stride no larger than the kernel")
