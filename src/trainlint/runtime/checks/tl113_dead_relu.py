"""TL113 dead-relu: a ReLU layer most of whose units output zero for every sample of the batch, for many
checks in a row, after they were alive: dead units that no gradient can revive.

Each `nn.ReLU` module found in the first steps is watched (`watch_every`: its calls are shown from the
captured module outputs where those are captured, the CPU, else through a forward pre-hook attached for
those steps); every `dead-every` optimizer steps (first call of the module in that step), the number of
its units whose input is > 0 for some
sample (and some position: a unit of a convolution is a channel; its maximum over the batch is > 0) is
counted on the device and read at the flush. Reported when a layer's dead fraction is at least
`dead-fraction` in `dead-checks` consecutive checks, having been below it at the first check.
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, List

import torch

from trainlint.runtime.checks.base import FractionLooks, SustainedFraction, fmt, when


_DIMS = [(), (0,), (0,), (0, 2), (0, 2, 3), (0, 2, 3, 4)]  # by rank: every dimension but the units'


def _alive_counts(maxima: List[Any]) -> List[int]:
    """The number of positive values in each vector: a few kernels per device for all of them (their
    concatenation compared with 0, summed cumulatively, read at each vector's end)."""
    counts = [0] * len(maxima)
    by_device: Dict[Any, List[int]] = {}
    for i, m in enumerate(maxima):
        by_device.setdefault(m.device, []).append(i)
    with torch.no_grad():
        for idx in by_device.values():
            parts = [maxima[i] for i in idx]
            ends = torch.tensor([len(p) for p in parts]).cumsum(0) - 1
            totals = (torch.cat(parts) > 0).cumsum(0)[ends.to(parts[0].device)].cpu().tolist()
            prev = 0
            for i, t in zip(idx, totals):
                counts[i] = int(t) - prev
                prev = int(t)
    return counts


class _State(SustainedFraction):
    __slots__ = ("ref", "name", "cls", "last_step", "units")

    def __init__(self, module) -> None:
        super().__init__()
        self.ref = weakref.ref(module)
        self.name = ""
        self.cls = type(module).__name__
        self.last_step = -1
        self.units = 0


class DeadRelu(FractionLooks):
    code = "TL113"
    watches = (torch.nn.ReLU,)
    watch_every = "dead-every"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.every = int(settings["dead-every"])
        self.fraction = float(settings["dead-fraction"])
        self.needed = int(settings["dead-checks"])
        self.states: Dict[int, _State] = {}
        self.site = None

    def on_module_input(self, module: Any, inputs: Any) -> None:
        step = self.ctx.step
        if step % self.every or not module.training or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        s = self.states.get(id(module))
        if s is None:
            s = self.states[id(module)] = _State(module)
        if s.last_step == step:
            return  # one look per step (a module called several times)
        s.last_step = step
        if not s.name and step >= 2:
            s.name = self.ctx.module_name(module)
        x = inputs[0]
        shape = x.shape
        nd = len(shape)
        if nd < 2 or shape[0] < 2 or not x.is_floating_point():
            return
        if self.site is None:
            self.site = self.ctx.sites.find(1)
        # a unit (a channel of a convolution) is alive when it is > 0 for some sample (and position):
        # its maximum over the batch (and positions) is > 0. One kernel here (on a detached input: no
        # graph); the units are counted at the flush, for every look at once
        dims = _DIMS[nd] if nd < len(_DIMS) else (0,) + tuple(range(2, nd))
        s.units = int(shape[1])
        self.pending.append((s, step, self.ctx.epoch(), x.detach().amax(dim=dims)))

    def fractions(self, pending) -> List[float]:
        maxima = [m.reshape(-1) for _, _, _, m in pending]
        return [1.0 - c / m.numel() for c, m in zip(_alive_counts(maxima), maxima)]

    def diagnostics(self):
        out = []
        for s in self.found():
            m = s.ref()
            if not s.name and m is not None:
                s.name = self.ctx.module_name(m)
            step, epoch, v = s.found
            msg = (f"`{s.name or s.cls}` ({s.cls}): {fmt(100 * v)}% of its {s.units} units output 0 for every "
                   f"sample from {when(step, epoch)} on ({s.found_len} checks in a row, every {self.every} "
                   f"steps; {fmt(100 * (s.first or 0))}% at the first check, up to {fmt(100 * s.peak)}%): dead "
                   f"ReLUs get no gradient and never recover (a learning rate too high, a large negative bias; "
                   f"try a lower learning rate, LeakyReLU/GELU, or a normalisation layer before it)")
            evidence = {"module": s.name or s.cls, "dead_fraction": v, "first_dead_fraction": s.first,
                        "peak_dead_fraction": s.peak, "units": s.units, "consecutive_checks": s.found_len,
                        "threshold": self.fraction}
            out.append(self.diagnostic(msg, self.site or self.ctx.last_loss_site, step, epoch, evidence))
        return out
