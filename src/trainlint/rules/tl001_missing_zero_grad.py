"""TL001 missing-zero-grad: gradients never cleared between optimizer steps, or cleared too late.

PyTorch accumulates into `.grad` on every backward(). Unless something clears the gradients between two
optimizer steps, each step applies the sum of all gradients so far: the effective learning rate grows
every iteration and training diverges or goes NaN. Clearing between backward() and step() is the
opposite bug: step() sees zeros and the model never learns.

The rule reads the paths of every training loop (see `analysis/training.py`) and reports, at the
optimizer's step() call:
  1. the loop steps an optimizer but nothing in the loop clears its gradients;
  2. one branch of an `if` clears and steps while another branch steps without clearing;
  3. `opt.zero_grad()` runs after backward() and before the step() of the same optimizer;
  4. broken gradient accumulation: the step runs only every k-th iteration (`if i % k == 0`) while
     `opt.zero_grad()` runs on every iteration, so each micro-batch's gradients are cleared before a
     step uses them; or, inside `accelerator.accumulate(...)`, a module's `zero_grad()` (which
     Accelerate does not skip, unlike the prepared optimizer's) clears every micro-step.
A path that skips a clear for any other reason (clears and steps under different conditions that are not
periodic) is left alone: the rule cannot tell intent from a bug there.
"""

from __future__ import annotations

import re
from typing import Dict, List, Set

import libcst as cst

from trainlint.analysis.training import Event, LoopFacts, training_analysis
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts
from trainlint.analysis.optim import BACKWARD_METHODS

CODE = "TL001"
# Prefilter: a call of backward (also `manual_backward(`) and of a step.
PREFILTER = (re.compile(r"backward\s*\("), re.compile(r"step\s*\("))


def gate(facts: ModuleFacts, options) -> bool:
    """A backward() and an optimizer step must both be called in this module."""
    return facts.calls_any(BACKWARD_METHODS) and facts.calls_any(("step", "optimizer_step"))


def check(ctx: RuleContext) -> None:
    analysis = training_analysis(ctx.index)
    reported: Set[cst.CSTNode] = set()
    for facts in analysis.loops():
        if not facts.is_training_loop:
            continue
        for key in facts.step_keys():
            _check_optimizer(ctx, facts, key, reported)


def _steps(facts: LoopFacts, key: str) -> List[Event]:
    out: Dict[cst.CSTNode, Event] = {}
    for p in facts.paths:
        for e in p.events:
            if e.kind == "S" and e.key == key and not e.inner:
                out.setdefault(e.node, e)
    return list(out.values())


def _check_optimizer(ctx: RuleContext, facts: LoopFacts, key: str, reported: Set[cst.CSTNode]) -> None:
    _check_accumulation(ctx, facts, key, reported)
    steps = [e for e in _steps(facts, key) if not e.accumulate]
    if not steps:
        return
    any_clear = any(e.clears(key) for e in facts.events)
    if not any_clear:
        for s in steps:
            if s.node in reported:
                continue
            reported.add(s.node)
            ctx.report(
                s.node,
                f"`{_text(ctx, s)}` runs in a training loop{_via(ctx, facts, s)} that never clears `{key}`'s "
                "gradients, so each step applies the sum of all gradients so far",
                fix=_insert_fix(ctx, facts, key),
            )
        return

    # 2. A branch steps without clearing while its sibling branch clears.
    for p in facts.paths:
        if p.exit in ("break", "return"):
            continue
        if any(e.clears(key) for e in p.events):
            continue
        for e in p.events:
            if e.kind != "S" or e.key != key or e.inner or e.accumulate or e.node in reported:
                continue
            for tag in e.tags:
                if _sibling_must_clear(facts, tag, key):
                    reported.add(e.node)
                    ctx.report(
                        e.node,
                        f"`{_text(ctx, e)}` can run without `{key}`'s gradients having been cleared: another "
                        "branch clears them but this one does not, so gradients pile up across the iterations "
                        "that take it",
                        fix=_insert_fix(ctx, facts, key),
                    )
                    break

    # 3. Cleared between backward() and step().
    for p in facts.paths:
        ev = p.events + p.events
        for i, c in enumerate(ev):
            if c.kind != "C" or c.key != key or c.inner:
                continue
            before = ev[:i]
            if not any(b.kind == "B" for b in before):
                continue
            for s in ev[i + 1:]:
                if s.kind == "B":
                    break
                if s.kind == "S" and s.key == key and not s.inner and s.tags == c.tags and s.node not in reported:
                    backward = next(b for b in reversed(before) if b.kind == "B")
                    reported.add(s.node)
                    ctx.report(
                        s.node,
                        f"`{key}.zero_grad()` runs after backward() and before `{key}.step()`, so the step sees "
                        "zeroed gradients and the model does not learn",
                        fix=_move_fix(ctx, c, backward, key),
                    )
                    break


def _check_accumulation(ctx: RuleContext, facts: LoopFacts, key: str, reported: Set[cst.CSTNode]) -> None:
    """4. Gradient accumulation whose micro-batch gradients are cleared before the step."""
    events = [e for e in facts.events if not e.inner]
    every_time = [e for e in events if e.kind == "C" and e.key == key and not e.tags and not e.accumulate]
    for s in _steps(facts, key):
        if s.node in reported:
            continue
        if s.accumulate:  # Accelerate skips the prepared optimizer's step and zero_grad off sync steps
            module_clears = [e for e in events if e.kind == "C*" and e.accumulate and e.tags <= s.tags
                             and isinstance(e.node, cst.Call)]
            if module_clears and any(b.kind == "B" and b.accumulate for b in events):
                c = module_clears[0]
                reported.add(s.node)
                ctx.report(
                    s.node,
                    f"`{_text(ctx, c)}` clears gradients on every micro-step of `accelerator.accumulate(...)` "
                    f"(only the optimizer's zero_grad() is skipped there), so `{_text(ctx, s)}` sees the last "
                    "micro-batch only",
                )
            continue
        test = facts.periodic_condition(s)
        if test is None or not every_time:
            continue
        tag = next(t for t in s.tags if facts.conditions.get(t[0]) is test)
        if not _micro_batch_between(facts, s, key, tag):
            continue  # the backward that feeds this step runs under its condition: no micro-batches
        c = every_time[0]
        reported.add(s.node)
        ctx.report(
            s.node,
            f"`{_text(ctx, s)}` runs only when `{ctx.index.code(test).strip()}` but `{_text(ctx, c)}` (line "
            f"{ctx.range(c.node)[0].row}) runs on every iteration, so the step sees the last micro-batch only",
        )


def _micro_batch_between(facts: LoopFacts, s: Event, key: str, tag) -> bool:
    """Is there, on some path, a backward outside the step's periodic condition between the last clear of
    `key` and the step (around the loop: a clear after the step counts for the next iteration)? A GAN's
    `opt_G.zero_grad(); if i % n_critic == 0: g_loss.backward(); opt_G.step()` has none: the
    discriminator's backward comes before the clear."""
    for p in facts.paths:
        ev = [e for e in p.events if not e.inner]
        if not any(e.node is s.node for e in ev):
            continue
        twice = ev + ev
        for j, e in enumerate(twice):
            if j < len(ev) or e.node is not s.node:
                continue
            window = []
            for b in reversed(twice[:j]):
                if b.kind == "C" and b.key == key:
                    break
                window.append(b)
            else:
                continue  # no clear of this optimizer on the way back
            if any(b.kind == "B" and tag not in b.tags for b in window):
                return True
    return False


def _text(ctx: RuleContext, e: Event) -> str:
    return ctx.index.code(e.node).strip()


def _via(ctx: RuleContext, facts: LoopFacts, e: Event) -> str:
    if e.depth == 0:
        return ""
    return f" (line {ctx.range(facts.loop)[0].row}, through a call)"


def _sibling_must_clear(facts: LoopFacts, tag, key: str) -> bool:
    """Does another branch of the same `if` clear `key` explicitly on every path? (An opaque call that
    is given the optimizer may clear, but is no evidence that this branch was meant to.)"""
    node_id, branch = tag
    for (nid, b), paths in facts.branches.items():
        if nid == node_id and b != branch and paths and all(
            any(e.clears(key, explicit=True) for e in p.events) for p in paths
        ):
            return True
    return False


def _bound_in(body: cst.CSTNode, key: str) -> bool:
    """Is the optimizer (its root name, or the attribute itself) assigned inside the loop body?"""
    from trainlint.analysis.walk import walk

    root = key.split(".")[0]
    for node, _ in walk(body):
        targets = []
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (cst.For, cst.CompFor)):
            targets = [node.target]
        elif isinstance(node, cst.AsName):
            targets = [node.name]
        for t in targets:
            for sub, _ in walk(t):
                if isinstance(sub, cst.Name) and sub.value == root and "." not in key:
                    return True
                if isinstance(sub, cst.Attribute) and sub.attr.value == key.rsplit(".", 1)[-1]:
                    return True
    return False


def _insert_fix(ctx: RuleContext, facts: LoopFacts, key: str):
    body = facts.loop.body
    if not isinstance(body, cst.IndentedBlock) or not body.body:
        return None
    if _bound_in(body, key):
        return None  # the optimizer is created in the loop: clearing at the top would use it too early
    first = body.body[0]
    return ctx.fix(
        "unsafe",
        f"Insert `{key}.zero_grad()` at the start of the loop body",
        ctx.insert_before_statement(first, f"{key}.zero_grad()"),
    )


def _move_fix(ctx: RuleContext, clear: Event, backward: Event, key: str):
    line, bline = clear.stmt, backward.stmt
    if (
        line is None
        or bline is None
        or not isinstance(line, cst.SimpleStatementLine)
        or not isinstance(bline, cst.SimpleStatementLine)
        or len(line.body) != 1
        or ctx.index.parent.get(line) is not ctx.index.parent.get(bline)
    ):
        return None
    text = ctx.index.code(line.body[0]).strip()
    return ctx.fix(
        "unsafe",
        f"Move `{text}` to just before the backward() call",
        ctx.insert_before_statement(bline, text),
        ctx.delete_statement_line(line),
    )
