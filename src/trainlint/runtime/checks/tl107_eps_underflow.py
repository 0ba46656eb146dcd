"""TL107 eps-underflow: an adaptive optimizer whose eps is 0 in the dtype of its parameters/state
(fp16 with the default eps=1e-8: the update divides by sqrt(v) + 0)."""

from __future__ import annotations

from typing import Any, List, Set, Tuple

import torch

from trainlint.runtime.checks.base import Check, fmt


def _eps_values(eps: Any) -> List[float]:
    vals = eps if isinstance(eps, (tuple, list)) else (eps,)
    return [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]


def rounds_to_zero(value: float, dtype: torch.dtype) -> bool:
    """Host-only: does `value` become 0 when stored in `dtype`?"""
    return float(torch.tensor(value, dtype=dtype)) == 0.0


def smallest_positive(dtype: torch.dtype) -> float:
    fi = torch.finfo(dtype)
    return fi.tiny * fi.eps  # the smallest subnormal


class EpsUnderflow(Check):
    code = "TL107"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.found: List[Tuple[Any, int, float, torch.dtype, int, int, Any]] = []

    def on_optimizer(self, opt) -> None:
        o = opt.opt
        if o is None:
            return
        seen: Set[Tuple[int, float, torch.dtype]] = set()
        for gi, group in enumerate(o.param_groups):
            values = _eps_values(group.get("eps"))
            if not values:
                continue
            dtypes = {}
            for p in group["params"]:
                if p.is_floating_point():
                    dtypes[p.dtype] = dtypes.get(p.dtype, 0) + 1
                for v in o.state.get(p, {}).values():
                    if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
                        dtypes.setdefault(v.dtype, 0)
            for eps in values:
                for dt, n in dtypes.items():
                    if (gi, eps, dt) not in seen and rounds_to_zero(eps, dt):
                        seen.add((gi, eps, dt))
                        self.found.append((opt, gi, eps, dt, n, len(o.param_groups), self.ctx.epoch()))

    def diagnostics(self):
        out = []
        for opt, gi, eps, dt, n, ngroups, epoch in self.found:
            dname = str(dt).replace("torch.", "")
            group = f" (param group {gi})" if ngroups > 1 else ""
            msg = (f"{opt.title} eps={eps:g} is 0 in {dname}{group}, the dtype of {n} of its parameters and its "
                   f"state (the smallest positive {dname} is {fmt(smallest_positive(dt))}): the update divides "
                   f"by sqrt(v) + 0, and v underflows to 0 for small gradients, so the step becomes Inf/NaN; "
                   f"keep fp32 master weights (autocast + GradScaler) or use an eps {dname} can hold (e.g. 1e-4)")
            evidence = {"optimizer": opt.label, "eps": eps, "dtype": dname, "eps_in_dtype": 0.0,
                        "smallest_positive": smallest_positive(dt), "parameters": n, "param_group": gi}
            out.append(self.diagnostic(msg, opt.site, 0, epoch, evidence))
        return out


