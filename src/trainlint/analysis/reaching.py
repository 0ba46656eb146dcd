"""Which assignment a read of a local name sees, in straight-line code.

`reaching_value(index, name)` answers "what does `name` hold here?" only when the answer is certain
from the statements before the read in the same function: the nearest earlier `name = value` in the
same block, or in an enclosing block when nothing in between (a branch, a loop body, a `try`) may
rebind the name. Anything less certain (the name is a parameter, is rebound in a branch or a loop, by a
tuple target, a `for` target, `with ... as`, `:=`) gives None, so rules built on it stay silent rather
than guess. A `with` block does not make a binding uncertain: its body always runs.

The search is computed once per block, not once per read: for each block a read was asked about, the
statements a backward search for each name stops at (those that bind it, or bind it in a way that makes
the answer unknown) are listed in order, so a read is answered with a bisection instead of a walk back
over every earlier statement (a flat 500-line notebook script asked every statement about its loss
object before). Memoised on the ModuleIndex.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import libcst as cst

from trainlint.analysis.index import ModuleIndex
from trainlint.analysis.walk import children

_BLOCKS = (cst.IndentedBlock, cst.Module, cst.SimpleStatementSuite)
_SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef, cst.Module)
_NOT_FOUND = object()
_OPAQUE = object()


def statement_of(index: ModuleIndex, node: cst.CSTNode) -> Optional[cst.CSTNode]:
    """The statement (simple line or compound) that holds `node`, directly inside a block."""
    cur: Optional[cst.CSTNode] = node
    while cur is not None:
        par = index.parent.get(cur)
        if isinstance(par, (cst.IndentedBlock, cst.Module)):
            return cur
        if isinstance(par, cst.SimpleStatementSuite):
            return cur
        cur = par
    return None


def binds(node: cst.CSTNode, name: str) -> bool:
    """Does anything in `node` (not in nested functions, lambdas, classes or comprehensions) bind `name`?"""
    stack: List[cst.CSTNode] = [node]
    while stack:
        n = stack.pop()
        if _binds_here(n, name):
            return True
        for k in children(n):
            if isinstance(k, (cst.FunctionDef, cst.ClassDef)):
                if k.name.value == name:
                    return True
                continue
            if isinstance(k, (cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)):
                continue
            stack.append(k)
    return False


def _bound_names(index: ModuleIndex, node: cst.CSTNode) -> FrozenSet[str]:
    """Every name bound in `node` (not in nested scopes), computed once per node."""
    cache: Dict[cst.CSTNode, FrozenSet[str]] = index.cached("reaching.bound", dict)  # type: ignore[assignment]
    got = cache.get(node)
    if got is not None:
        return got
    names: Set[str] = set()
    stack: List[cst.CSTNode] = [node]
    info = _TYPE_INFO
    while stack:
        n = stack.pop()
        binder, _ = info.get(type(n)) or _type_info(type(n))
        if binder:
            names.update(_names_bound_here(n))
        for k in children(n):
            _, kind = info.get(type(k)) or _type_info(type(k))
            if kind is _DEF:
                names.add(k.name.value)
            elif kind is _WALK:
                stack.append(k)
    got = cache[node] = frozenset(names)
    return got


# What `_bound_names` does with a node of a given type, decided once per type (isinstance against
# LibCST's abstract classes is slow): (may it bind a name itself, walk into it / a def or class whose
# name it binds / a nested scope to skip).
_WALK, _DEF, _NESTED = "walk", "def", "nested"
_BINDERS = (cst.Assign, cst.AugAssign, cst.AnnAssign, cst.For, cst.NamedExpr, cst.WithItem, cst.ExceptHandler,
            cst.Del, cst.Global, cst.Nonlocal, cst.Import, cst.ImportFrom)  # those of `_names_bound_here`
_TYPE_INFO: Dict[type, Tuple[bool, str]] = {}


def _type_info(tp: type) -> Tuple[bool, str]:
    if issubclass(tp, (cst.FunctionDef, cst.ClassDef)):
        kind = _DEF
    elif issubclass(tp, (cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)):
        kind = _NESTED
    else:
        kind = _WALK
    got = _TYPE_INFO[tp] = (issubclass(tp, _BINDERS), kind)
    return got


def _names_bound_here(n: cst.CSTNode) -> List[str]:
    if isinstance(n, cst.Assign):
        return [x for t in n.targets for x in _target_names(t.target)]
    if isinstance(n, (cst.AugAssign, cst.AnnAssign, cst.For, cst.NamedExpr)):
        return _target_names(n.target)
    if isinstance(n, cst.WithItem):
        return _target_names(n.asname.name) if n.asname is not None else []
    if isinstance(n, cst.ExceptHandler):
        return _target_names(n.name.name) if n.name is not None else []
    if isinstance(n, cst.Del):
        return _target_names(n.target)
    if isinstance(n, (cst.Global, cst.Nonlocal)):
        return [item.name.value for item in n.names]
    if isinstance(n, (cst.Import, cst.ImportFrom)) and not isinstance(n.names, cst.ImportStar):
        out = []
        for alias in n.names:
            local = alias.asname.name if alias.asname is not None else alias.name
            while isinstance(local, cst.Attribute):
                local = local.value
            if isinstance(local, cst.Name):
                out.append(local.value)
        return out
    return []


def _target_names(t: cst.BaseExpression) -> List[str]:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        out: List[str] = []
        for el in t.elements:
            out.extend(_target_names(el.value))
        return out
    if isinstance(t, cst.StarredElement):
        return _target_names(t.value)
    return []


def _binds_here(n: cst.CSTNode, name: str) -> bool:
    if isinstance(n, cst.Assign):
        return any(name in _target_names(t.target) for t in n.targets)
    if isinstance(n, (cst.AugAssign, cst.AnnAssign)):
        return name in _target_names(n.target)
    if isinstance(n, (cst.For,)):
        return name in _target_names(n.target)
    if isinstance(n, cst.WithItem):
        return n.asname is not None and name in _target_names(n.asname.name)
    if isinstance(n, cst.NamedExpr):
        return name in _target_names(n.target)
    if isinstance(n, cst.ExceptHandler):
        return n.name is not None and name in _target_names(n.name.name)
    if isinstance(n, cst.Del):
        return name in _target_names(n.target)
    if isinstance(n, (cst.Global, cst.Nonlocal)):
        return any(item.name.value == name for item in n.names)
    if isinstance(n, (cst.Import, cst.ImportFrom)):
        names = n.names
        if isinstance(names, cst.ImportStar):
            return False
        for alias in names:
            local = alias.asname.name if alias.asname is not None else alias.name
            while isinstance(local, cst.Attribute):
                local = local.value
            if isinstance(local, cst.Name) and local.value == name:
                return True
    return False


def _simple_value(index: ModuleIndex, stmt: cst.CSTNode, name: str):
    """For one statement: its value if it is `name = value` (the last such small statement of a line),
    _OPAQUE if it binds `name` some other way, _NOT_FOUND if it does not bind `name`."""
    if isinstance(stmt, cst.SimpleStatementLine):
        for small in reversed(stmt.body):
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and \
                    isinstance(small.targets[0].target, cst.Name) and small.targets[0].target.value == name:
                return small.value
            if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name) \
                    and small.target.value == name:
                return small.value if small.value is not None else _OPAQUE
            if name in _bound_names(index, small):
                return _OPAQUE
        return _NOT_FOUND
    if isinstance(stmt, cst.With):
        # The body always runs: its last binding of `name` reaches past the `with`.
        for item in stmt.items:
            if _binds_here(item, name):
                return _OPAQUE
        body = stmt.body.body if isinstance(stmt.body, cst.IndentedBlock) else stmt.body.body
        for s in reversed(list(body)):
            v = _simple_value(index, s, name)
            if v is not _NOT_FOUND:
                return v
        return _NOT_FOUND
    if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
        return _OPAQUE if stmt.name.value == name else _NOT_FOUND
    return _OPAQUE if name in _bound_names(index, stmt) else _NOT_FOUND


def _stops(index: ModuleIndex, stmt: cst.CSTNode) -> FrozenSet[str]:
    """The names for which `_simple_value(index, stmt, name)` is not _NOT_FOUND (a backward search for the
    name stops at `stmt`), computed once per statement."""
    cache: Dict[cst.CSTNode, FrozenSet[str]] = index.cached("reaching.stops", dict)  # type: ignore[assignment]
    got = cache.get(stmt)
    if got is not None:
        return got
    if isinstance(stmt, cst.With):
        names: Set[str] = set()
        for item in stmt.items:
            names.update(_names_bound_here(item))
        for s in stmt.body.body:
            names |= _stops(index, s)
        got = frozenset(names)
    elif isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
        got = frozenset((stmt.name.value,))
    else:  # a simple statement line (its small statements' bindings), another compound statement, a small one
        got = _bound_names(index, stmt)
    cache[stmt] = got
    return got


_Block = Tuple[List[cst.CSTNode], Dict[int, int], Dict[str, List[int]]]


def _block(index: ModuleIndex, block: Optional[cst.CSTNode]) -> _Block:
    """A block's statements, the place of each (by id), and per name the places of the statements a
    backward search for it stops at, in order; computed once per block."""
    cache: Dict[Optional[cst.CSTNode], _Block] = index.cached("reaching.blocks", dict)  # type: ignore[assignment]
    got = cache.get(block)
    if got is None:
        body = list(getattr(block, "body", ()))
        stops: Dict[str, List[int]] = {}
        for k, s in enumerate(body):
            for n in _stops(index, s):
                stops.setdefault(n, []).append(k)
        got = cache[block] = (body, {id(s): k for k, s in enumerate(body)}, stops)
    return got


def reaching_value(index: ModuleIndex, name: cst.Name) -> Optional[cst.BaseExpression]:
    """The value `name` certainly holds where it is read (see the module docstring), else None."""
    target = name.value
    stmt = statement_of(index, name)
    if stmt is None:
        return None
    # Earlier small statements of the same line (`p = f(x); loss = g(p)`).
    if isinstance(stmt, cst.SimpleStatementLine):
        cur: cst.CSTNode = name
        while index.parent.get(cur) is not stmt:
            cur = index.parent[cur]
        i = next((k for k, s in enumerate(stmt.body) if s is cur), 0)
        for small in reversed(list(stmt.body)[:i]):
            v = _simple_value(index, small, target)
            if v is _OPAQUE:
                return None
            if v is not _NOT_FOUND:
                return v
    elif not isinstance(stmt, cst.With):
        # The read is in the header of a compound statement (`if f(p):`, `for x in p:`): the statement's
        # own bindings come after the header, except for loops that come back to it.
        if isinstance(stmt, (cst.For, cst.While)) and target in _bound_names(index, stmt):
            return None
    while True:
        block = index.parent.get(stmt)
        body, places, stops = _block(index, block)
        i = places.get(id(stmt))
        if i is None:
            return None
        # the statements before the read that may stop the search, nearest first
        at = stops.get(target, ())
        for j in range(bisect_left(at, i) - 1, -1, -1):
            v = _simple_value(index, body[at[j]], target)
            if v is _OPAQUE:
                return None
            if v is not _NOT_FOUND:
                return v
        # Nothing earlier in this block: go out to the statement that owns it.
        owner = index.parent.get(block) if not isinstance(block, cst.Module) else None
        if owner is None or isinstance(owner, _SCOPES):
            return None  # a parameter, a global, or bound after the read: unknown
        part = block
        # climb to the compound statement directly inside a block, checking loops and try on the way
        node = owner
        while True:
            if isinstance(node, (cst.For, cst.While)) and target in _bound_names(index, node):
                return None  # bound later in the loop: the previous iteration's value may reach the read
            if isinstance(node, cst.Try) or type(node).__name__ == "TryStar":
                if node.body is not part and target in _bound_names(index, node.body):
                    return None  # a handler/else/finally after a body that may or may not have bound it
            par = index.parent.get(node)
            if isinstance(par, (cst.IndentedBlock, cst.Module)):
                stmt = node
                break
            if par is None or isinstance(par, _SCOPES):
                return None
            part = node
            node = par


def resolve(index: ModuleIndex, expr: cst.BaseExpression, depth: int = 4) -> cst.BaseExpression:
    """Follow a local name to the value that certainly reaches it, repeatedly; else `expr` itself."""
    while depth > 0 and isinstance(expr, cst.Name):
        v = reaching_value(index, expr)
        if v is None:
            return expr
        expr = v
        depth -= 1
    return expr


def bound_value(index: ModuleIndex, expr: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """What a callable object was bound to: a local name's reaching value, a module-level name bound once
    (and not rebound in the function), `self.x` bound once in the module."""
    if isinstance(expr, cst.Name):
        v = reaching_value(index, expr)
        if v is not None:
            return v
        fn = index.scope.get(expr)
        if fn is not None and (expr.value in _bound_names(index, fn.body) or index.is_param(expr.value, fn)):
            return None
        vals = index.assigns.get(None, {}).get(expr.value, []) if None in index.assigns else []
        return vals[0] if len(vals) == 1 else None
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        vals = index.attr_assigns.get(expr.attr.value, [])
        klass = index.cls_of.get(expr)
        mine = [v for v in vals if index.cls_of.get(v) is klass] if klass is not None else []
        if mine:  # several classes of the module may bind the same attribute: take this class's
            return mine[0] if len(mine) == 1 else None
        return vals[0] if len(vals) == 1 else None
    return None
