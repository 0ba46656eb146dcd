"""Loss values: which expressions are already averaged over the batch, summed, or batch sizes."""

from __future__ import annotations

import re
from typing import List, Optional

import libcst as cst

from trainlint.analysis.expr import Resolver, leaf_name, literal_value, number_value, param_values, reduction_of, returns_of
from trainlint.analysis.index import ModuleIndex, Scope, call_arg, method_name
from trainlint.analysis.project import project_symbol as _project_symbol

# torch.nn.functional losses and their nn.Module classes; all default to reduction="mean".
FUNCTIONAL_LOSSES = {
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "ctc_loss",
    "margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss", "multilabel_margin_loss",
    "soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss", "triplet_margin_loss",
    "triplet_margin_with_distance_loss", "poisson_nll_loss", "gaussian_nll_loss",
}
_LOSS_CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*Loss$")
_BATCH_NAME_EXCLUDE = re.compile(r"loader|dataset|data_set|epoch|step|iter|accum|token|seq|len$|count", re.I)


# Functions of a scalar that keep it independent of the batch size (`torch.exp(mean)` is still a mean).
_SCALAR_FUNCS = {"exp", "log", "sqrt", "pow", "abs", "neg", "clamp", "clip", "float", "double", "squeeze",
                 "clone", "detach", "contiguous", "view", "reshape", "type_as", "to", "cuda", "log1p", "expm1",
                 "tanh", "sigmoid"}
_MAX_DEPTH = 16


class Losses:
    """Classifies loss expressions in one scope: 'mean' for a value normalised over the batch (its
    scale does not depend on the batch size), 'sum' for a batch sum, None when unknown.

    Values are followed through local names (all assignments, `+=`/`*=` included), tuple unpacking,
    attributes set in `__init__` (and the defaults of its parameters), parameters of the function (the
    arguments its callers in the module pass, else the default), criterion objects, helper functions and
    classes of the module, and through imports to the project's other modules (`analysis/project.py`).
    """

    def __init__(self, index: ModuleIndex, scope: Scope, batch_size_names: List[str], _depth: int = 0):
        self.index = index
        self.scope = scope
        self.res = Resolver(index, scope)
        self.batch_size_names = set(batch_size_names)
        self._depth = _depth

    def _in(self, index: ModuleIndex, scope: Scope) -> "Losses":
        return Losses(index, scope, list(self.batch_size_names), self._depth + 1)

    # -- what a loss value is --------------------------------------------------------------------
    def reduction(self, expr: cst.BaseExpression, depth: int = 0) -> Optional[str]:
        """'mean' for a value averaged over the whole batch, 'sum' for a batch sum, else None."""
        if depth > _MAX_DEPTH or self._depth > 4:
            return None
        # Memoised per module: a name rebound many times (`latents = latents * s` in a pipeline) fans out
        # at every level, which made this exponential (20 s on one diffusers file).
        memo = self.index.cached("losses.reduction", dict)
        key = (id(expr), id(self.scope), self._depth, depth, tuple(sorted(self.batch_size_names)))
        if key in memo:
            return memo[key]
        memo[key] = None
        memo[key] = result = self._reduction(expr, depth)
        return result

    def _reduction(self, expr: cst.BaseExpression, depth: int) -> Optional[str]:
        idx = self.index
        if isinstance(expr, (cst.Name, cst.Attribute)):
            v, sc = idx.resolve(expr, self.scope)
            if v is not expr:
                return (self if sc is self.scope else self._in(idx, sc)).reduction(v, depth + 1)
            return self._name_reduction(expr, depth)
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
            return self.reduction(expr.expression, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            op = expr.operator
            if isinstance(op, (cst.Add, cst.Subtract)):
                a, b = self.reduction(expr.left, depth + 1), self.reduction(expr.right, depth + 1)
                if a and a == b:
                    return a
                if a and self._const(expr.right) or b and self._const(expr.left):
                    return a or b
                return None
            if isinstance(op, cst.Multiply):
                if self._const(expr.left):
                    return self.reduction(expr.right, depth + 1)
                if self._const(expr.right):
                    return self.reduction(expr.left, depth + 1)
                a, b = self.reduction(expr.left, depth + 1), self.reduction(expr.right, depth + 1)
                return "mean" if a == b == "mean" else None
            if isinstance(op, cst.Divide):
                if self._const(expr.right):
                    return self.reduction(expr.left, depth + 1)
                if self.actual_batch_length(expr.right) and self.reduction(expr.left, depth + 1) == "sum":
                    return "mean"  # a batch sum divided by the batch's length: normalised once
                return None
            if isinstance(op, cst.Power) and self._const(expr.right):
                return self.reduction(expr.left, depth + 1)
            return None
        if isinstance(expr, cst.Subscript) and isinstance(expr.value, cst.Call):
            return None
        if not isinstance(expr, cst.Call):
            return None
        m = method_name(expr)
        q = idx.callee(expr) or ""
        last = q.rsplit(".", 1)[-1]
        if m in ("mean", "sum") and isinstance(expr.func, cst.Attribute) and not _has_dim(expr, 0):
            if q.startswith(("np.", "numpy.", "math.")):
                return None
            return m
        if q in ("torch.mean", "torch.sum") and not _has_dim(expr, 1):
            return last
        if q.startswith(("tensorflow.", "tf.", "keras.", "K.")) and last in ("reduce_mean", "reduce_sum", "mean", "sum") \
                and call_arg(expr, "axis", 1) is None and not any(a.star for a in expr.args):
            return "mean" if last.endswith("mean") else "sum"
        if last in FUNCTIONAL_LOSSES and (q.startswith("torch.nn.functional.") or q.startswith("F.")):
            return _norm(reduction_of(idx, expr, scope=self.scope))
        if q == "sum" and len(expr.args) == 1:  # sum([crit(p, y) for p in outputs]): over outputs, not samples
            return self._elements_reduction(expr.args[0].value, depth)
        if m in _SCALAR_FUNCS and isinstance(expr.func, cst.Attribute) and not q.startswith(
                ("np.", "numpy.", "torch.", "math.", "F.")):
            if m in ("view", "reshape") and expr.args:
                return None
            return self.reduction(expr.func.value, depth + 1)
        if q.startswith(("torch.", "math.")) and last in _SCALAR_FUNCS and expr.args:
            return self.reduction(expr.args[0].value, depth + 1)
        return self.callable_reduction(expr.func, depth + 1)

    def _elements_reduction(self, arg, depth) -> Optional[str]:
        if isinstance(arg, (cst.ListComp, cst.GeneratorExp)):
            return self.reduction(arg.elt, depth + 1)
        if isinstance(arg, (cst.List, cst.Tuple)) and arg.elements:
            reds = {self.reduction(e.value, depth + 1) for e in arg.elements}
            return reds.pop() if len(reds) == 1 else None
        return None

    def _const(self, expr) -> bool:
        """A number, or a name holding one (a module constant, a parameter with a numeric default)."""
        return isinstance(literal_value(self.index, expr, self.scope), (int, float)) and not isinstance(
            literal_value(self.index, expr, self.scope), bool)

    def _name_reduction(self, expr, depth) -> Optional[str]:
        """A name with several assignments (`x = crit(...)`, `x *= alpha`), or a parameter."""
        idx = self.index
        if isinstance(expr, cst.Name):
            vals = idx.values_of(expr.value, self.scope)
            if len(vals) > 1:
                reds = set()
                for v in vals:
                    if isinstance(v, cst.AugAssign):
                        if isinstance(v.operator, (cst.MultiplyAssign, cst.DivideAssign)) and self._const(v.value):
                            continue  # scaling by a constant keeps the reduction
                        if isinstance(v.operator, (cst.AddAssign, cst.SubtractAssign)):
                            reds.add(self.reduction(v.value, depth + 1))
                            continue
                        return None
                    reds.add(self.reduction(v, depth + 1))
                return reds.pop() if len(reds) == 1 else None
            if not vals and idx.is_param(expr.value, self.scope):
                reds = {self._in(idx, sc).reduction(v, depth + 1) for v, sc in param_values(idx, expr.value, self.scope)}
                return reds.pop() if len(reds) == 1 else None
        return None

    def callable_reduction(self, func: cst.BaseExpression, depth: int = 0) -> Optional[str]:
        """The reduction of what calling `func` returns: a criterion object, a loss class, a helper
        function of this module or of another module of the project."""
        if depth > _MAX_DEPTH or self._depth > 4:
            return None
        idx = self.index
        v, sc = idx.resolve(func, self.scope)
        here = self if sc is self.scope else self._in(idx, sc)
        if isinstance(v, cst.Call):  # criterion = nn.CrossEntropyLoss(...); criterion = DiceLoss()
            if self.is_loss_class(v):
                return _norm(reduction_of(idx, v, scope=sc))
            return here._class_call_reduction(v.func, depth + 1)
        if isinstance(v, cst.Name):
            fn = idx.functions.get(v.value)
            if fn is not None and idx.scope.get(fn) is None:
                return here.returned_reduction_of(idx, fn)
            if v.value in idx.classes:
                return None  # `Loss` itself (a class, not an instance) being called: construction
            if not idx.values_of(v.value, sc) and idx.is_param(v.value, sc):
                reds = {self._in(idx, s2).callable_reduction(a, depth + 1) for a, s2 in param_values(idx, v.value, sc)}
                return reds.pop() if len(reds) == 1 else None
            return self._project_function_reduction(idx.qualify(v), depth)
        if isinstance(v, cst.Attribute):
            if isinstance(v.value, cst.Name) and v.value.value == "self":
                klass = idx.cls_of.get(sc) if sc is not None else None
                if klass is not None and (klass.name.value, v.attr.value) in idx.methods:
                    return here.returned_reduction_of(idx, idx.methods[(klass.name.value, v.attr.value)])
                vals = idx.attr_assigns.get(v.attr.value, [])
                if vals:
                    reds = set()
                    for val in vals:
                        inner = self._in(idx, idx.scope.get(val, sc))
                        if isinstance(val, cst.Call):
                            reds.add(inner._ctor_reduction(val, depth + 1))
                        else:
                            reds.add(inner.callable_reduction(val, depth + 1))
                    return reds.pop() if len(reds) == 1 else None
                return None
            return self._project_function_reduction(idx.qualify(v), depth)
        return None

    def _ctor_reduction(self, call: cst.Call, depth) -> Optional[str]:
        if self.is_loss_class(call):
            return _norm(reduction_of(self.index, call, scope=self.scope))
        return self._class_call_reduction(call.func, depth)

    def _class_call_reduction(self, cls_expr, depth) -> Optional[str]:
        """Calling an instance of `cls_expr(...)`: what the class's forward/__call__ returns."""
        idx = self.index
        if isinstance(cls_expr, cst.Name) and cls_expr.value in idx.classes:
            name = cls_expr.value
            for meth in ("forward", "__call__"):
                fn = idx.methods.get((name, meth))
                if fn is not None:
                    return self.returned_reduction_of(idx, fn)
            return None
        q = idx.qualify(cls_expr) if isinstance(cls_expr, (cst.Name, cst.Attribute)) else None
        sym = _project_symbol(idx, q)
        if sym is None or not isinstance(sym.node, cst.ClassDef):
            return None
        names = tuple(sorted(self.batch_size_names))

        def compute():
            for meth in ("forward", "__call__"):
                fn = sym.index.methods.get((sym.node.name.value, meth))
                if fn is not None:
                    return Losses(sym.index, fn, list(names), 1).returned_reduction_of(sym.index, fn)
            return None

        return sym.fact(f"instance-reduction:{','.join(names)}", compute)

    def _project_function_reduction(self, q: Optional[str], depth) -> Optional[str]:
        sym = _project_symbol(self.index, q)
        if sym is None or not isinstance(sym.node, cst.FunctionDef):
            return None
        names = tuple(sorted(self.batch_size_names))
        return sym.fact(f"returned-reduction:{','.join(names)}",
                        lambda: Losses(sym.index, sym.node, list(names), 1).returned_reduction_of(sym.index, sym.node))

    def returned_reduction_of(self, index: ModuleIndex, fn: cst.FunctionDef) -> Optional[str]:
        """What every `return` of `fn` gives (all must agree)."""
        inner = self._in(index, fn)  # one level deeper, also for recursive functions
        reds = set()
        for ret in returns_of(index, fn):
            reds.add(inner.reduction(ret.value))
            if len(reds) > 1:
                return None
        return reds.pop() if len(reds) == 1 else None

    def is_loss_class(self, call: cst.Call) -> bool:
        """A PyTorch `nn.*Loss` or a Keras loss class (`tf.keras.losses.SparseCategoricalCrossentropy`)."""
        q = self.index.callee(call) or ""
        last = q.rsplit(".", 1)[-1]
        if q.startswith(_KERAS_LOSSES) and last[:1].isupper() and last != "Reduction":
            return True
        return q.startswith("torch.nn.") and bool(_LOSS_CLASS.match(last)) or q in (
            f"nn.{last}",) and bool(_LOSS_CLASS.match(last))

    # -- batch sizes -----------------------------------------------------------------------------
    def actual_batch_length(self, expr: cst.BaseExpression, depth: int = 0) -> bool:
        """`x.size(0)`, `x.shape[0]`, `len(x)` of a batch (not of a loader or dataset)."""
        if depth > 3:
            return False
        if isinstance(expr, cst.Call):
            m = method_name(expr)
            q = self.index.callee(expr)
            if m == "size" and expr.args and number_value(expr.args[0].value) == 0:
                return True
            if q == "len" and len(expr.args) == 1:
                arg = expr.args[0].value
                name = leaf_name(arg) or self.index.code(arg)
                if _BATCH_NAME_EXCLUDE.search(name):
                    return False
                built, _ = self.index.resolve(arg, self.scope)
                # len() of a list the code builds (`[kl(p) for p in splits]`, `x.chunk(k)`) counts its items
                return not isinstance(built, (cst.List, cst.ListComp, cst.Tuple, cst.GeneratorExp)) and not (
                    isinstance(built, cst.Call) and (method_name(built) in ("split", "chunk", "unbind")
                                                     or self.index.callee(built) in ("list", "tuple", "range")))
            if q in ("float", "int") and len(expr.args) == 1:
                return self.actual_batch_length(expr.args[0].value, depth + 1)
            if (q or "").rsplit(".", 1)[-1] in ("cast", "to_float") and expr.args and \
                    (q or "").startswith(("tensorflow.", "tf.", "keras.", "K.")):
                return self.actual_batch_length(expr.args[0].value, depth + 1)
        if isinstance(expr, cst.Subscript) and len(expr.slice) == 1:
            sl = expr.slice[0].slice
            if isinstance(sl, cst.Index) and number_value(sl.value) == 0:
                base = expr.value
                if isinstance(base, cst.Attribute) and base.attr.value == "shape":
                    return True
                if isinstance(base, cst.Call) and method_name(base) == "size" and not base.args:
                    return True
                if isinstance(base, cst.Call) and (self.index.callee(base) or "") in (
                        "tensorflow.shape", "tf.shape", "keras.backend.shape", "K.shape"):
                    return True  # tf.shape(x)[0]
        if isinstance(expr, cst.Name):
            v = self.res.value(expr)
            if v is not expr:
                return self.actual_batch_length(v, depth + 1)
        return False

    def configured_batch_size(self, expr: cst.BaseExpression, literal_sizes=()) -> bool:
        """A name that holds the configured batch size (`batch_size`, `args.batch_size`, ...)."""
        name = leaf_name(expr)
        if name is not None and name in self.batch_size_names:
            v = self.res.value(expr)
            if v is not expr and self.actual_batch_length(v):
                return False  # batch_size = x.size(0): the actual length
            return True
        n = number_value(expr)
        return n is not None and n in literal_sizes and n > 1

    def batch_size(self, expr: cst.BaseExpression, literal_sizes=()) -> bool:
        return self.actual_batch_length(expr) or self.configured_batch_size(expr, literal_sizes)


_KERAS_LOSSES = ("tensorflow.keras.losses.", "tf.keras.losses.", "keras.losses.")


def _norm(red: Optional[str]) -> Optional[str]:
    """PyTorch's reduction names, and Keras' (`sum_over_batch_size` and `auto` are its batch mean)."""
    if red in ("mean", "elementwise_mean", "batchmean", "sum_over_batch_size", "auto"):
        return "mean"
    if red == "sum":
        return "sum"
    return None


def _has_dim(call: cst.Call, pos: int) -> bool:
    """Does this reduction name a dimension (so it is not over the whole batch)?"""
    if call_arg(call, "dim") is not None or call_arg(call, "axis") is not None:
        return True
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return len(positional) > pos


def loader_batch_sizes(index: ModuleIndex) -> List[float]:
    out = []
    for call in index.calls:
        q = index.callee(call) or ""
        if q.endswith("DataLoader"):
            a = call_arg(call, "batch_size", 1)
            if a is not None:
                v = number_value(a.value)
                if v is not None:
                    out.append(v)
    return out


_REDUCTION_FLAGS = {"size_average", "reduce", "reduction", "average"}


def branches_on_reduction(index: ModuleIndex, node: cst.CSTNode) -> bool:
    """Is `node` inside an `if` that tests how the loss is reduced (`if not self.size_average:`)? The
    code then already tells the reductions apart, and a rule should not second-guess it."""
    from trainlint.analysis.walk import walk

    scope = index.scope.get(node)
    p = index.parent.get(node)
    while p is not None and p is not scope:
        if isinstance(p, (cst.If, cst.IfExp)):
            for sub, _ in walk(p.test):
                if isinstance(sub, (cst.Name, cst.Attribute)) and (leaf_name(sub) or "") in _REDUCTION_FLAGS:
                    return True
        p = index.parent.get(p)
    return False
