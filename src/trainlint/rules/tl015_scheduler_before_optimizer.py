"""TL015 scheduler-before-optimizer: `scheduler.step()` runs before `optimizer.step()` in one iteration.

Since PyTorch 1.1 a scheduler's step() is meant to follow the optimizer's: stepping it first moves to
the schedule's second value before the first optimizer step has used the first one, so the whole
schedule is shifted by one (MultiStepLR milestones come an epoch early, warmup skips its first value).
PyTorch only warns at run time, and the warning is often misread.

For every loop, the calls of one iteration (`analysis/sequence.py`, through same-module functions) are
read in order: an argument-less `sched.step()` of a torch-style scheduler, with no step of its
optimizer earlier in the iteration and one later (not in an exclusive branch), is reported. A step
guarded by a condition on the loop variable (`if epoch > 0: scheduler.step()`) is left alone.
"""

from __future__ import annotations

import re
from typing import Optional, Set

import libcst as cst

from trainlint.analysis.index import method_name, receiver
from trainlint.analysis.schedulers import (is_scheduler, is_torch_style_scheduler, scheduler_optimizer,
                                           standard_scheduler, stepped_optimizer)
from trainlint.analysis.sequence import Site, sequences
from trainlint.analysis.walk import walk
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL015"
# a known scheduler constructor (lr_scheduler, get_*schedule*) and an argument-less step()
PREFILTER = (("schedul",), re.compile(r"\.step\s*\(\s*\)"))


def gate(facts: ModuleFacts, options) -> bool:
    """A loop that calls `step()`, maybe through a function of this module."""
    return facts.calls_any(("step",)) and facts.loop_calls_local_or(("step",))



def check(ctx: RuleContext) -> None:
    index = ctx.index
    seqs = sequences(index)
    reported: Set[cst.CSTNode] = set()
    for loop in reversed(index.loops):  # inner loops first: the fix moves a line within its own loop
        sites = seqs.iteration(loop)
        if not sites:
            continue
        opt_steps = []
        for s in sites:
            opt = stepped_optimizer(index, s.call, s.scope)
            if opt is not None:
                opt_steps.append((s, s.text(index, opt)))
        if not opt_steps:
            continue
        order = {id(s): i for i, s in enumerate(sites)}
        for s in sites:
            if s.call in reported or method_name(s.call) != "step" or s.call.args:
                continue
            sched = receiver(s.call)
            if sched is None or not is_scheduler(index, sched, s.scope) \
                    or not is_torch_style_scheduler(index, sched, s.scope) \
                    or not standard_scheduler(index, sched, s.scope):
                continue
            if _guarded_by_loop_variable(index, s, loop) or _loop_target(index, sched, s.call):
                continue
            wanted = scheduler_optimizer(index, sched, s.scope)
            wanted_text = index.code(wanted).strip() if wanted is not None else None
            mine = [(o, key) for o, key in opt_steps if _same(wanted_text, key) and not o.excludes(s)]
            before = [o for o, _ in mine if order[id(o)] < order[id(s)]]
            after = [(o, key) for o, key in mine if order[id(o)] > order[id(s)]]
            if before or not after:
                continue
            opt_site, key = after[0]
            reported.add(s.call)
            sched_text = index.code(s.call.func).strip()
            ctx.report(
                s.call,
                f"`{sched_text}()` runs before `{key}.step()` in the same iteration, so the schedule skips its "
                "first value; call it after the optimizer step.",
                fix=_fix(ctx, s, opt_site, loop),
            )


def _same(wanted: Optional[str], key: str) -> bool:
    if wanted is None:
        return True
    if wanted == key:
        return True
    return wanted.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]


def _guarded_by_loop_variable(index, site: Site, loop) -> bool:
    """`if epoch > 0: scheduler.step()`: stepped only from the second iteration on, after a step."""
    names = set()
    if isinstance(loop, cst.For):
        names = {n.value for n, _ in walk(loop.target) if isinstance(n, cst.Name)}
    node = index.parent.get(site.call)
    while node is not None and node is not loop:
        if isinstance(node, cst.If):
            if not names or any(isinstance(n, cst.Name) and n.value in names for n, _ in walk(node.test)):
                return True
        node = index.parent.get(node)
    return False


def _loop_target(index, expr, node) -> bool:
    """`for scheduler in schedulers: scheduler.step()`: a list of schedulers of unknown kinds (tests)."""
    if not isinstance(expr, cst.Name):
        return False
    cur = index.parent.get(node)
    while cur is not None:
        if isinstance(cur, cst.For) and any(isinstance(n, cst.Name) and n.value == expr.value
                                            for n, _ in walk(cur.target)):
            return True
        cur = index.parent.get(cur)
    return False


def _fix(ctx: RuleContext, sched: Site, opt: Site, loop):
    """Move the scheduler's line to just after the statement of the loop body that steps the optimizer."""
    index = ctx.index
    line = index.parent.get(index.parent.get(sched.call))
    if sched.depth != 0 or not isinstance(line, cst.SimpleStatementLine) or len(line.body) != 1 \
            or not isinstance(line.body[0], cst.Expr) or line.body[0].value is not sched.call:
        return None
    body = loop.body
    if not isinstance(body, cst.IndentedBlock) or sched.top is not line or opt.top not in body.body:
        return None
    stmts = list(body.body)
    target = stmts.index(opt.top)
    if target <= stmts.index(line):
        return None
    text = index.code(line.body[0]).strip()
    if target + 1 < len(stmts):
        insert = ctx.insert_before_statement(stmts[target + 1], text)
    else:
        _, end = ctx.range(opt.top)
        row_text = ctx.lines.line(end.row).rstrip("\r\n")
        from trainlint.diagnostics import Edit, Location

        at = Location(end.row, len(row_text) + 1)
        insert = Edit(f"\n{ctx.indent_of(opt.top)}{text}", at, at)
    return ctx.fix("unsafe", f"Move `{text}` after the optimizer step", ctx.delete_statement_line(line), insert)
