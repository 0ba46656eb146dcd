"""ModuleIndex: the facts of one module, collected in a single walk."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple, Union

import libcst as cst

from trainlint.analysis.names import Imports, dotted
from trainlint.analysis.walk import walk

Scope = Optional[Union[cst.FunctionDef, cst.Lambda]]  # None is the module scope
Loop = Union[cst.For, cst.While]


# Node kinds the index dispatches on, cached per node type (isinstance on LibCST's ABCs is slow).
_CALL, _BINOP, _ASSIGN, _LOOP, _FUNC, _LAMBDA, _CLASS, _IMPORT, _OTHER = (
    "call", "binop", "assign", "loop", "func", "lambda", "class", "import", "other")
_KIND_TYPES = [
    (cst.Call, _CALL), (cst.BinaryOperation, _BINOP), ((cst.Assign, cst.AnnAssign, cst.AugAssign), _ASSIGN),
    ((cst.For, cst.While), _LOOP), (cst.FunctionDef, _FUNC), (cst.Lambda, _LAMBDA),
    (cst.ClassDef, _CLASS), ((cst.Import, cst.ImportFrom), _IMPORT),
]
_KINDS: Dict[type, str] = {}


def _node_kind(tp: type) -> str:
    kind = next((k for types, k in _KIND_TYPES if issubclass(tp, types)), _OTHER)
    _KINDS[tp] = kind
    return kind


class ModuleIndex:
    """Everything a rule may want to look up, keyed so that lookups are dictionary reads.

    - `parent[node]`: the parent of every meaningful node (statements and expressions).
    - `scope[node]`: the enclosing function (None at module level) of calls, assignments,
      divisions and loops.
    - `functions[name]`: module-level functions; `methods[(class, name)]`: methods.
    - `assigns[scope][name]`: the values assigned to a local name, in source order.
    - `attr_assigns[name]`: values assigned to `self.name` anywhere in the module.
    - `calls`, `divisions`, `loops`: every node of that kind, in source order.
    """

    def __init__(self, module: cst.Module, source: str = "", path: Optional[str] = None, project=None) -> None:
        self.module = module
        self.source = source
        self.path = path  # the file on disk, when there is one (project-wide lookups start from it)
        self.project = project  # trainlint.analysis.project.Project, or None (a snippet, stdin)
        self.imports = Imports()
        self.parent: Dict[cst.CSTNode, Optional[cst.CSTNode]] = {}
        self.scope: Dict[cst.CSTNode, Scope] = {}
        self.cls_of: Dict[cst.CSTNode, Optional[cst.ClassDef]] = {}
        self.functions: Dict[str, cst.FunctionDef] = {}
        self.methods: Dict[Tuple[str, str], cst.FunctionDef] = {}
        self.classes: Dict[str, cst.ClassDef] = {}
        self.all_functions: List[cst.FunctionDef] = []
        self.assigns: Dict[Scope, Dict[str, List[cst.BaseExpression]]] = defaultdict(lambda: defaultdict(list))
        self.attr_assigns: Dict[str, List[cst.BaseExpression]] = defaultdict(list)
        self.calls: List[cst.Call] = []
        self.divisions: List[cst.CSTNode] = []  # BinaryOperation(/) and AugAssign(/=)
        self.loops: List[Loop] = []
        self.synthetic: set = set()  # nodes the index built (tuple unpacking), not part of the tree
        self._cache: Dict[str, object] = {}
        self._callees: Dict[cst.Call, Optional[str]] = {}
        self._build()

    # -- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        parent = self.parent
        scope_of = self.scope
        cls_of = self.cls_of
        # scope and class of a node are those of its parent, unless the parent opens one.
        for node, par in walk(self.module):
            parent[node] = par
            if par is None:
                scope, klass = None, None
            else:
                scope, klass = scope_of[par], cls_of[par]
                pk = _KINDS.get(type(par))
                if pk is _FUNC or pk is _LAMBDA:
                    scope = par
                elif pk is _CLASS:
                    klass = par
            scope_of[node] = scope
            cls_of[node] = klass

            kind = _KINDS.get(type(node))
            if kind is None:
                kind = _node_kind(type(node))
            if kind is _OTHER:
                continue
            if kind is _CALL:
                self.calls.append(node)
            elif kind is _BINOP:
                if isinstance(node.operator, cst.Divide):
                    self.divisions.append(node)
            elif kind is _ASSIGN:
                self._record_assign(node, scope)
            elif kind is _LOOP:
                self.loops.append(node)
            elif kind is _FUNC:
                self.all_functions.append(node)
                # A method is a function whose parent chain reaches a ClassDef body directly.
                owner = self._owner_class(node)
                if owner is not None:
                    self.methods[(owner.name.value, node.name.value)] = node
                elif scope is None:
                    self.functions[node.name.value] = node
                else:
                    self.functions.setdefault(node.name.value, node)
            elif kind is _CLASS:
                self.classes[node.name.value] = node
            elif kind is _IMPORT:
                self.imports.add(node)

    def _owner_class(self, fn: cst.FunctionDef) -> Optional[cst.ClassDef]:
        p = self.parent.get(fn)
        # FunctionDef -> IndentedBlock -> ClassDef (or SimpleStatementSuite never holds a def)
        if isinstance(p, cst.IndentedBlock):
            gp = self.parent.get(p)
            if isinstance(gp, cst.ClassDef):
                return gp
        return None

    def _record_assign(self, node, scope: Scope) -> None:
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
            value = node.value
        elif isinstance(node, cst.AnnAssign):
            if node.value is None:
                return
            targets = [node.target]
            value = node.value
        else:  # AugAssign: x /= y is recorded as a division, and x gets one more (opaque) value
            if isinstance(node.operator, cst.DivideAssign):
                self.divisions.append(node)
            if isinstance(node.target, cst.Name):
                self.assigns[scope][node.target.value].append(node)
            return
        for target in targets:
            self._bind(target, value, scope)

    def _bind(self, target, value, scope: Scope) -> None:
        if isinstance(target, cst.Name):
            self.assigns[scope][target.value].append(value)
        elif isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self":
            self.attr_assigns[target.attr.value].append(value)
        elif isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List)):
            if len(target.elements) == len(value.elements):
                for t, v in zip(target.elements, value.elements):
                    self._bind(t.value, v.value, scope)
        elif isinstance(target, (cst.Tuple, cst.List)) and not any(
                isinstance(e, cst.StarredElement) for e in target.elements):
            # `n, c, h, w = logits.size()`: each name gets `value[i]` (a node built here, never reported)
            for i, t in enumerate(target.elements):
                item = cst.Subscript(value, [cst.SubscriptElement(cst.Index(cst.Integer(str(i))))])
                self.synthetic.add(item)
                self._bind(t.value, item, scope)

    # -- queries -------------------------------------------------------------------------------
    def cached(self, key: str, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def qualify(self, expr: cst.BaseExpression) -> Optional[str]:
        return self.imports.qualify(expr)

    def callee(self, call: cst.Call) -> Optional[str]:
        """Qualified name of what a call calls (`torch.optim.Adam`, `self.criterion`, `len`)."""
        try:
            return self._callees[call]
        except KeyError:
            q = self._callees[call] = self.imports.qualify(call.func)
            return q

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def values_of(self, name: str, scope: Scope) -> List[cst.BaseExpression]:
        """Values assigned to `name` in `scope`, else in the module scope."""
        vals = self.assigns.get(scope, {}).get(name) if scope in self.assigns else None
        if vals:
            return vals
        if scope is not None and None in self.assigns:
            return self.assigns[None].get(name, [])
        return []

    def reaching_value(self, name: str, scope: Scope, use: cst.CSTNode) -> Optional[cst.BaseExpression]:
        """The value `name` holds where `use` reads it, when `use` sits inside the value of one of the
        name's own assignments (`loss = loss / n`): the assignment just before that one."""
        vals = self.values_of(name, scope)
        if len(vals) < 2:
            return vals[0] if vals else None
        ids = {id(v): i for i, v in enumerate(vals)}
        node: Optional[cst.CSTNode] = use
        while node is not None:
            i = ids.get(id(node))
            if i is not None:
                prev = vals[i - 1] if i > 0 else None
                return prev if isinstance(prev, cst.BaseExpression) else None
            node = self.parent.get(node)
        return None

    def resolve_value(self, expr: cst.BaseExpression, scope: Scope, depth: int = 3) -> cst.BaseExpression:
        """Follow `x` to its single assigned value (and `self.x` to its single value in the module)."""
        return self.resolve(expr, scope, depth)[0]

    def resolve(self, expr: cst.BaseExpression, scope: Scope, depth: int = 3) -> Tuple[cst.BaseExpression, Scope]:
        """Like `resolve_value`, also giving the scope the value was written in (`self.x = x` in
        `__init__` is read in `__init__`'s scope). Rebinding through a method that returns the object
        itself (`criterion = criterion.cuda()`, `model = model.to(device)`) is looked through."""
        seen = 0
        while seen < depth:
            seen += 1
            if isinstance(expr, cst.Name):
                vals = _drop_rebinds(self.values_of(expr.value, scope), expr.value)
                if len(vals) != 1:
                    return expr, scope
                expr = vals[0]
                if scope is not None and expr not in self.synthetic and self.scope.get(expr, scope) is not scope:
                    scope = self.scope.get(expr)  # found at module level
            elif isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
                vals = self.attr_values(expr.attr.value, scope)
                vals = _drop_rebinds(vals, "self." + expr.attr.value)
                if len(vals) != 1:
                    return expr, scope
                expr = vals[0]
                scope = self.scope.get(expr, scope) if expr not in self.synthetic else scope
            else:
                return expr, scope
        return expr, scope

    def attr_values(self, attr: str, scope: Scope) -> List[cst.BaseExpression]:
        """Values assigned to `self.<attr>`: those of the class that `scope` belongs to, when it has any."""
        vals = self.attr_assigns.get(attr, [])
        klass = self.cls_of.get(scope) if scope is not None else None
        if klass is not None and len(vals) > 1:
            own = [v for v in vals if self.cls_of.get(v) is klass]
            if own:
                return own
        return vals

    def param_default(self, name: str, scope: Scope) -> Optional[cst.BaseExpression]:
        """The default value of parameter `name` of the function `scope`, if it has one."""
        if not isinstance(scope, cst.FunctionDef):
            return None
        p = scope.params
        for param in (*p.posonly_params, *p.params, *p.kwonly_params):
            if param.name.value == name:
                return param.default
        return None

    def is_param(self, name: str, scope: Scope) -> bool:
        """Is `name` a parameter of the function `scope` (`*args` and `**kwargs` included)?"""
        if not isinstance(scope, (cst.FunctionDef, cst.Lambda)):
            return False
        p = scope.params
        params = [*p.posonly_params, *p.params, *p.kwonly_params]
        if isinstance(p.star_arg, cst.Param):
            params.append(p.star_arg)
        if p.star_kwarg is not None:
            params.append(p.star_kwarg)
        return any(param.name.value == name for param in params)



# Methods that return the object they are called on (modules, losses, tensors): `x = x.cuda()` keeps x.
SELF_RETURNING = {"cuda", "cpu", "to", "train", "eval", "requires_grad_", "float", "double", "half",
                  "bfloat16", "share_memory", "to_empty"}


def _drop_rebinds(vals: List[cst.BaseExpression], name: str) -> List[cst.BaseExpression]:
    """Values of `name` less those that only rebind it to itself (`x = x.cuda()`), when the first is kept."""
    if len(vals) < 2:
        return vals
    kept = [vals[0]]
    for v in vals[1:]:
        if isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and v.func.attr.value in SELF_RETURNING \
                and dotted(v.func.value) == name and v.func.attr.value not in ("half", "float", "double", "bfloat16"):
            continue
        kept.append(v)
    return kept


def bound_arguments(call: cst.Call, fn: cst.FunctionDef, offset: int = 0) -> Dict[str, cst.BaseExpression]:
    """Parameter name -> argument value for a call of `fn` (`offset=1` skips a method's `self`), up to the
    first `*args`/`**kwargs` argument."""
    params = [*fn.params.posonly_params, *fn.params.params][offset:]
    out: Dict[str, cst.BaseExpression] = {}
    pos = 0
    for arg in call.args:
        if arg.star:
            break
        if arg.keyword is not None:
            out[arg.keyword.value] = arg.value
        elif pos < len(params):
            out[params[pos].name.value] = arg.value
            pos += 1
    return out


def call_arg(call: cst.Call, keyword: str, position: Optional[int] = None) -> Optional[cst.Arg]:
    """The argument passed as `keyword=` (or at `position`, counting positional arguments)."""
    pos = 0
    for arg in call.args:
        if arg.keyword is not None:
            if arg.keyword.value == keyword:
                return arg
        elif arg.star:
            return None if position is not None and pos <= position else None
        else:
            if position is not None and pos == position:
                return arg
            pos += 1
    return None


def method_name(call: cst.Call) -> Optional[str]:
    """`step` for `x.step(...)`, else None."""
    if isinstance(call.func, cst.Attribute):
        return call.func.attr.value
    return None


def receiver(call: cst.Call) -> Optional[cst.BaseExpression]:
    if isinstance(call.func, cst.Attribute):
        return call.func.value
    return None


__all__ = ["ModuleIndex", "call_arg", "method_name", "receiver", "dotted"]
