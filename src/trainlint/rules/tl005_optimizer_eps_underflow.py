"""TL005 optimizer-eps-underflow: an adaptive optimizer on fp16 parameters whose eps rounds to 0 in fp16.

fp16's smallest positive (subnormal) value is about 6e-8, so Adam's default eps=1e-8 is 0 in fp16. When
parameters and optimizer state are fp16, `sqrt(v) + eps` can be exactly 0 and the update is Inf/NaN.

The rule finds Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta and SparseAdam built on the
parameters of a model that the module casts to float16 (`.half()`, `.to(torch.float16)`,
`from_pretrained(torch_dtype=torch.float16)`, `torch.set_default_dtype(torch.float16)`), with no eps (a
default below 6e-8) or an explicit literal below 6e-8. Silent on AMP (autocast + GradScaler keeps fp32
parameters), bf16, fp32 master weights, eps >= 6e-8, and non-adaptive optimizers.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import call_arg
from trainlint.analysis.optim import ADAPTIVE_OPTIMIZERS
from trainlint.analysis.precision import fabric_half_precision, model_dtype, params_model, set_up_by_fabric
from trainlint.context import RuleContext
from trainlint.analysis.gate import ModuleFacts

CODE = "TL005"
PREFILTER = (("Adam", "RMSprop", "Adagrad", "Adadelta", "NAdam", "RAdam", "Adamax"),)


def gate(facts: ModuleFacts, options) -> bool:
    """An adaptive optimizer is built: a call of one (any import spelling)."""
    return facts.calls_any(ADAPTIVE_OPTIMIZERS)


FP16_MIN = 5.96e-8  # smallest positive fp16 (subnormal); anything below rounds to 0
FIXED_EPS = "1e-4"
# (position of eps counting `params` as 0, default eps)
SIGNATURES = {
    "Adam": (3, 1e-8), "AdamW": (3, 1e-8), "Adamax": (3, 1e-8), "NAdam": (3, 1e-8), "RAdam": (3, 1e-8),
    "SparseAdam": (3, 1e-8), "RMSprop": (3, 1e-8), "Adagrad": (5, 1e-10), "Adadelta": (3, 1e-6),
}


def check(ctx: RuleContext) -> None:
    index = ctx.index
    require_explicit = ctx.option("require-explicit-eps", False)
    for call in index.calls:
        q = index.callee(call) or ""
        last = q.rsplit(".", 1)[-1]
        if last not in ADAPTIVE_OPTIMIZERS or not (q.startswith("torch.optim.") or q == last and _torch_import(index, last)):
            continue
        if any(a.star for a in call.args):
            continue
        pos, default = SIGNATURES[last]
        eps_arg = call_arg(call, "eps", pos)
        eps = default if eps_arg is None else number_value(eps_arg.value)
        params = call_arg(call, "params", 0)
        scope = index.scope.get(call)
        model = params_model(index, params.value, scope) if params is not None else None
        fp16 = model is not None and model_dtype(index, model, scope) == "fp16"
        fabric = fabric_half_precision(index) if not fp16 and set_up_by_fabric(index, call) else []
        if fabric and eps is not None and eps < FP16_MIN:
            what = f"eps={eps_arg and index.code(eps_arg.value).strip()}" if eps_arg else f"the default eps={default:g}"
            fcall, prec = fabric[0]
            ctx.report(
                call,
                f"`{last}` keeps {what}, which is 0 in float16, and Fabric (line {ctx.range(fcall)[0].row}) can "
                f"make the parameters float16 (precision=\"{prec}\"), so updates can become Inf/NaN",
                fix=_fix(ctx, call, eps_arg, FIXED_EPS, "unsafe",
                         "Set eps=1e-4 (also changes the updates when the run is not float16)"),
                severity="warning",
            )
            continue
        if fp16 and eps is not None and eps < FP16_MIN:
            what = f"eps={eps_arg and index.code(eps_arg.value).strip()}" if eps_arg else f"the default eps={default:g}"
            ctx.report(
                call,
                f"`{last}` updates the float16 parameters of `{model}` with {what}, which is 0 in float16, so "
                "updates can become Inf/NaN",
                fix=_fix(ctx, call, eps_arg, FIXED_EPS, "safe",
                         "Set eps=1e-4 (the default is not representable in float16)"),
            )
        elif require_explicit and eps_arg is None:
            ctx.report(
                call,
                f"`{last}` relies on its default eps={default:g}; this project asks for an explicit eps "
                "(1e-8 underflows to 0 if the parameters ever become float16)",
                severity="warning",
                fix=_fix(ctx, call, None, f"{default:g}", "safe", f"Pass the default eps={default:g} explicitly"),
            )


def _torch_import(index, name: str) -> bool:
    return index.imports.aliases.get(name, "").startswith("torch.optim") or any(
        m.startswith("torch.optim") for m in index.imports.star_modules
    )


def _fix(ctx: RuleContext, call: cst.Call, eps_arg: Optional[cst.Arg], value: str, applicability: str, msg: str):
    if eps_arg is not None:
        return ctx.fix(applicability, msg, ctx.replace(eps_arg.value, value))
    edit = ctx.insert_after_last_arg(call, f", eps={value}")
    return ctx.fix(applicability, msg, edit) if edit else None
