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

import re

import libcst as cst

from trainlint.analysis.filekind import is_test_file
from trainlint.analysis.graph import only_runs_without_grad
from trainlint.analysis.index import call_arg
from trainlint.analysis.stats import centred, guarded, only_in_correlation, std_source
from trainlint.context import RuleContext
from trainlint.diagnostics import Edit

CODE = "TL009"
PREFILTER = (("std(", "var(", "seterr", "reduce_std", "reduce_variance"),)

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
