"""TL009 unguarded-normalisation: division by a data-derived std with no eps; NumPy float errors silenced.

`(x - x.mean()) / x.std()` is 0/0 = NaN as soon as the data has no spread: a constant feature column,
a silent audio clip, a blank image, a batch of identical advantages. One NaN input makes the loss NaN.
`std + eps` (or a clamp) costs nothing. `np.seterr(divide="ignore", invalid="ignore")` switches off the
warnings that would have pointed at it, for the whole process. Both appear together in the Chinese NaN
field report (`nan-loss-causes-zh`).

The std comes from `analysis.stats`: a `.std()`/`np.std`/`torch.std`/`sqrt(var)` call, written in the
division or reaching it through a local name (or a `self.x` bound once), and not repaired in place
(`std[std == 0] = 1`, `std.clamp_(...)`, a comparison of it with anything). A standardised value used
only inside a correlation statistic (`mean(zx * zy)`, every use a product with another standardised
value, averaged or summed) is not a normalisation: a correlation of a constant series is undefined, and
NaN is its defined value (scipy and numpy agree). Code that only runs without
autograd (under `torch.no_grad()`, or called only from a `@torch.no_grad()` function such as a diffusion
pipeline's `__call__`) is inference and left alone.
"""

from __future__ import annotations

import ast
import re

import libcst as cst

from trainlint.analysis.filekind import is_test_file
from trainlint.analysis.graph import only_runs_without_grad
from trainlint.analysis.index import call_arg
from trainlint.analysis.stats import centred, guarded, only_in_correlation, std_source
from trainlint.context import RuleContext
from trainlint.diagnostics import Edit
from trainlint.analysis.gate import ModuleFacts, leaf
from trainlint.analysis.stats import STD_FUNCTIONS, VAR_FUNCTIONS

CODE = "TL009"
PREFILTER = (("std(", "var(", "seterr", "reduce_std", "reduce_variance"),)


def prefilter(text: str, options) -> bool:
    """A division for the std to be a denominator of, unless NumPy's error modes are switched."""
    return "/" in text or "seterr" in text


def gate(facts: ModuleFacts, options) -> bool:
    """A division by what may be a standard deviation (`x.std()`, `np.std(x)`, `sqrt` of a variance, a
    name holding one), or NumPy's error modes switched."""
    if facts.calls_any(("seterr",)):
        return True
    if not facts.calls_any(_STATS):
        return False
    return any(facts.may_be(den, _std_like, scope, names_only=True) for _, den, _, scope in facts.divisions)


_STATS = STD_FUNCTIONS | VAR_FUNCTIONS


def _std_like(expr) -> bool:
    """The shapes `std_source` reads: a std call, `sqrt` of a variance call, `var(...) ** 0.5`."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Pow):
        return _call_of(expr.left, VAR_FUNCTIONS)
    if not isinstance(expr, ast.Call):
        return False
    if leaf(expr.func) == "sqrt":
        inner = expr.args[0] if expr.args else (expr.func.value if isinstance(expr.func, ast.Attribute) else None)
        return _call_of(inner, VAR_FUNCTIONS)
    return _call_of(expr, STD_FUNCTIONS)


def _call_of(expr, names) -> bool:
    return isinstance(expr, ast.Call) and leaf(expr.func) in names

EPS = "1e-8"
_RANDOM = re.compile(r"latent|noise", re.IGNORECASE)


def check(ctx: RuleContext) -> None:
    if is_test_file(ctx.filename):
        return  # unit tests compute reference values on purpose (`expected = (x - x.mean()) / x.std()`) and
        # switch NumPy's error modes on purpose; no training runs there
    index = ctx.index
    for div in index.divisions:
        den = div.right if isinstance(div, cst.BinaryOperation) else div.value  # AugAssign `x /= std`
        num = div.left if isinstance(div, cst.BinaryOperation) else div.target
        if not centred(index, num):
            continue  # `w / w.std()` rescales (random init, weight standardisation), it does not normalise data
        src = std_source(index, den)
        if src is None:
            continue
        if _RANDOM.search(index.code(src)) or _RANDOM.search(index.code(num)):
            continue  # re-standardising Gaussian latents or noise: never constant
        if isinstance(den, (cst.Name, cst.Attribute)) and guarded(index, den):
            continue
        if only_in_correlation(index, div):
            continue  # mean(zx * zy): a correlation coefficient, undefined (NaN) for a constant series by definition
        if only_runs_without_grad(index, div):
            continue  # inference code (a pipeline's `@torch.no_grad()` call): no training NaN to prevent
        what = index.code(den).strip()
        if len(what) > 40:
            what = "this standard deviation"
        else:
            what = f"`{what}`"
        start, end = ctx.range(den)
        fix = ctx.fix("unsafe", f"Divide by `(... + {EPS})`", Edit("(", start, start), Edit(f" + {EPS})", end, end))
        ctx.report(div, f"Dividing by {what}, a standard deviation of the data with no eps, gives NaN when the "
                        f"data is constant; add an eps (`+ {EPS}`) or clamp it", fix=fix)
    for call in index.calls:
        q = index.callee(call) or ""
        if q not in ("numpy.seterr", "np.seterr") or _scoped(index, call):
            continue
        silenced = [a for a in ("all", "divide", "invalid") if _ignores(call_arg(call, a, 0 if a == "all" else None))]
        if silenced:
            ctx.report(call, f"`np.seterr({silenced[0]}='ignore')` hides every later division by zero and NaN in "
                             "this process; use `with np.errstate(...)` around the one computation that needs it",
                       severity="warning")


def _ignores(arg) -> bool:
    return arg is not None and isinstance(arg.value, cst.SimpleString) and arg.value.evaluated_value == "ignore"


def _scoped(index, call: cst.Call) -> bool:
    """A `seterr` whose effect is undone: inside `with np.errstate():`, its old settings kept
    (`old = np.seterr(...)`, restored later), or a restoring call `np.seterr(**old)` in the module."""
    p = index.parent.get(call)
    if not isinstance(p, cst.Expr):
        return True  # the previous settings are kept: a save/restore pattern
    node = p
    while node is not None:
        if isinstance(node, cst.With) and any(
                isinstance(item.item, cst.Call) and (index.callee(item.item) or "").endswith("errstate")
                for item in node.items):
            return True
        node = index.parent.get(node)
    return any((index.callee(c) or "") in ("numpy.seterr", "np.seterr") and any(a.star == "**" for a in c.args)
               for c in index.calls)
