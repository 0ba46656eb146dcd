"""Activations: is this value the output of a softmax, log_softmax or sigmoid?

`activation_of(index, expr)` names the activation a value comes out of, in PyTorch, TensorFlow and
Keras spellings:

- calls: `torch.softmax(x, 1)`, `F.softmax`, `x.softmax(-1)`, `torch.sigmoid`, `x.sigmoid()`,
  `F.log_softmax`, `tf.nn.softmax`, `tf.math.sigmoid`, `K.softmax`, `keras.ops.sigmoid`, ...;
- activation modules called on a value: `nn.Softmax(dim=1)(x)`, `self.softmax(x)` (an attribute bound
  once to `nn.Softmax(...)`, or to an `nn.Sequential(...)` whose last layer is one), a local `sm(x)`;
- a model defined in the same module whose `forward` returns that activation on every path
  (`model = Net(); out = model(x)`): a model that returns logits while training
  (`if self.training: return x`) is not an activated value;
- local names, through the assignment that certainly reaches the read (`analysis.reaching`), and
  through operations that keep the values (`.view`, `.squeeze`, `.float()`, `p[:, 1]`, ...).

Arithmetic (`p + eps`, `p * mask`), clamps and anything unknown end the chain: the answer is None.
"""

from __future__ import annotations

from typing import Dict, Optional

import libcst as cst

from trainlint.analysis.index import ModuleIndex, method_name, receiver
from trainlint.analysis.reaching import bound_value, reaching_value

SOFTMAX, LOG_SOFTMAX, SIGMOID, LOGSIGMOID = "softmax", "log_softmax", "sigmoid", "logsigmoid"

# The last part of a function's qualified name -> activation, for the modules below.
_FUNCS = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX, "sigmoid": SIGMOID, "logsigmoid": LOGSIGMOID,
          "expit": SIGMOID, "log_sigmoid": LOGSIGMOID}
_FUNC_MODULES = (
    "torch", "torch.nn.functional", "torch.special", "F", "nn.functional",
    "tensorflow", "tensorflow.nn", "tensorflow.math", "tf", "tf.nn", "tf.math",
    "tensorflow.keras.activations", "tf.keras.activations", "keras.activations", "keras.ops",
    "keras.backend", "tensorflow.keras.backend", "tf.keras.backend", "K", "jax.nn", "scipy.special",
)
_METHODS = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX, "sigmoid": SIGMOID, "sigmoid_": SIGMOID}
_MODULE_CLASSES = {"Softmax": SOFTMAX, "LogSoftmax": LOG_SOFTMAX, "Sigmoid": SIGMOID,
                   "LogSigmoid": LOGSIGMOID, "Softmax2d": SOFTMAX}
# Operations that keep an activation's values (shape, dtype, device, selection).
_KEEP_METHODS = {"view", "reshape", "squeeze", "unsqueeze", "permute", "transpose", "contiguous",
                 "float", "double", "half", "to", "type", "flatten", "clone", "detach", "cpu", "cuda",
                 "view_as", "reshape_as", "squeeze_", "unsqueeze_", "movedim"}
_KEEP_FUNCS = {"squeeze", "unsqueeze", "reshape", "transpose", "permute", "flatten"}


def activation_function(index: ModuleIndex, call: cst.Call) -> Optional[str]:
    """The activation a *function or method call* applies: `F.softmax(x)`, `x.sigmoid()`, `tf.nn.softmax`."""
    q = index.callee(call)
    if q is not None and "." in q:
        mod, _, last = q.rpartition(".")
        if last in _FUNCS and mod in _FUNC_MODULES:
            return _FUNCS[last]
    elif q is not None and q in _FUNCS:
        # a bare name imported from one of the modules (`from torch import sigmoid`)
        target = index.imports.aliases.get(q, "")
        mod = target.rpartition(".")[0]
        if mod in _FUNC_MODULES:
            return _FUNCS[q]
        return None
    m = method_name(call)
    if m in _METHODS:
        recv = receiver(call)
        if isinstance(recv, cst.Name) and recv.value == "self":
            return None  # `self.softmax(x)`: a module or method of the model, see activation_module
        rq = index.qualify(recv) if recv is not None else None
        if rq is not None and (rq in _FUNC_MODULES or rq.split(".")[0] in ("torch", "tensorflow", "keras", "numpy",
                                                                             "jax", "scipy")):
            return None  # `torch.sigmoid` is a function, qualified above; np.* has no such method
        return _METHODS[m]
    return None


def activation_module(index: ModuleIndex, expr: cst.BaseExpression, depth: int = 0) -> Optional[str]:
    """The activation of a callable *module object*: `nn.Softmax(1)`, `self.softmax` bound to one,
    an `nn.Sequential` ending in one, a local name bound to one."""
    if depth > 3:
        return None
    if isinstance(expr, cst.Call):
        q = index.callee(expr) or ""
        last = q.rsplit(".", 1)[-1]
        if last in _MODULE_CLASSES and (q.startswith(("torch.nn.", "nn.")) or q == last):
            return _MODULE_CLASSES[last]
        if last == "Sequential" and (q.startswith(("torch.nn.", "nn.")) or q == last):
            layers = [a.value for a in expr.args if a.keyword is None and not a.star]
            if layers and len(layers) == len(expr.args):
                return activation_module(index, layers[-1], depth + 1)
        return None
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        vals = index.attr_assigns.get(expr.attr.value, [])
        if len(vals) == 1:
            return activation_module(index, vals[0], depth + 1)
        return None
    if isinstance(expr, cst.Name):
        v = bound_value(index, expr)
        if v is not None:
            return activation_module(index, v, depth + 1)
    return None


def activation_of(index: ModuleIndex, expr: cst.BaseExpression, depth: int = 0) -> Optional[str]:
    """The activation whose output `expr` is (see the module docstring), or None."""
    if depth > 8:
        return None
    if isinstance(expr, cst.Name):
        v = reaching_value(index, expr)
        return activation_of(index, v, depth + 1) if v is not None else None
    if isinstance(expr, cst.Subscript):
        return activation_of(index, expr.value, depth + 1)
    if not isinstance(expr, cst.Call):
        return None
    act = activation_function(index, expr)
    if act is not None:
        return act
    m = method_name(expr)
    if m in _KEEP_METHODS and isinstance(expr.func, cst.Attribute):
        q = index.qualify(expr.func.value) or ""
        if q.split(".")[0] not in ("torch", "tensorflow", "tf", "np", "numpy", "F"):
            return activation_of(index, expr.func.value, depth + 1)
    q = index.callee(expr) or ""
    if q.startswith("torch.") and q.rsplit(".", 1)[-1] in _KEEP_FUNCS and expr.args:
        return activation_of(index, expr.args[0].value, depth + 1)
    # a module object called on a value
    if len([a for a in expr.args if a.keyword is None]) >= 1:
        act = activation_module(index, expr.func)
        if act is not None:
            return act
        return model_output_activation(index, expr)
    return None


# -- models of this module -----------------------------------------------------------------------


def forward_activation(index: ModuleIndex, class_name: str) -> Optional[str]:
    """The activation a model class of this module returns from `forward` (or `call`, Keras) on every
    path; None when any return is something else (logits while training) or there is no such method."""
    cache: Dict[str, Optional[str]] = index.cached("activations.forward", dict)  # type: ignore[assignment]
    if class_name in cache:
        return cache[class_name]
    cache[class_name] = None  # guards recursion
    fn = index.methods.get((class_name, "forward")) or index.methods.get((class_name, "call"))
    result = None
    if fn is not None:
        acts = set()
        for node in _returns(fn):
            if node.value is None:
                acts.add(None)
                break
            acts.add(activation_of(index, node.value))
            if None in acts:
                break
        if len(acts) == 1:
            result = acts.pop()
    cache[class_name] = result
    return result


def _returns(fn: cst.FunctionDef):
    from trainlint.analysis.walk import children

    stack = [fn.body]
    found = []
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Return):
            found.append(n)
            continue
        for k in children(n):
            if isinstance(k, (cst.FunctionDef, cst.Lambda, cst.ClassDef)):
                continue
            stack.append(k)
    return found


def model_output_activation(index: ModuleIndex, call: cst.Call) -> Optional[str]:
    """`model(x)` where `model` is bound to `Net(...)` and class `Net` is defined in this module."""
    func = call.func
    ctor: Optional[cst.BaseExpression] = None
    if isinstance(func, cst.Name) and func.value == "self":
        klass = index.cls_of.get(call)  # `self(x)` in a LightningModule's training_step
        return forward_activation(index, klass.name.value) if klass is not None else None
    if isinstance(func, cst.Name) and func.value in index.classes:
        return None  # `Net(x)` is a construction, not a forward
    if isinstance(func, (cst.Name, cst.Attribute)):
        ctor = bound_value(index, func)
    # `model = Net().to(device)`: look through device/dtype moves
    while isinstance(ctor, cst.Call) and method_name(ctor) in ("to", "cuda", "cpu", "float", "double", "half",
                                                                 "train", "eval"):
        ctor = ctor.func.value  # type: ignore[union-attr]
    if isinstance(ctor, cst.Call) and isinstance(ctor.func, cst.Name) and ctor.func.value in index.classes:
        return forward_activation(index, ctor.func.value)
    return None


# -- logarithms ----------------------------------------------------------------------------------

_LOG_MODULES = ("torch", "tensorflow", "tensorflow.math", "tf", "tf.math", "keras.backend",
                "tensorflow.keras.backend", "tf.keras.backend", "K", "keras.ops")


def log_argument(index: ModuleIndex, call: cst.Call) -> Optional[cst.BaseExpression]:
    """The argument of a natural log of a differentiable tensor: `torch.log(p)`, `p.log()`,
    `tf.math.log(p)`, `K.log(p)`; None for anything else (NumPy's log included: no gradient flows)."""
    q = index.callee(call)
    mod, _, last = (q or "").rpartition(".")
    if last == "log" and mod in _LOG_MODULES and len(call.args) >= 1 and call.args[0].keyword in (None,) \
            and not call.args[0].star:
        return call.args[0].value
    if last == "log" and not mod and index.imports.aliases.get("log", "").rpartition(".")[0] in _LOG_MODULES \
            and call.args:
        return call.args[0].value
    if method_name(call) in ("log", "log_") and not call.args:
        recv = receiver(call)
        rq = index.qualify(recv) if recv is not None else None
        if rq is not None and rq.split(".")[0] in ("np", "numpy", "math", "torch", "tf", "tensorflow", "logging",
                                                   "self", "logger", "log"):
            return None
        return recv
    return None


# -- Keras models ----------------------------------------------------------------------------------

_KERAS_ACT_LAYERS = {"Softmax": SOFTMAX, "Sigmoid": SIGMOID}


def keras_layer_activation(index: ModuleIndex, layer: cst.BaseExpression) -> Optional[str]:
    """The activation a Keras layer construction ends with: `Dense(10, activation="softmax")`,
    `Activation("sigmoid")`, `Softmax()`, `Dense(1, activation=tf.nn.sigmoid)`."""
    if not isinstance(layer, cst.Call):
        return None
    q = index.callee(layer) or ""
    last = q.rsplit(".", 1)[-1]
    if last in _KERAS_ACT_LAYERS and ("keras" in q or "layers" in q or
                                      "keras" in index.imports.aliases.get(last, "")):
        return _KERAS_ACT_LAYERS[last]
    arg = None
    for a in layer.args:
        if a.keyword is not None and a.keyword.value == "activation":
            arg = a.value
    if arg is None and last == "Activation" and layer.args and layer.args[0].keyword is None:
        arg = layer.args[0].value
    if arg is None:
        return None
    if isinstance(arg, cst.SimpleString):
        v = arg.evaluated_value
        return {"softmax": SOFTMAX, "sigmoid": SIGMOID}.get(v if isinstance(v, str) else "")
    aq = index.qualify(arg) or ""
    mod, _, name = aq.rpartition(".")
    if name in ("softmax", "sigmoid") and mod in _FUNC_MODULES:
        return _FUNCS[name]
    return None


def keras_model_activation(index: ModuleIndex, model: cst.BaseExpression) -> Optional[str]:
    """The activation the last layer of a Keras model built in this module applies: a
    `Sequential([...])` list, `model.add(...)` calls (the last one before the use, same function), or a
    functional `Model(inputs, outputs)` whose outputs come out of such a layer."""
    if not isinstance(model, (cst.Name, cst.Attribute)):
        return None
    ctor = bound_value(index, model)
    if not isinstance(ctor, cst.Call):
        return None
    last = (index.callee(ctor) or "").rsplit(".", 1)[-1]
    if last == "Sequential":
        layers = call_arg_value(ctor, "layers", 0)
        added = [c for c in index.calls if method_name(c) == "add" and c.args
                 and isinstance(c.func, cst.Attribute) and index.code(c.func.value).strip() == index.code(model).strip()
                 and index.scope.get(c) is index.scope.get(ctor)]
        if added:  # the last `model.add(...)` is the last layer
            return keras_layer_activation(index, added[-1].args[0].value)
        if isinstance(layers, (cst.List, cst.Tuple)) and layers.elements:
            el = layers.elements[-1]
            if not isinstance(el, cst.StarredElement):
                return keras_layer_activation(index, el.value)
        return None
    if last in ("Model", "Functional"):
        outputs = call_arg_value(ctor, "outputs", 1)
        if isinstance(outputs, cst.Name):
            outputs = reaching_value(index, outputs) or bound_value(index, outputs)
        if isinstance(outputs, cst.Call) and isinstance(outputs.func, cst.Call):
            return keras_layer_activation(index, outputs.func)  # `Dense(10, activation="softmax")(x)`
    return None


def call_arg_value(call: cst.Call, keyword: str, position: int) -> Optional[cst.BaseExpression]:
    from trainlint.analysis.index import call_arg

    a = call_arg(call, keyword, position)
    return a.value if a is not None else None
