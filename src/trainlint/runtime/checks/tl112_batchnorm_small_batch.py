"""TL112 batchnorm-small-batch: a BatchNorm layer in training mode fed batches too small for its
statistics: fewer than `bn-min-batch` samples in at least half of its calls, or a single value per
channel (which raises "Expected more than 1 value per channel when training").

BatchNorm modules are found in the first steps; each gets a forward pre-hook that reads only the input's
shape (no device access).
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, Optional, Tuple

import torch

from trainlint.runtime.checks.base import Check, when


class _State:
    __slots__ = ("calls", "small", "first", "single", "min_n", "name", "cls", "ref")

    def __init__(self) -> None:
        self.calls = 0
        self.small = 0
        self.first: Optional[Tuple[int, Optional[int], int]] = None  # (step, epoch, batch size)
        self.single: Optional[Tuple[int, Optional[int], Tuple[int, ...]]] = None
        self.min_n = 1 << 30
        self.name = ""
        self.cls = ""
        self.ref: Any = None


class BatchNormSmallBatch(Check):
    code = "TL112"
    watches = (torch.nn.modules.batchnorm._BatchNorm,)

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.min_batch = int(settings["bn-min-batch"])
        self.states: Dict[int, _State] = {}
        self.site = None

    def on_module_input(self, module: Any, inputs: Any) -> None:
        if not module.training or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        x = inputs[0]
        if x.dim() < 2:
            return
        s = self.states.get(id(module))
        if s is None:
            s = self.states[id(module)] = _State()
            s.cls, s.ref = type(module).__name__, weakref.ref(module)
        s.calls += 1
        if not s.name and self.ctx.step >= 2:
            s.name = self.ctx.module_name(module)  # the model's names are built by the second step
        n = int(x.shape[0])
        per_channel = x.numel() // max(1, int(x.shape[1]))
        s.min_n = min(s.min_n, n)
        step, epoch = self.ctx.step, self.ctx.epoch()
        if per_channel <= 1 and s.single is None:
            s.single = (step, epoch, tuple(x.shape))
            if self.site is None:
                self.site = self.ctx.sites.find(1)
        if n < self.min_batch:
            s.small += 1
            if s.first is None:
                s.first = (step, epoch, n)
                if self.site is None:
                    self.site = self.ctx.sites.find(1)

    def finish(self) -> None:
        self._names()

    def _names(self) -> None:
        for s in self.states.values():
            m = s.ref() if s.ref is not None else None
            if not s.name and m is not None:
                s.name = self.ctx.module_name(m)
            s.name = s.name or s.cls

    def diagnostics(self):
        self._names()
        out = []
        for s in self.states.values():
            site = self.site or self.ctx.last_loss_site
            if s.single is not None:
                step, epoch, shape = s.single
                msg = (f"`{s.name}` ({s.cls}) in training mode got a batch with one value per channel (input "
                       f"shape {list(shape)}) at {when(step, epoch)}: BatchNorm cannot compute a variance from "
                       f"it and raises; drop the last short batch (`drop_last=True`, see TL004) or use eval "
                       f"mode / GroupNorm for batches of one")
                evidence = {"module": s.name, "module_type": s.cls, "shape": list(shape), "kind": "single-value"}
                out.append(self.diagnostic(msg, site, step, epoch, evidence))
            elif s.first is not None and s.small * 2 >= s.calls:
                step, epoch, n = s.first
                msg = (f"`{s.name}` ({s.cls}) in training mode sees batches of fewer than {self.min_batch} "
                       f"samples in {s.small} of its {s.calls} calls (the first at {when(step, epoch)}: {n} "
                       f"sample{'s' if n != 1 else ''}): its batch statistics are too noisy to normalise with; "
                       f"use larger batches, SyncBatchNorm across devices, GroupNorm/LayerNorm, or freeze it "
                       f"(eval mode)")
                evidence = {"module": s.name, "module_type": s.cls, "small_calls": s.small, "calls": s.calls,
                            "smallest_batch": s.min_n, "threshold": self.min_batch, "kind": "small-batch"}
                out.append(self.diagnostic(msg, site, step, epoch, evidence))
        return out
