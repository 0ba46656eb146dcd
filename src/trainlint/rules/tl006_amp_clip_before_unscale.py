"""TL006 amp-clip-before-unscale: gradients clipped (or their norm read) while still scaled by GradScaler.

After `scaler.scale(loss).backward()` every gradient is multiplied by the loss scale (65536 at the
start, then whatever the scaler settles on). `clip_grad_norm_(params, 1.0)` on those gradients compares
a norm thousands of times too large with max_norm, so it shrinks every step's gradient to a tiny
fraction of what was meant (or, with clip_grad_value_, clips everything), and a logged norm is off by
the scale. `scaler.unscale_(optimizer)` before the clip divides the scale out; `scaler.step` then knows
not to do it again. Lightning P0 #9599, pytorch/examples #1196, waifu-diffusion #64, TorchSSL #59.

The rule reads the GradScaler phases of each function from `analysis.amp`: a CLIP (or, as a warning, a
NORM_READ) after a scaled backward and before the same scaler's `step`, with no `unscale_` of that
scaler between the backward and the clip, and not in the other branch of an `if` from either.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.amp import (CLIP, NORM_READ, SCALED_BACKWARD, STEP, UNSCALE, ScalerEvent, exclusive,
                                    inside, innermost_loop, scaled_scopes, scaler_events)
from trainlint.analysis.reaching import statement_of
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL006"
PREFILTER = (("scale(",), ("clip_grad", "norm(", "clip_grads", "grad.norm", "norm_"))


def gate(facts: ModuleFacts, options) -> bool:
    """A scaled backward: `scale(...)` and `backward()` are both called."""
    return facts.calls_any(("scale",)) and facts.calls_any(("backward",))


def check(ctx: RuleContext) -> None:
    index = ctx.index
    for scope in scaled_scopes(index):
        events = scaler_events(index, scope)
        fixed_steps = set()
        for i, ev in enumerate(events):
            if ev.kind not in (CLIP, NORM_READ):
                continue
            backward = _before(index, events, i)
            if backward is None:
                continue
            step = _after(index, events, i, backward.scaler)
            if step is None:
                continue
            what = _what(index, ev)
            if ev.kind == CLIP:
                fix = None
                if id(step.node) not in fixed_steps:
                    fix = _fix(ctx, events, i, backward, step)
                    fixed_steps.add(id(step.node))
                opt = index.code(step.optimizer).strip() if step.optimizer is not None else "optimizer"
                ctx.report(ev.node,
                           f"{what} runs on gradients still multiplied by the loss scale of `{backward.scaler}`, so "
                           f"the clipping threshold is meaningless; call `{backward.scaler}.unscale_({opt})` "
                           "before it",
                           fix=fix)
            else:
                ctx.report(ev.node,
                           f"This gradient norm is read before `{backward.scaler}.unscale_(...)`, so it is "
                           "multiplied by the loss scale; unscale first",
                           severity="warning")


def _what(index, ev: ScalerEvent) -> str:
    if ev.via:
        return f"`{ev.via}` (which clips gradients)"
    name = (index.callee(ev.node) or "").rsplit(".", 1)[-1] or "This clipping"
    return f"`{name}`"


def _before(index, events, i) -> Optional[ScalerEvent]:
    """The scaled backward that precedes event i (same pass), with no unscale_ of its scaler after it."""
    ev = events[i]
    for j in range(i - 1, -1, -1):
        e = events[j]
        if exclusive(index, e.node, ev.node):
            continue
        if e.kind == UNSCALE:
            return None  # any unscale_ in between (even a conditional one): trust it
        if e.kind == STEP:
            return None  # a step in between closes the previous window
        if e.kind == SCALED_BACKWARD:
            if any(x.kind == UNSCALE and x.scaler == e.scaler for x in events[j + 1:i]):
                return None
            return e
    return None


def _after(index, events, i, scaler: str) -> Optional[ScalerEvent]:
    ev = events[i]
    for e in events[i + 1:]:
        if e.kind == STEP and e.scaler == scaler and not exclusive(index, e.node, ev.node):
            return e
        if e.kind == SCALED_BACKWARD and not exclusive(index, e.node, ev.node):
            return None
    return None


def _fix(ctx: RuleContext, events, i, backward: ScalerEvent, step: ScalerEvent):
    """Insert `scaler.unscale_(opt)` on its own line before the clip, when that runs once per step: the
    clip's line is directly in a block, in the same loop as the backward and the step, and no unscale_
    follows before the step (a second unscale_ in one step raises)."""
    index = ctx.index
    clip = events[i]
    k = events.index(step)
    if any(e.kind == UNSCALE for e in events[i + 1:k]):
        return None
    if step.optimizer is None or not isinstance(step.optimizer, (cst.Name, cst.Attribute)):
        return None
    stmt = statement_of(index, clip.node)
    if not isinstance(stmt, cst.SimpleStatementLine) or not isinstance(index.parent.get(stmt), cst.IndentedBlock):
        return None
    loop = innermost_loop(index, clip.node)
    if not (inside(index, backward.node, loop) and inside(index, step.node, loop)):
        return None
    opt = index.code(step.optimizer).strip()
    line = f"{step.scaler}.unscale_({opt})"
    return ctx.fix("unsafe", f"Insert `{line}` before the clipping", ctx.insert_before_statement(stmt, line))
