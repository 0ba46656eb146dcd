"""Loss calls and what they expect as input: logits, log-probabilities or probabilities.

`loss_call(index, call)` recognises a call that computes a classification loss and says which input
it expects:

| kind          | applies itself        | expects          | PyTorch                                    | TensorFlow / Keras |
|---------------|-----------------------|------------------|--------------------------------------------|--------------------|
| cross_entropy | log_softmax           | logits           | `F.cross_entropy`, `nn.CrossEntropyLoss`   | `tf.nn.(sparse_)softmax_cross_entropy_with_logits`, `(Sparse)CategoricalCrossentropy(from_logits=True)` |
| bce_logits    | sigmoid               | logits           | `F.binary_cross_entropy_with_logits`, `nn.BCEWithLogitsLoss` | `tf.nn.sigmoid_cross_entropy_with_logits`, `BinaryCrossentropy(from_logits=True)` |
| nll           | nothing               | log-probabilities| `F.nll_loss`, `nn.NLLLoss`                 | |
| bce           | log                   | probabilities    | `F.binary_cross_entropy`, `nn.BCELoss`     | |

Loss objects are followed from where they are called to where they are built: a local name (the
assignment that certainly reaches the call), `self.criterion` bound once in the module, or a
module-level name. `input` is the prediction argument of the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, call_arg
from trainlint.analysis.reaching import bound_value

CROSS_ENTROPY, BCE_LOGITS, NLL, BCE = "cross_entropy", "bce_logits", "nll", "bce"

_TORCH_FUNCS = {"cross_entropy": CROSS_ENTROPY, "nll_loss": NLL,
                "binary_cross_entropy_with_logits": BCE_LOGITS, "binary_cross_entropy": BCE}
_TORCH_CLASSES = {"CrossEntropyLoss": CROSS_ENTROPY, "NLLLoss": NLL, "BCEWithLogitsLoss": BCE_LOGITS,
                  "BCELoss": BCE}
_TF_FUNCS = {"softmax_cross_entropy_with_logits": CROSS_ENTROPY,
             "softmax_cross_entropy_with_logits_v2": CROSS_ENTROPY,
             "sparse_softmax_cross_entropy_with_logits": CROSS_ENTROPY,
             "sigmoid_cross_entropy_with_logits": BCE_LOGITS}
# Keras losses: the kind they have with from_logits=True.
_KERAS_FUNCS = {"categorical_crossentropy": CROSS_ENTROPY, "sparse_categorical_crossentropy": CROSS_ENTROPY,
                "binary_crossentropy": BCE_LOGITS}
_KERAS_CLASSES = {"CategoricalCrossentropy": CROSS_ENTROPY, "SparseCategoricalCrossentropy": CROSS_ENTROPY,
                  "BinaryCrossentropy": BCE_LOGITS}
# every name above: a module that names none of them cannot call one of these losses
LOSS_NAMES = frozenset(_TORCH_FUNCS) | frozenset(_TORCH_CLASSES) | frozenset(_TF_FUNCS) | frozenset(_KERAS_FUNCS) \
    | frozenset(_KERAS_CLASSES)
_TORCH_F = ("torch.nn.functional", "F", "nn.functional")
_TF_NN = ("tensorflow.nn", "tf.nn", "tensorflow.compat.v1.nn", "tf.compat.v1.nn")
_KERAS_MODS = ("keras.losses", "tensorflow.keras.losses", "tf.keras.losses", "keras.backend",
               "tensorflow.keras.backend", "tf.keras.backend", "K", "losses", "keras.metrics")


@dataclass(frozen=True)
class LossCall:
    kind: str
    call: cst.Call
    input: Optional[cst.BaseExpression]
    ctor: Optional[cst.Call] = None  # the construction of the loss object, when called through one
    framework: str = "torch"


def _split(q: Optional[str]):
    if not q or "." not in q:
        return "", q or ""
    mod, _, last = q.rpartition(".")
    return mod, last


def _from_logits(call: cst.Call) -> bool:
    a = call_arg(call, "from_logits")
    return a is not None and isinstance(a.value, cst.Name) and a.value.value == "True"


def loss_constructor(index: ModuleIndex, ctor: cst.Call) -> Optional[str]:
    """The kind of loss object a construction builds (`nn.CrossEntropyLoss()`,
    `tf.keras.losses.CategoricalCrossentropy(from_logits=True)`), or None."""
    q = index.callee(ctor) or ""
    mod, last = _split(q)
    if last in _TORCH_CLASSES and (mod in ("torch.nn", "nn", "torch.nn.modules.loss") or
                                   not mod and index.imports.aliases.get(last, "").startswith("torch.nn")):
        return _TORCH_CLASSES[last]
    if last in _KERAS_CLASSES and (mod in _KERAS_MODS or
                                   not mod and "losses" in index.imports.aliases.get(last, "")):
        return _KERAS_CLASSES[last] if _from_logits(ctor) else None
    return None


def loss_call(index: ModuleIndex, call: cst.Call) -> Optional[LossCall]:
    """The loss a call computes and its prediction argument (see the module docstring), or None."""
    if any(a.star for a in call.args):
        return None
    q = index.callee(call)
    mod, last = _split(q)
    if last in _TORCH_FUNCS and (mod in _TORCH_F or not mod and
                                 index.imports.aliases.get(last, "").startswith("torch.nn.functional")):
        a = call_arg(call, "input", 0)
        return LossCall(_TORCH_FUNCS[last], call, a.value if a else None)
    if last in _TF_FUNCS and (mod in _TF_NN or not mod and index.imports.aliases.get(last, "").startswith(
            ("tensorflow.nn", "tf.nn"))):
        a = call_arg(call, "logits", 1)
        return LossCall(_TF_FUNCS[last], call, a.value if a else None, framework="tf")
    if last in _KERAS_FUNCS and mod in _KERAS_MODS and _from_logits(call):
        a = call_arg(call, "y_pred", 1) or call_arg(call, "output", 1)
        return LossCall(_KERAS_FUNCS[last], call, a.value if a else None, framework="keras")
    # a loss object called on a prediction: `criterion(out, y)`, `nn.CrossEntropyLoss()(out, y)`
    func = call.func
    if isinstance(func, cst.Call):
        ctor: Optional[cst.BaseExpression] = func
    elif _leaf(func) in _loss_object_names(index):
        ctor = bound_value(index, func)
    else:
        return None
    if isinstance(ctor, cst.Call):
        kind = loss_constructor(index, ctor)
        if kind is not None:
            keras = (index.callee(ctor) or "").rsplit(".", 1)[-1] in _KERAS_CLASSES
            if keras:
                a = call_arg(call, "y_pred", 1)
            else:
                a = call_arg(call, "input", 0)
            return LossCall(kind, call, a.value if a else None, ctor, "keras" if keras else "torch")
    return None


def _leaf(expr: cst.BaseExpression) -> Optional[str]:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return None


def _loss_object_names(index: ModuleIndex) -> FrozenSet[str]:
    """Names (and `self.` attributes) that this module binds to a loss construction: only calls of these
    can be loss objects, so nothing else is followed (following every call would be slow)."""

    def compute():
        names = set()
        for c in index.calls:
            if loss_constructor(index, c) is None:
                continue
            p = index.parent.get(c)
            targets = [t.target for t in p.targets] if isinstance(p, cst.Assign) else (
                [p.target] if isinstance(p, cst.AnnAssign) else [])
            for t in targets:
                leaf = _leaf(t)
                if leaf:
                    names.add(leaf)
        return frozenset(names)

    return index.cached("lossfns.objects", compute)
