"""Training steps: which loops run backward() and an optimizer step, and in what order.

A loop body is turned into the set of its *paths*: for each way through its branches, the sequence of
training events it executes. Events are

    B        a backward pass            (`loss.backward()`, `accelerator.backward(loss)`, ...)
    S(opt)   an optimizer step          (`opt.step()`, `scaler.step(opt)`, `xm.optimizer_step(opt)`)
    C(opt)   `opt.zero_grad()`
    C(*)     clearing of module gradients (`model.zero_grad()`, `p.grad = None`, `p.grad.zero_()`)
    C?(opt)  an opaque call that may clear (an unknown function given the optimizer, a step closure
             from elsewhere); counts as clearing, so that trainlint stays silent rather than guess

Calls of functions and methods defined in the same module are followed (up to a depth bound), with
their parameters renamed to the caller's arguments, so `train_step(model, opt)` is seen through.
Paths of nested loops are their body taken zero or one time. A module with too many paths is skipped
(silence, not a guess).

Besides `for`/`while` loops, a Lightning `training_step` method is a loop body too: the framework calls
it once per batch, so with manual optimisation (`opt.step()` in the method) its paths repeat like a loop's.

`LoopFacts.conditions` maps each `if` of the body (by its tag id) to its test, so that rules can ask
what a branch depends on (`step % accum == 0` is a periodic condition: gradient accumulation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import libcst as cst

from trainlint.analysis.index import ModuleIndex, Scope, bound_arguments, method_name, receiver
from trainlint.analysis.optim import grad_attribute_clear, is_backward_call, is_grad_scaler, is_optimizer
from trainlint.analysis.walk import calls_in_evaluation_order

MAX_PATHS = 400
MAX_DEPTH = 4

Tag = Tuple[int, int]  # (id of an If/Try/Match node, branch index)


class TooComplex(Exception):
    pass


@dataclass(frozen=True)
class Event:
    kind: str  # "B", "S", "C", "C*", "C?"
    key: Optional[str]  # optimizer expression in the loop's scope; None for B and C*
    node: cst.CSTNode
    tags: FrozenSet[Tag] = frozenset()
    inner: bool = False  # inside a nested loop that is itself a training loop
    depth: int = 0  # 0: in the loop's own function; >0: inside an inlined call
    accumulate: bool = False  # inside `with accelerator.accumulate(...)`
    stmt: Optional[cst.CSTNode] = None  # the statement line that holds the event (depth 0 only)

    def clears(self, key: str, explicit: bool = False) -> bool:
        """Does this event clear the gradients of optimizer `key`? A clear on a wrapper's inner optimizer
        (`opt.optimizer.zero_grad()` for `opt.step()`) counts. With `explicit`, opaque calls do not."""
        if self.kind == "C*":
            return True
        if self.kind == "C?" and explicit:
            return False
        if self.kind not in ("C", "C?"):
            return False
        k = self.key or ""
        return k == key or k == "*" or k.startswith(key + ".") or key.startswith(k + ".")


@dataclass(frozen=True)
class Path:
    events: Tuple[Event, ...]
    exit: Optional[str] = None  # None (falls through), "continue", "break", "return"


@dataclass
class Ctx:
    scope: Scope
    klass: Optional[cst.ClassDef]
    renames: Dict[str, str] = field(default_factory=dict)
    tags: FrozenSet[Tag] = frozenset()
    depth: int = 0
    stack: Tuple[cst.CSTNode, ...] = ()
    accumulate: bool = False

    def child(self, **kw) -> "Ctx":
        d = dict(self.__dict__)
        d.update(kw)
        return Ctx(**d)


@dataclass
class LoopFacts:
    loop: cst.CSTNode
    scope: Scope
    paths: List[Path]
    # (If-node id, branch index) -> paths of that branch alone
    branches: Dict[Tag, List[Path]]
    # If-node id -> the `if` test
    conditions: Dict[int, cst.BaseExpression] = field(default_factory=dict)

    @property
    def events(self):
        for p in self.paths:
            yield from p.events

    def has_backward(self) -> bool:
        return any(e.kind == "B" for e in self.events)

    def step_keys(self) -> List[str]:
        keys: List[str] = []
        for e in self.events:
            if e.kind == "S" and not e.inner and e.key not in keys:
                keys.append(e.key)
        return keys

    @property
    def is_training_loop(self) -> bool:
        return bool(self.step_keys()) and self.has_backward()

    def periodic_condition(self, event: Event) -> Optional[cst.BaseExpression]:
        """The test of an enclosing `if` that holds only every k-th iteration (`i % k == 0`,
        `accelerator.sync_gradients`), the form of gradient accumulation; None if there is none."""
        for node_id, branch in event.tags:
            test = self.conditions.get(node_id)
            if test is not None and branch == 0 and is_periodic_test(test):
                return test
        return None


def _seq(a: List[Path], b: List[Path]) -> List[Path]:
    out: List[Path] = []
    seen = set()
    for p in a:
        if p.exit is not None:
            if p not in seen:
                seen.add(p)
                out.append(p)
            continue
        for q in b:
            r = Path(p.events + q.events, q.exit)
            if r not in seen:
                seen.add(r)
                out.append(r)
    if len(out) > MAX_PATHS:
        raise TooComplex()
    return out


EMPTY = [Path(())]


class TrainingAnalysis:
    """Builds LoopFacts for every loop of a module (lazily, once)."""

    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self._local_defs: Dict[Scope, Dict[str, cst.FunctionDef]] = {}
        for fn in index.all_functions:
            sc = index.scope.get(fn)
            if index.cls_of.get(fn) is not None and index._owner_class(fn) is not None:
                continue
            self._local_defs.setdefault(sc, {})[fn.name.value] = fn
        self._loop_facts: Dict[cst.CSTNode, Optional[LoopFacts]] = {}
        self._branches: Dict[Tag, List[Path]] = {}
        self._conditions: Dict[int, cst.BaseExpression] = {}

    # -- public ----------------------------------------------------------------------------
    def loops(self) -> List[LoopFacts]:
        out = []
        for loop in [*self.index.loops, *self._step_methods()]:
            f = self.facts(loop)
            if f is not None:
                out.append(f)
        return out

    def _step_methods(self) -> List[cst.FunctionDef]:
        """Lightning `training_step` methods: the framework's loop calls them once per batch."""
        return [fn for (cls, name), fn in self.index.methods.items() if name == "training_step"]

    def facts(self, loop) -> Optional[LoopFacts]:
        if loop in self._loop_facts:
            return self._loop_facts[loop]
        self._loop_facts[loop] = None  # guards recursion
        scope = self.index.scope.get(loop)
        ctx = Ctx(scope=scope, klass=self.index.cls_of.get(loop))
        if isinstance(loop, cst.FunctionDef):  # a training_step: its body is the loop body
            scope = loop
            ctx = Ctx(scope=loop, klass=self.index.cls_of.get(loop), stack=(loop,))
        self._branches = {}
        self._conditions = {}
        try:
            paths = self._loop_body_paths(loop, ctx)
        except (TooComplex, RecursionError):
            return None
        facts = LoopFacts(loop, scope, paths, dict(self._branches), dict(self._conditions))
        self._loop_facts[loop] = facts
        return facts

    # -- paths -----------------------------------------------------------------------------
    def _loop_body_paths(self, loop, ctx: Ctx) -> List[Path]:
        paths = self._block(loop.body, ctx)
        if isinstance(loop, cst.While):
            paths = _seq(self._expr_paths(loop.test, ctx), paths)
        return paths

    def _block(self, block, ctx: Ctx) -> List[Path]:
        if isinstance(block, cst.SimpleStatementSuite):
            stmts: Sequence = block.body
            acc = EMPTY
            for s in stmts:
                acc = _seq(acc, self._small(s, ctx, None))
            return acc
        body = getattr(block, "body", ())
        acc = EMPTY
        for stmt in body:
            acc = _seq(acc, self._stmt(stmt, ctx))
        return acc

    def _stmt(self, stmt, ctx: Ctx) -> List[Path]:
        if isinstance(stmt, cst.SimpleStatementLine):
            acc = EMPTY
            for s in stmt.body:
                acc = _seq(acc, self._small(s, ctx, stmt))
            return acc
        if isinstance(stmt, cst.If):
            return self._if(stmt, ctx)
        if isinstance(stmt, (cst.For, cst.While)):
            return self._nested_loop(stmt, ctx)
        if isinstance(stmt, cst.With):
            acc = EMPTY
            accumulate = ctx.accumulate
            for item in stmt.items:
                acc = _seq(acc, self._expr_paths(item.item, ctx))
                call = item.item
                if isinstance(call, cst.Call) and method_name(call) == "accumulate":
                    accumulate = True
            return _seq(acc, self._block(stmt.body, ctx.child(accumulate=accumulate)))
        if isinstance(stmt, cst.Try) or type(stmt).__name__ == "TryStar":
            body = self._block(stmt.body, ctx)
            if stmt.orelse is not None:
                body = _seq(body, self._block(stmt.orelse.body, ctx))
            alts = list(body)
            for i, h in enumerate(stmt.handlers):
                tag = (id(stmt), i + 1)
                alts.extend(self._block(h.body, ctx.child(tags=ctx.tags | {tag})))
            if stmt.finalbody is not None:
                alts = _seq([Path(p.events) for p in alts], self._block(stmt.finalbody.body, ctx)) if alts else alts
            return alts or EMPTY
        if isinstance(stmt, cst.Match):
            out: List[Path] = []
            subj = self._expr_paths(stmt.subject, ctx)
            for i, case in enumerate(stmt.cases):
                tag = (id(stmt), i)
                sub = self._block(case.body, ctx.child(tags=ctx.tags | {tag}))
                self._branches[tag] = sub
                out.extend(_seq(subj, sub))
            out.extend(subj)
            return out
        # FunctionDef, ClassDef: definitions execute nothing of interest here.
        return EMPTY

    def _if(self, stmt: cst.If, ctx: Ctx) -> List[Path]:
        test = self._expr_paths(stmt.test, ctx)
        tag_body = (id(stmt), 0)
        tag_else = (id(stmt), 1)
        self._conditions[id(stmt)] = stmt.test
        body = self._block(stmt.body, ctx.child(tags=ctx.tags | {tag_body}))
        self._branches[tag_body] = body
        else_ctx = ctx.child(tags=ctx.tags | {tag_else})
        if stmt.orelse is None:
            orelse = EMPTY
        elif isinstance(stmt.orelse, cst.If):
            orelse = self._if(stmt.orelse, else_ctx)
        else:
            orelse = self._block(stmt.orelse.body, else_ctx)
        self._branches[tag_else] = orelse
        out = _seq(test, body) + [p for p in _seq(test, orelse)]
        if len(out) > MAX_PATHS:
            raise TooComplex()
        return list(dict.fromkeys(out))

    def _nested_loop(self, loop, ctx: Ctx) -> List[Path]:
        head = self._expr_paths(loop.iter if isinstance(loop, cst.For) else loop.test, ctx)
        body = self._loop_body_paths(loop, ctx)
        body = [Path(p.events, None if p.exit in ("continue", "break") else p.exit) for p in body]
        is_training = any(e.kind == "S" and not e.inner for p in body for e in p.events) and any(
            e.kind == "B" for p in body for e in p.events
        )
        if is_training:
            body = [Path(tuple(_mark_inner(e) for e in p.events), p.exit) for p in body]
        out = list(dict.fromkeys(EMPTY + body))
        if loop.orelse is not None:
            out = _seq(out, self._block(loop.orelse.body, ctx))
        return _seq(head, out)

    def _small(self, small, ctx: Ctx, line) -> List[Path]:
        if isinstance(small, (cst.Return, cst.Raise)):
            value = small.value if isinstance(small, cst.Return) else small.exc
            paths = self._expr_paths(value, ctx, line) if value is not None else EMPTY
            return [Path(p.events, "return") for p in paths]
        if isinstance(small, cst.Continue):
            return [Path((), "continue")]
        if isinstance(small, cst.Break):
            return [Path((), "break")]
        events: List[Event] = []
        if isinstance(small, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
            targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            value = small.value
            paths = self._expr_paths(value, ctx, line) if value is not None else EMPTY
            if (
                isinstance(small, cst.Assign)
                and isinstance(value, cst.Name)
                and value.value == "None"
                and any(isinstance(t, cst.Attribute) and t.attr.value == "grad" for t in targets)
            ):
                events.append(self._event("C*", None, small, ctx, line))
            return _seq(paths, [Path(tuple(events))]) if events else paths
        if isinstance(small, cst.Del):
            if any(isinstance(t.target, cst.Attribute) and t.target.attr.value == "grad" for t in _del_targets(small)):
                return [Path((self._event("C*", None, small, ctx, line),))]
            return EMPTY
        if isinstance(small, cst.Expr):
            return self._expr_paths(small.value, ctx, line)
        return EMPTY

    def _event(self, kind, key, node, ctx: Ctx, line, **kw) -> Event:
        return Event(kind, key, node, ctx.tags, False, ctx.depth, ctx.accumulate,
                     line if ctx.depth == 0 else None, **kw)

    def _expr_paths(self, expr, ctx: Ctx, line=None) -> List[Path]:
        """Paths through the calls of one expression, arguments before the call that takes them."""
        if expr is None:
            return EMPTY
        calls = calls_in_evaluation_order(expr)
        acc = EMPTY
        for call in calls:
            acc = _seq(acc, self._call(call, ctx, line))
        return acc

    def _key(self, expr: cst.BaseExpression, ctx: Ctx) -> str:
        text = self.index.code(expr).strip()
        if ctx.renames:
            head, sep, rest = text.partition(".")
            if head in ctx.renames:
                text = ctx.renames[head] + (sep + rest if sep else "")
        return text

    def _call(self, call: cst.Call, ctx: Ctx, line) -> List[Path]:
        idx = self.index
        m = method_name(call)
        recv = receiver(call)
        if is_backward_call(idx, call):
            return [Path((self._event("B", None, call, ctx, line),))]
        if m == "step" and recv is not None:
            if is_optimizer(idx, recv, ctx.scope):
                key = self._key(recv, ctx)
                pre: List[Path] = EMPTY
                if call.args:
                    pre = self._closure_paths(call.args[0].value, key, ctx, line)
                return _seq(pre, [Path((self._event("S", key, call, ctx, line),))])
            if call.args and is_grad_scaler(idx, recv, ctx.scope) and is_optimizer(idx, call.args[0].value, ctx.scope):
                key = self._key(call.args[0].value, ctx)
                return [Path((self._event("S", key, call, ctx, line),))]
            return EMPTY
        if m == "optimizer_step" and call.args and is_optimizer(idx, call.args[0].value, ctx.scope):
            return [Path((self._event("S", self._key(call.args[0].value, ctx), call, ctx, line),))]
        if m == "zero_grad" and recv is not None:
            if is_optimizer(idx, recv, ctx.scope):
                return [Path((self._event("C", self._key(recv, ctx), call, ctx, line),))]
            return [Path((self._event("C*", None, call, ctx, line),))]
        if grad_attribute_clear(call):
            return [Path((self._event("C*", None, call, ctx, line),))]
        target = self._resolve_local_call(call, ctx)
        if target is not None:
            fn, renames = target
            if fn in ctx.stack or ctx.depth >= MAX_DEPTH:
                return EMPTY
            sub = ctx.child(
                scope=fn,
                klass=self.index.cls_of.get(fn) if self.index._owner_class(fn) else ctx.klass,
                renames=renames,
                depth=ctx.depth + 1,
                stack=ctx.stack + (fn,),
            )
            paths = self._block(fn.body, sub)
            return [Path(p.events) for p in paths]  # a return ends the call, not the loop
        return self._opaque_call(call, ctx, line)

    def _closure_paths(self, arg, key: str, ctx: Ctx, line) -> List[Path]:
        """`opt.step(closure)`: the closure runs inside step (LBFGS); an unknown one may clear."""
        if isinstance(arg, cst.Name):
            fn = self._local_def(arg.value, ctx.scope)
            if fn is not None and fn not in ctx.stack and ctx.depth < MAX_DEPTH:
                sub = ctx.child(scope=fn, depth=ctx.depth + 1, stack=ctx.stack + (fn,), renames=dict(ctx.renames))
                return [Path(p.events) for p in self._block(fn.body, sub)]
        return [Path((self._event("C?", key, arg, ctx, line),))]

    def _opaque_call(self, call: cst.Call, ctx: Ctx, line) -> List[Path]:
        """A call we cannot see into. If it is handed an optimizer, assume it may clear it."""
        q = self.index.callee(call) or ""
        if q.startswith(("torch.", "numpy.", "math.")) or q in _BUILTINS:
            return EMPTY
        events = []
        for arg in call.args:
            v = arg.value
            if isinstance(v, (cst.Name, cst.Attribute)) and is_optimizer(self.index, v, ctx.scope):
                events.append(self._event("C?", self._key(v, ctx), call, ctx, line))
        recv = receiver(call)
        if (
            isinstance(recv, cst.Name)
            and recv.value == "self"
            and ctx.klass is not None
            and _has_foreign_base(ctx.klass)
        ):
            events.append(self._event("C?", "*", call, ctx, line))
        return [Path(tuple(events))] if events else EMPTY

    def _local_def(self, name: str, scope: Scope) -> Optional[cst.FunctionDef]:
        sc = scope
        while True:
            fn = self._local_defs.get(sc, {}).get(name)
            if fn is not None:
                return fn
            if sc is None:
                return None
            sc = self.index.scope.get(sc)

    def _resolve_local_call(self, call: cst.Call, ctx: Ctx):
        func = call.func
        fn = None
        offset = 0
        if isinstance(func, cst.Name):
            fn = self._local_def(func.value, ctx.scope)
        elif (
            isinstance(func, cst.Attribute)
            and isinstance(func.value, cst.Name)
            and func.value.value == "self"
            and ctx.klass is not None
        ):
            fn = self.index.methods.get((ctx.klass.name.value, func.attr.value))
            offset = 1
        if fn is None:
            return None
        renames: Dict[str, str] = {
            pname: self._key(value, ctx) for pname, value in bound_arguments(call, fn, offset).items()
            if isinstance(value, (cst.Name, cst.Attribute, cst.Subscript))
        }
        if offset == 1:
            renames.setdefault("self", "self")
        return fn, renames


_BUILTINS = {"len", "range", "enumerate", "zip", "print", "float", "int", "str", "isinstance", "list",
             "dict", "tuple", "sum", "min", "max", "abs", "iter", "next", "sorted", "round", "getattr",
             "setattr", "hasattr", "super", "format", "repr", "any", "all", "map", "filter", "tqdm"}


def is_periodic_test(test: cst.BaseExpression) -> bool:
    """`step % k == 0`, `(i + 1) % accum_steps == 0`, `accelerator.sync_gradients`, `is_accumulation_step`."""
    from trainlint.analysis.walk import walk

    for node, _ in walk(test):
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Modulo):
            return True
        if isinstance(node, (cst.Name, cst.Attribute)):
            name = node.attr.value if isinstance(node, cst.Attribute) else node.value
            if name == "sync_gradients" or "accum" in name.lower():
                return True
    return False


def _mark_inner(e: Event) -> Event:
    return Event(e.kind, e.key, e.node, e.tags, True, e.depth, e.accumulate, e.stmt)


def _del_targets(node: cst.Del):
    t = node.target
    if isinstance(t, cst.Tuple):
        return [el.value and type("T", (), {"target": el.value})() for el in t.elements]
    return [type("T", (), {"target": t})()]


def _has_foreign_base(klass: cst.ClassDef) -> bool:
    """A class whose base is not nn.Module/object may inherit a method that clears gradients."""
    for base in klass.bases:
        text = base.value
        name = text.attr.value if isinstance(text, cst.Attribute) else getattr(text, "value", "")
        if name not in ("Module", "object", "ABC", "nn.Module"):
            return True
    return False


def training_analysis(index: ModuleIndex) -> TrainingAnalysis:
    return index.cached("training", lambda: TrainingAnalysis(index))
