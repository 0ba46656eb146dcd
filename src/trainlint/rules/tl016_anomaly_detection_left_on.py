"""TL016 anomaly-detection-left-on: autograd anomaly detection switched on unconditionally.

`torch.autograd.set_detect_anomaly(True)`, `with torch.autograd.detect_anomaly():` and Lightning's
`Trainer(detect_anomaly=True)` record a traceback for every autograd node and check every backward
output for NaN: the PyTorch docs call it a debugging tool, and it makes each step 2-3x slower.

Reported when it is turned on with a literal True (or as a context manager / decorator) outside any
`if` (other than `if __name__ == "__main__":`), in a file that is not a test, and not switched off
again later in the same function. A value from a flag (`set_detect_anomaly(args.debug)`) or a call
under `if args.debug:` is the user's choice and left alone.
"""

from __future__ import annotations

import os
import re

import libcst as cst

from trainlint.analysis.index import ModuleIndex, call_arg, method_name
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL016"
PREFILTER = (("anomaly",),)

SETTERS = {"torch.autograd.set_detect_anomaly", "torch.autograd.anomaly_mode.set_detect_anomaly",
           "torch.autograd.grad_mode.set_detect_anomaly"}
_DEBUG_FUNCTION = re.compile(r"anomal|debug|check|nan|diagnos|inspect|verify", re.IGNORECASE)
CONTEXTS = {"torch.autograd.detect_anomaly", "torch.autograd.anomaly_mode.detect_anomaly"}
_TEST_FILE = re.compile(r"(^|[/\\])(tests?|testing)[/\\]|(^|[/\\])test_[^/\\]*\.py$|_test\.py$|conftest\.py$")


def gate(facts: ModuleFacts, options) -> bool:
    """Anomaly detection is switched on or entered, outside a test file."""
    return facts.uses_any(("set_detect_anomaly", "detect_anomaly")) and \
        not _TEST_FILE.search(facts.filename.replace(os.sep, "/"))



def check(ctx: RuleContext) -> None:
    if _TEST_FILE.search(ctx.filename.replace(os.sep, "/")):
        return
    index = ctx.index
    trains = None
    for call in index.calls:
        q = index.callee(call) or ""
        if q in SETTERS or q in CONTEXTS:
            if trains is None:
                trains = _trains(index)
            if not _in_training_context(index, call, trains):
                continue
        if q in SETTERS:
            arg = call_arg(call, "mode", 0)
            if arg is None or not _is_true(arg.value) or _guarded(index, call) or _switched_off_later(index, call):
                continue
            ctx.report(call, f"`{index.code(call.func).strip()}(True)` is left on: anomaly detection makes every "
                       "training step 2-3x slower; remove it or put it behind a debug flag.",
                       fix=_remove_line(ctx, call))
        elif q in CONTEXTS:
            if _guarded(index, call) or not _used_as_context_or_decorator(index, call):
                continue
            ctx.report(call, f"`{index.code(call.func).strip()}()` wraps this code in anomaly detection, which makes "
                       "every step 2-3x slower; remove it or put it behind a debug flag.")
        elif q.rsplit(".", 1)[-1] == "Trainer" and ("lightning" in q or q in ("Trainer", "pl.Trainer", "L.Trainer")):
            arg = call_arg(call, "detect_anomaly")
            if arg is None or not _is_true(arg.value) or _guarded(index, call):
                continue
            ctx.report(arg, "`Trainer(detect_anomaly=True)` runs the whole training under autograd anomaly detection, "
                       "2-3x slower per step; turn it off outside debugging.",
                       fix=ctx.fix("unsafe", "Set detect_anomaly=False", ctx.replace(arg.value, "False")))


def _trains(index: ModuleIndex) -> bool:
    """Does the file train: a backward call, a `.fit(...)`, a Lightning/Hugging Face trainer?"""
    for call in index.calls:
        m = method_name(call)
        if m in ("backward", "manual_backward", "fit") or (index.callee(call) or "").endswith("Trainer"):
            return True
    return False


def _in_training_context(index: ModuleIndex, call: cst.Call, trains: bool) -> bool:
    """At module level (every importer gets it), or in a function of a training file that is not itself
    a debugging helper (`check_nan(...)`, `inner_fn_with_anomaly`)."""
    fn = index.scope.get(call)
    if fn is None:
        return True
    while fn is not None:
        name = getattr(getattr(fn, "name", None), "value", "")
        if _DEBUG_FUNCTION.search(name) or name in ("__enter__", "__exit__"):
            return False
        fn = index.scope.get(fn)
    return trains


def _is_true(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


def _is_main_guard(test) -> bool:
    return isinstance(test, cst.Comparison) and isinstance(test.left, cst.Name) and test.left.value == "__name__"


def _guarded(index: ModuleIndex, node: cst.CSTNode) -> bool:
    """Under an `if` (or a conditional expression) other than the `__main__` guard: a debug switch."""
    child, cur = node, index.parent.get(node)
    while cur is not None:
        if isinstance(cur, cst.If) and child is not cur.test and not _is_main_guard(cur.test):
            return True
        if isinstance(cur, cst.IfExp) and child is not cur.test:
            return True
        child, cur = cur, index.parent.get(cur)
    return False


def _switched_off_later(index: ModuleIndex, call: cst.Call) -> bool:
    """`set_detect_anomaly(True)` ... `set_detect_anomaly(False)` in the same function: a debug window."""
    scope = index.scope.get(call)
    seen = False
    for other in index.calls:
        if other is call:
            seen = True
            continue
        if not seen or index.scope.get(other) is not scope or (index.callee(other) or "") not in SETTERS:
            continue
        arg = call_arg(other, "mode", 0)
        if arg is not None and not _is_true(arg.value):
            return True
    return False


def _used_as_context_or_decorator(index: ModuleIndex, call: cst.Call) -> bool:
    parent = index.parent.get(call)
    return isinstance(parent, (cst.WithItem, cst.Decorator))


def _remove_line(ctx: RuleContext, call: cst.Call):
    index = ctx.index
    expr = index.parent.get(call)
    line = index.parent.get(expr)
    if not (isinstance(expr, cst.Expr) and isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1):
        return None
    block = index.parent.get(line)
    siblings = getattr(block, "body", ())
    if isinstance(block, cst.IndentedBlock) and len(siblings) == 1:
        return None  # the only statement of a block: removing it would leave the block empty
    return ctx.fix("unsafe", "Remove the call (or put it behind a debug flag)", ctx.delete_statement_line(line))
