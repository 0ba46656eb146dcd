"""The structural gate: cheap facts of a module from CPython's `ast`, so that LibCST parses only the files
where some rule can fire.

LibCST's lossless tree is what rules read and fixes are built on, but building it costs about three times
CPython's own parse (a C parser) and most of a linter's run on a large tree. Files pass two stages first:

1. the rule's PREFILTER: words that must occur in the text (in `rules/__init__.py`);
2. the rule's `gate(facts, options)`: a structural precondition read from `ModuleFacts`, computed here in
   one walk of the `ast` tree: which names are called (import aliases resolved), which identifiers are
   used, the divisions and what their two sides may hold, which calls sit in a loop.

A gate states what the rule's check needs to find before it can report anything (a DataLoader call, a
loop that calls backward(), a division whose denominator may be a batch size...). It must never be
stricter than the check: a gate that rejects a file the check would report on loses a finding. Gates
are therefore written as necessary conditions, over-approximated wherever a value may come from
elsewhere (a parameter, a name assigned anywhere in the module). `tests/rules/test_gate.py` runs every
rule's positive examples through its gate, and `benchmarks/gate_check.py` compares the findings of a
gated and an ungated run over real trees.

Nothing here is a fact a rule reports on: those are computed once, on LibCST, in the other modules of
this package. This module only decides whether that work can find anything.
"""

from __future__ import annotations

import ast
from typing import Dict, Iterable, List, Optional, Set

__all__ = ["ModuleFacts", "module_facts"]

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_MAX_RESOLVE = 3


class ModuleFacts:
    """What a module's `ast` says, for the rules' gates.

    - `calls`: the names called: the attribute of `x.name(...)`, the name of `name(...)`, and for a name
      bound by an import (`from torch.optim import Adam as A`), also the imported name (`Adam`).
    - `names`: every identifier used: names, attributes, imported names, defined functions, classes and
      parameters, keyword argument names.
    - `strings`: the short string constants (`activation="softmax"`, `reduction="sum"`).
    - `divisions`: (numerator, denominator, augmented, scope) of each `a / b` and `a /= b`.
    - `loop_calls`: for each `for`/`while` loop, the names called in it (nested loops included).
    - `call_nodes[name]`: the calls of each called name (the attribute or the name, as in `calls`).
    - `call_owners[name]`: where those calls are: (the enclosing function's name, whether it is a method
      of a class); ("", False) at module level.
    - `loop_iterables`: the names and attributes in what `for` loops iterate over.
    - `functions`: the names of the functions and methods defined.
    - `filename`: the path linted.

    Scopes are numbers: 0 is the module, each function (or lambda) gets its own. `may_be` follows a name
    to the values assigned to it in its scope and the scopes around it, `self.x` to every value assigned
    to an `x` attribute, and a parameter to the arguments of every call of its function by name.
    """

    __slots__ = ("calls", "names", "strings", "divisions", "loop_calls", "functions", "aliases", "loop_iterables", "call_nodes", "call_owners", "_owner",
                 "imported_modules", "filename", "_assigned", "_params", "_parent", "_scope_name", "_args", "_memo")

    def __init__(self, filename: str = "") -> None:
        self.calls: Set[str] = set()
        self.names: Set[str] = set()
        self.strings: Set[str] = set()
        self.divisions: List[tuple] = []
        self.loop_calls: List[Set[str]] = []
        self.functions: Set[str] = set()
        self.call_nodes: Dict[str, List[ast.Call]] = {}  # called name -> the calls
        self.call_owners: Dict[str, Set[tuple]] = {}  # called name -> {(enclosing function, is a method)}
        self._owner: Dict[int, tuple] = {0: ("", False)}  # scope -> (its function's name, is a method)
        self.loop_iterables: Set[str] = set()  # the names and attributes in the iterables of `for` loops
        self.aliases: Dict[str, str] = {}  # local name -> imported name (its last part)
        self.imported_modules: Set[str] = set()  # top-level package of every absolute import
        self.filename = filename
        self._assigned: Dict[tuple, List[tuple]] = {}  # (scope, name) or (ATTR, name) -> [(value, scope)]
        self._params: Dict[int, Set[str]] = {}  # scope -> its parameters
        self._parent: Dict[int, int] = {0: 0}  # scope -> enclosing scope
        self._scope_name: Dict[int, Optional[str]] = {0: None}  # scope -> function name (None: lambda, module)
        self._args: Dict[str, List[tuple]] = {}  # function name -> [(argument, scope)] of every call by name
        self._memo: Dict[object, object] = {}  # may_be's answers

    # -- queries --------------------------------------------------------------------------------------
    def calls_any(self, names: Iterable[str]) -> bool:
        return not self.calls.isdisjoint(names)

    def uses_any(self, names: Iterable[str]) -> bool:
        return not self.names.isdisjoint(names)

    def loop_calls_all(self, *groups: Iterable[str]) -> bool:
        """Is there a loop that calls a name of every group?"""
        return any(all(not calls.isdisjoint(g) for g in groups) for calls in self.loop_calls)

    def loop_calls_local_or(self, names: Iterable[str]) -> bool:
        """Is there a loop that calls one of `names`, or a function defined in this module (whose body
        may call one)?"""
        wanted = set(names) | self.functions
        return any(not calls.isdisjoint(wanted) for calls in self.loop_calls)

    def imports_any(self, packages: Iterable[str]) -> bool:
        return not self.imported_modules.isdisjoint(packages)

    def may_be(self, expr: Optional[ast.AST], test, scope: int = 0, depth: int = 0, names_only: bool = False) -> bool:
        """Does `test` hold for `expr`, or for a value it may hold? Followed: names (to what is assigned to
        them in their scope and the scopes around it), parameters (to what callers pass), `self.x`, the
        operands of an operation, and calls (`.clamp(...)`, `float(...)`: their receiver and arguments);
        with `names_only`, names and `self.x` only. An over-approximation by design."""
        if expr is None or depth > _MAX_RESOLVE:
            return False
        key = (id(expr), id(test), scope, depth, names_only)
        known = self._memo.get(key)
        if known is None:
            self._memo[id(test)] = test  # keeps the test alive, so that its id names it
            self._memo[key] = False  # a cycle through names answers no
            known = self._memo[key] = self._may_be(expr, test, scope, depth, names_only)
        return known

    def _may_be(self, expr: ast.AST, test, scope: int, depth: int, names_only: bool) -> bool:
        if test(expr):
            return True
        tp = type(expr)
        if tp is ast.Name:
            return any(self.may_be(v, test, sc, depth + 1, names_only) for v, sc in self._values(expr.id, scope))
        if tp is ast.Attribute:
            return any(self.may_be(v, test, sc, depth + 1, names_only) for v, sc in self._assigned.get((ATTR, expr.attr), ()))
        if names_only:
            return False
        if tp is ast.Call:
            parts = list(expr.args) + [k.value for k in expr.keywords]
            if type(expr.func) is ast.Attribute:
                parts.append(expr.func.value)
            return any(self.may_be(p, test, scope, depth + 1) for p in parts)
        if tp is ast.BinOp:
            return self.may_be(expr.left, test, scope, depth + 1) or self.may_be(expr.right, test, scope, depth + 1)
        if tp is ast.Subscript or tp is ast.Starred:
            return self.may_be(expr.value, test, scope, depth + 1)
        if tp is ast.UnaryOp:
            return self.may_be(expr.operand, test, scope, depth + 1)
        if tp is ast.IfExp:
            return self.may_be(expr.body, test, scope, depth + 1) or self.may_be(expr.orelse, test, scope, depth + 1)
        return False

    def _values(self, name: str, scope: int) -> List[tuple]:
        """What `name` may hold where `scope` reads it: the assignments in the innermost scope around it
        that assigns or binds it; for a parameter, every argument passed to its function by name. A name
        no scope binds (a builtin, a global from elsewhere) holds nothing known."""
        while True:
            vals = self._assigned.get((scope, name))
            if name in self._params.get(scope, ()):
                fn = self._scope_name.get(scope)
                if fn is None:
                    return vals or []  # a lambda's parameter: nothing follows it (the rules cannot either)
                return (vals or []) + self._args.get(fn, [])
            if vals:
                return vals
            if scope == 0:
                return []
            scope = self._parent[scope]


ATTR = -1


def root(expr: ast.AST) -> Optional[str]:
    """`torch` for `torch.nn.functional`, `x` for `x.a[0].b`."""
    while isinstance(expr, (ast.Attribute, ast.Subscript, ast.Call)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def leaf(expr: ast.AST) -> Optional[str]:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


def contains(expr: ast.AST, test) -> bool:
    """Does `expr` hold a node for which `test` holds?"""
    return any(test(node) for node in ast.walk(expr))


def is_sum(expr: ast.AST) -> bool:
    return isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add)


def module_facts(tree: ast.Module, filename: str = "") -> ModuleFacts:
    facts = ModuleFacts(filename)
    _walk(facts, tree)
    # imports may come after the calls in walk order: resolve the aliases of called names at the end
    for group in [facts.calls] + facts.loop_calls:
        group.update([facts.aliases[n] for n in group if n in facts.aliases])
    return facts


def _walk(f: ModuleFacts, tree: ast.AST) -> None:
    """One pass over the tree, iterative; only the node kinds the facts need do any work."""
    calls, names, divisions, loop_calls = f.calls, f.names, f.divisions, f.loop_calls
    assigned, args_of = f._assigned, f._args
    Name, Attribute, Call, BinOp, Div, AugAssign = ast.Name, ast.Attribute, ast.Call, ast.BinOp, ast.Div, ast.AugAssign
    Assign, AnnAssign, Constant, AST = ast.Assign, ast.AnnAssign, ast.Constant, ast.AST
    FunctionDef, AsyncFunctionDef, Lambda, ClassDef = ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef
    next_scope = 1
    # (node, the call-name sets of the loops around it, scope, enclosing class name)
    stack: List[tuple] = [(tree, (), 0, None)]
    pop, push = stack.pop, stack.append
    while stack:
        node, loops, scope, klass = pop()
        tp = type(node)
        if tp is Name:
            names.add(node.id)
            continue
        if tp is Constant:
            if type(node.value) is str and len(node.value) <= 40:
                f.strings.add(node.value)
            continue
        if tp is Attribute:
            names.add(node.attr)
        elif tp is Call:
            func = node.func
            ftp = type(func)
            name = func.attr if ftp is Attribute else (func.id if ftp is Name else None)
            if name is not None:
                calls.add(name)
                for lc in loops:
                    lc.add(name)
                f.call_nodes.setdefault(name, []).append(node)
                f.call_owners.setdefault(name, set()).add(f._owner.get(scope, ("", False)))
                passed = args_of.setdefault(name, [])
                for a in node.args:
                    passed.append((a, scope))
                for kw in node.keywords:
                    passed.append((kw.value, scope))
            for kw in node.keywords:
                if kw.arg is not None:
                    names.add(kw.arg)
        elif tp is BinOp:
            if type(node.op) is Div:
                divisions.append((node.left, node.right, False, scope))
        elif tp is AugAssign:
            if type(node.op) is Div:
                divisions.append((node.target, node.value, True, scope))
            _assign(assigned, node.target, ast.BinOp(left=node.target, op=node.op, right=node.value), scope)
        elif tp is Assign:
            for t in node.targets:
                _assign(assigned, t, node.value, scope)
        elif tp is AnnAssign:
            if node.value is not None:
                _assign(assigned, node.target, node.value, scope)
        elif tp in _LOOPS:
            if tp is not ast.While:
                _assign(assigned, node.target, node.iter, scope)
                for sub in ast.walk(node.iter):
                    n = leaf(sub)
                    if n is not None:
                        f.loop_iterables.add(n)
            mine: Set[str] = set()
            loop_calls.append(mine)
            loops = loops + (mine,)
        elif tp is FunctionDef or tp is AsyncFunctionDef or tp is Lambda:
            inner = next_scope
            next_scope += 1
            f._parent[inner] = scope
            a = node.args
            params = {arg.arg for arg in a.posonlyargs + a.args + a.kwonlyargs}
            if a.vararg is not None:
                params.add(a.vararg.arg)
            if a.kwarg is not None:
                params.add(a.kwarg.arg)
            f._params[inner] = params
            names.update(params)
            positional = a.posonlyargs + a.args
            for arg, default in zip(positional[len(positional) - len(a.defaults):], a.defaults):
                assigned.setdefault((inner, arg.arg), []).append((default, scope))
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                if default is not None:
                    assigned.setdefault((inner, arg.arg), []).append((default, scope))
            if tp is Lambda:
                f._scope_name[inner] = None
                f._owner[inner] = f._owner.get(scope, ("", False))  # a lambda runs where it is written
                push((node.body, loops, inner, None))
            else:
                names.add(node.name)
                f.functions.add(node.name)
                # `Net(...)` passes its arguments to `__init__`
                f._scope_name[inner] = klass if node.name == "__init__" and klass else node.name
                outer = f._owner.get(scope, ("", False))
                # a def in a class body is a method; a def nested in a method belongs to that method
                f._owner[inner] = (node.name, True) if klass is not None else outer if outer[1] else (node.name, False)
                for stmt in node.body:
                    push((stmt, loops, inner, None))
            for sub in a.defaults + [d for d in a.kw_defaults if d is not None] + getattr(node, "decorator_list", []):
                push((sub, loops, scope, klass))
            continue
        elif tp is ClassDef:
            names.add(node.name)
            for sub in node.bases + node.keywords + node.decorator_list:
                push((sub, loops, scope, klass))
            for stmt in node.body:
                push((stmt, loops, scope, node.name))
            continue
        elif tp is ast.Import:
            for al in node.names:
                f.imported_modules.add(al.name.split(".")[0])
                names.add(al.asname or al.name.split(".")[0])
                names.add(al.name.rsplit(".", 1)[-1])
        elif tp is ast.ImportFrom:
            if node.module and not node.level:
                f.imported_modules.add(node.module.split(".")[0])
            for al in node.names:
                names.add(al.name)
                if al.asname:
                    names.add(al.asname)
                    f.aliases[al.asname] = al.name
        elif tp is ast.comprehension:
            _assign(assigned, node.target, node.iter, scope)
        elif tp is ast.withitem:
            if node.optional_vars is not None:
                _assign(assigned, node.optional_vars, node.context_expr, scope)
        elif tp is ast.NamedExpr:
            _assign(assigned, node.target, node.value, scope)
        fields = _CHILD_FIELDS.get(tp)
        if fields is None:
            fields = _CHILD_FIELDS[tp] = tuple(f for f in tp._fields if f not in _NOT_CHILDREN)
        for field in fields:
            value = getattr(node, field, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, AST):
                        push((item, loops, scope, klass))
            elif isinstance(value, AST):
                push((value, loops, scope, klass))


# Fields that never hold a node the facts need: load/store contexts and operator singletons (read
# directly from their parent), and plain values.
_NOT_CHILDREN = frozenset({"ctx", "op", "ops", "id", "attr", "name", "arg", "module", "level", "names",
                           "type_comment", "kind", "conversion", "is_async", "asname"})
_CHILD_FIELDS: Dict[type, tuple] = {}


def _assign(assigned: Dict[tuple, List[tuple]], target: ast.AST, value: ast.AST, scope: int) -> None:
    tp = type(target)
    if tp is ast.Tuple or tp is ast.List:
        for elt in target.elts:  # `a, b = f()`: each may hold any part of the value
            _assign(assigned, elt.value if type(elt) is ast.Starred else elt, value, scope)
    elif tp is ast.Name:
        assigned.setdefault((scope, target.id), []).append((value, scope))
    elif tp is ast.Attribute:
        assigned.setdefault((ATTR, target.attr), []).append((value, scope))
    elif tp is ast.Subscript:
        _assign(assigned, target.value, value, scope)
