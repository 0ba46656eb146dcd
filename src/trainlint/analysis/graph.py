"""Values that carry an autograd graph: the losses a loop backpropagates, and their additive terms.

In one loop body, a *graph loss* is a local name that the loop calls backward on (`loss.backward()`,
`scaler.scale(loss).backward()`, `accelerator.backward(loss)`, `self.manual_backward(loss)`,
`torch.autograd.backward(loss)`), and the names added up into it in the same loop
(`loss = loss_cls + 0.5 * loss_box`). A name that the loop also binds to a detached value
(`loss = loss.item()`) is not one: its binding at a given line is not known.

`detached_use(expr, name)` tells whether an expression only reads a plain number or a detached tensor
from the name (`loss.item()`, `float(loss)`, `loss.detach()`, `loss.data`), so that keeping the result
keeps no graph.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set

import libcst as cst

from trainlint.analysis.index import ModuleIndex, method_name, receiver
from trainlint.analysis.walk import children

# Methods that return a plain number or a tensor without history.
DETACHING_METHODS = {"item", "detach", "tolist", "numpy", "detach_", "data_ptr", "size", "dim", "numel",
                     "isnan", "isinf", "isfinite", "argmax", "argmin", "eq", "ne", "gt", "lt", "ge", "le"}
DETACHING_ATTRS = {"data", "shape", "dtype", "device", "grad", "requires_grad", "ndim"}
DETACHING_CALLS = {"float", "int", "bool", "str", "round", "repr", "format", "len", "print", "math.isnan",
                   "math.isfinite", "numpy.array", "numpy.asarray", "np.array", "np.asarray", "isinstance"}
# Methods that keep the history (the result still belongs to the graph).
KEEPING_METHODS = {"mean", "sum", "squeeze", "unsqueeze", "view", "reshape", "clone", "float", "double",
                   "half", "to", "cuda", "cpu", "abs", "pow", "sqrt", "exp", "log", "flatten", "contiguous",
                   "__mul__", "mul", "div", "add", "sub", "neg", "type_as", "expand", "repeat"}


def backward_target(index: ModuleIndex, call: cst.Call) -> Optional[cst.BaseExpression]:
    """The value a backward call differentiates, or None when the call is no backward."""
    m = method_name(call)
    first = call.args[0].value if call.args and call.args[0].keyword is None and not call.args[0].star else None
    if m == "backward":
        recv = receiver(call)
        if recv is None:
            return None
        if isinstance(recv, cst.Call) and method_name(recv) == "scale" and recv.args:
            return recv.args[0].value  # scaler.scale(loss).backward()
        if (index.qualify(recv) or "").startswith("torch.autograd") or \
                _is_name(recv, ("accelerator", "fabric", "engine")):
            return first  # accelerator.backward(loss), model_engine.backward(loss)
        return recv
    if m == "manual_backward":
        return first
    if index.callee(call) == "torch.autograd.backward":
        return first
    return None


def _is_name(expr, names) -> bool:
    last = expr.attr.value if isinstance(expr, cst.Attribute) else expr.value if isinstance(expr, cst.Name) else ""
    return any(n in last.lower() for n in names)


def _assignments_in(body: cst.CSTNode) -> Dict[str, List[cst.BaseExpression]]:
    """name -> values assigned to it (plain `=` and annotated) anywhere in `body`, defs excluded."""
    out: Dict[str, List[cst.BaseExpression]] = {}
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        if isinstance(node, cst.Assign):
            for t in node.targets:
                if isinstance(t.target, cst.Name):
                    out.setdefault(t.target.value, []).append(node.value)
        elif isinstance(node, cst.AnnAssign) and node.value is not None and isinstance(node.target, cst.Name):
            out.setdefault(node.target.value, []).append(node.value)
        stack.extend(children(node))
    return out


def calls_in(body: cst.CSTNode) -> List[cst.Call]:
    out: List[cst.Call] = []
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        if isinstance(node, cst.Call):
            out.append(node)
        stack.extend(children(node))
    return out


def graph_losses(index: ModuleIndex, loop: cst.CSTNode) -> Set[str]:
    """Local names holding a loss with its graph in one iteration of `loop` (see the module docstring)."""
    def compute() -> Set[str]:
        assigned = _assignments_in(loop.body)
        roots: Set[str] = set()
        for call in calls_in(loop.body):
            target = backward_target(index, call)
            if isinstance(target, cst.Name):
                roots.add(target.value)
        names = set(roots)
        for root in roots:
            for value in assigned.get(root, []):
                for term in _additive_terms(value):
                    if isinstance(term, cst.Name) and term.value != root and term.value in assigned:
                        names.add(term.value)
        return {n for n in names if not any(detached_value(v) for v in assigned.get(n, []))}

    return index.cached(f"graph_losses:{id(loop)}", compute)


def _additive_terms(expr: cst.BaseExpression) -> List[cst.BaseExpression]:
    if isinstance(expr, cst.BinaryOperation):
        if isinstance(expr.operator, (cst.Add, cst.Subtract)):
            return _additive_terms(expr.left) + _additive_terms(expr.right)
        if isinstance(expr.operator, (cst.Multiply, cst.Divide)):
            if isinstance(expr.left, (cst.Integer, cst.Float)):
                return _additive_terms(expr.right)
            if isinstance(expr.right, (cst.Integer, cst.Float)) or isinstance(expr.operator, cst.Divide):
                return _additive_terms(expr.left)
    return [expr]


def detached_value(expr: cst.BaseExpression) -> bool:
    """A value without history at its root: `x.item()`, `float(x)`, `x.detach()`, a number."""
    if isinstance(expr, (cst.Integer, cst.Float, cst.SimpleString)):
        return True
    if isinstance(expr, cst.Call):
        m = method_name(expr)
        if m in DETACHING_METHODS:
            return True
        if isinstance(expr.func, cst.Name) and expr.func.value in DETACHING_CALLS:
            return True
    if isinstance(expr, cst.Attribute) and expr.attr.value in DETACHING_ATTRS:
        return True
    return False


def graph_use(expr: cst.BaseExpression, name: str) -> Optional[cst.BaseExpression]:
    """The outermost sub-expression of `expr` that reads `name` with its graph (the name itself, or a
    graph-keeping chain on it such as `loss.mean()`), if the value of `expr` keeps that graph; else None.
    Arithmetic keeps the graph; any other call (a helper, `float`, `.item()`) is taken as not keeping it."""
    if isinstance(expr, cst.Name):
        return expr if expr.value == name else None
    if isinstance(expr, cst.BinaryOperation):
        return graph_use(expr.left, name) or graph_use(expr.right, name)
    if isinstance(expr, cst.UnaryOperation):
        return graph_use(expr.expression, name)
    if isinstance(expr, cst.Subscript):
        inner = graph_use(expr.value, name)
        return expr if inner is not None else None
    if isinstance(expr, cst.Call) and method_name(expr) in KEEPING_METHODS:
        inner = graph_use(receiver(expr), name)
        return expr if inner is not None else None
    if isinstance(expr, (cst.List, cst.Tuple)):
        for el in expr.elements:
            found = graph_use(el.value, name)
            if found is not None:
                return found
    return None


def under_no_grad(index: ModuleIndex, node: cst.CSTNode) -> bool:
    """Inside `with torch.no_grad():` / `torch.inference_mode()` (in the same function)."""
    cur = index.parent.get(node)
    while cur is not None and not isinstance(cur, (cst.FunctionDef, cst.Lambda)):
        if isinstance(cur, cst.With):
            for item in cur.items:
                call = item.item
                func = call.func if isinstance(call, cst.Call) else call
                q = index.qualify(func) or ""
                if q.rsplit(".", 1)[-1] in ("no_grad", "inference_mode"):
                    return True
        cur = index.parent.get(cur)
    return False


def _no_grad_decorated(index: ModuleIndex, fn: cst.FunctionDef) -> bool:
    for dec in fn.decorators:
        d = dec.decorator.func if isinstance(dec.decorator, cst.Call) else dec.decorator
        if (index.qualify(d) or "").rsplit(".", 1)[-1] in ("no_grad", "inference_mode"):
            return True
    return False


def only_runs_without_grad(index: ModuleIndex, node: cst.CSTNode) -> bool:
    """Does `node` run only without autograd: inside `with torch.no_grad()` or a function decorated with
    `@torch.no_grad()`, or in a function whose every call in the module (`f(...)`, `self.f(...)`) is
    itself such (inference code, a diffusion pipeline's `__call__`)? Followed two callers deep."""
    return _only_without_grad(index, node, 0)


def _only_without_grad(index: ModuleIndex, node: cst.CSTNode, depth: int) -> bool:
    if under_no_grad(index, node):
        return True
    fn = index.scope.get(node)
    if not isinstance(fn, cst.FunctionDef):
        return False
    if _no_grad_decorated(index, fn):
        return True
    if depth >= 2:
        return False
    from trainlint.analysis.expr import calls_by_name

    callers = [c for c in calls_by_name(index).get(fn.name.value, []) if c is not node]
    return bool(callers) and all(_only_without_grad(index, c, depth + 1) for c in callers)
