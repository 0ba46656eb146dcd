"""The calls one iteration of a loop makes, in evaluation order, through the functions it calls.

`iteration(loop)` lists every call the loop body evaluates (arguments and receivers before the call
that takes them), statement after statement, nested loops included (taken once), and calls of
functions and methods of the same module followed up to a depth, with their parameters renamed to the
caller's arguments (`train(model, opt)` makes the callee's `optimizer.step()` read `opt.step()`).

Each call carries the branches it sits in (`tags`: (id of an if/try/match, branch)), so two calls in
different branches of the same `if` are known not to run in one iteration; and the statement of the
loop body that holds it (`top`), which is where a fix can move or insert a line.

Rules use it for order facts that the training-event paths of `training.py` do not carry (schedulers,
mode switches, sampler epochs). Definitions (def, class, lambda) are not entered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.index import ModuleIndex, bound_arguments
from trainlint.analysis.walk import calls_in_evaluation_order

MAX_DEPTH = 3
MAX_SITES = 5000

Tag = Tuple[int, int]


@dataclass(frozen=True)
class Site:
    call: cst.Call
    tags: FrozenSet[Tag]
    top: cst.CSTNode  # the statement of the loop body (or block) that holds the call
    depth: int  # 0: in the loop's own function; >0: inside a followed call
    loops: int  # loops between the analysed loop and the call (0: directly in its body)
    renames: Tuple[Tuple[str, str], ...] = ()
    scope: Optional[cst.CSTNode] = None  # the function the call is written in
    via: Optional[cst.Call] = None  # the call in the loop's own function that leads here (itself at depth 0)

    def text(self, index: ModuleIndex, expr: cst.BaseExpression) -> str:
        """The source of `expr`, its first name renamed to the caller's argument."""
        text = index.code(expr).strip()
        if self.renames:
            head, sep, rest = text.partition(".")
            for name, value in self.renames:
                if name == head:
                    return value + (sep + rest if sep else "")
        return text

    def excludes(self, other: "Site") -> bool:
        """Do the two calls sit in different branches of one `if`/`try`/`match` (never both run)?"""
        mine = dict(self.tags)
        return any(node in mine and mine[node] != branch for node, branch in other.tags)


class _TooMany(Exception):
    pass


class Sequences:
    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self._cache: Dict[cst.CSTNode, List[Site]] = {}
        self._local_defs: Dict[Optional[cst.CSTNode], Dict[str, cst.FunctionDef]] = {}
        for fn in index.all_functions:
            if index._owner_class(fn) is not None:
                continue
            self._local_defs.setdefault(index.scope.get(fn), {})[fn.name.value] = fn

    # -- public -----------------------------------------------------------------------------------
    def iteration(self, loop: cst.CSTNode) -> List[Site]:
        """The calls of one iteration of `loop` (its test or iterable is not included)."""
        if loop not in self._cache:
            out: List[Site] = []
            state = _State(out, self.index.scope.get(loop), self.index.cls_of.get(loop))
            try:
                self._block(loop.body, state, None)
            except (_TooMany, RecursionError):
                out = []
            self._cache[loop] = out
        return self._cache[loop]

    # -- walking ----------------------------------------------------------------------------------
    def _block(self, block, st: "_State", top) -> None:
        body = getattr(block, "body", ())
        for stmt in body:
            self._stmt(stmt, st, top if top is not None else stmt)

    def _stmt(self, stmt, st: "_State", top) -> None:
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            return
        if isinstance(stmt, cst.If):
            self._expr(stmt.test, st, top)
            self._block(stmt.body, st.tag((id(stmt), 0)), top)
            if stmt.orelse is not None:
                orelse = stmt.orelse
                if isinstance(orelse, cst.If):
                    self._stmt(orelse, st.tag((id(stmt), 1)), top)
                else:
                    self._block(orelse.body, st.tag((id(stmt), 1)), top)
            return
        if isinstance(stmt, (cst.For, cst.While)):
            self._expr(stmt.iter if isinstance(stmt, cst.For) else stmt.test, st, top)
            self._block(stmt.body, st.nested(), top)
            if stmt.orelse is not None:
                self._block(stmt.orelse.body, st, top)
            return
        if isinstance(stmt, cst.With):
            for item in stmt.items:
                self._expr(item.item, st, top)
            self._block(stmt.body, st, top)
            return
        if isinstance(stmt, cst.Try) or type(stmt).__name__ == "TryStar":
            self._block(stmt.body, st.tag((id(stmt), 0)), top)
            for i, h in enumerate(stmt.handlers):
                self._block(h.body, st.tag((id(stmt), i + 1)), top)
            if stmt.orelse is not None:
                self._block(stmt.orelse.body, st.tag((id(stmt), 0)), top)
            if stmt.finalbody is not None:
                self._block(stmt.finalbody.body, st, top)
            return
        if isinstance(stmt, cst.Match):
            self._expr(stmt.subject, st, top)
            for i, case in enumerate(stmt.cases):
                self._block(case.body, st.tag((id(stmt), i)), top)
            return
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self._expr(small, st, top)
            return
        if isinstance(stmt, cst.BaseSmallStatement):
            self._expr(stmt, st, top)

    def _expr(self, expr, st: "_State", top) -> None:
        if expr is None:
            return
        for call in calls_in_evaluation_order(expr):
            via = call if st.depth == 0 else st.via
            st.add(Site(call, st.tags, top, st.depth, st.loops, st.renames, st.scope, via))
            found = self._resolve(call, st.scope, st.klass)
            if found is None:
                continue
            fn, renames, klass = found
            if fn in st.stack or st.depth >= MAX_DEPTH:
                continue
            inner = st.call(fn, klass, renames)
            inner.via = via
            self._block(fn.body, inner, top)

    # -- following calls -------------------------------------------------------------------------
    def _local_def(self, name: str, scope) -> Optional[cst.FunctionDef]:
        sc = scope
        while True:
            fn = self._local_defs.get(sc, {}).get(name)
            if fn is not None:
                return fn
            if sc is None:
                return None
            sc = self.index.scope.get(sc)

    def _resolve(self, call: cst.Call, scope, klass):
        func = call.func
        fn, offset, fn_klass = None, 0, klass
        if isinstance(func, cst.Name):
            fn = self._local_def(func.value, scope)
        elif isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self" \
                and klass is not None:
            fn = self.index.methods.get((klass.name.value, func.attr.value))
            offset = 1
        if fn is None:
            return None
        if offset == 0 and self.index._owner_class(fn) is None:
            fn_klass = self.index.cls_of.get(fn)
        renames: Dict[str, str] = {
            name: self.index.code(value).strip() for name, value in bound_arguments(call, fn, offset).items()
            if isinstance(value, (cst.Name, cst.Attribute, cst.Subscript))
        }
        return fn, renames, fn_klass


class _State:
    def __init__(self, out: List[Site], scope, klass, tags: FrozenSet[Tag] = frozenset(), depth: int = 0,
                 loops: int = 0, renames: Tuple[Tuple[str, str], ...] = (), stack: Tuple = ()) -> None:
        self.out, self.scope, self.klass, self.tags = out, scope, klass, tags
        self.depth, self.loops, self.renames, self.stack = depth, loops, renames, stack
        self.via: Optional[cst.Call] = None

    def add(self, site: Site) -> None:
        self.out.append(site)
        if len(self.out) > MAX_SITES:
            raise _TooMany()

    def _copy(self, **kw) -> "_State":
        d = dict(scope=self.scope, klass=self.klass, tags=self.tags, depth=self.depth, loops=self.loops,
                 renames=self.renames, stack=self.stack)
        d.update(kw)
        st = _State(self.out, **d)
        st.via = self.via
        return st

    def tag(self, tag: Tag) -> "_State":
        return self._copy(tags=self.tags | {tag})

    def nested(self) -> "_State":
        return self._copy(loops=self.loops + 1)

    def call(self, fn, klass, renames: Dict[str, str]) -> "_State":
        # compose: a callee parameter bound to a caller name that is itself renamed
        outer = dict(self.renames)
        composed = {}
        for k, v in renames.items():
            head, sep, rest = v.partition(".")
            composed[k] = (outer[head] + sep + rest) if head in outer else v
        if "self" not in composed and self.index_self(fn):
            composed["self"] = outer.get("self", "self")
        return self._copy(scope=fn, klass=klass, depth=self.depth + 1, renames=tuple(composed.items()),
                          stack=self.stack + (fn,))

    @staticmethod
    def index_self(fn: cst.FunctionDef) -> bool:
        params = [*fn.params.posonly_params, *fn.params.params]
        return bool(params) and params[0].name.value == "self"


def sequences(index: ModuleIndex) -> Sequences:
    return index.cached("sequences", lambda: Sequences(index))
