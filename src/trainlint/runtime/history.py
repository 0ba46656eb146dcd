"""The history of a watched run: host-side series of what the monitor recorded, in compact arrays.

Filled at each flush, before the checks see the new records, so a check may read everything up to the
end of the current block. It is both the report's data and the recorded facts the checks share:

- every loss (one per backward() on a scalar): value, the step it contributes to, epoch, batch size;
- per optimizer: the global gradient norm of each of its steps (and the norm before clipping, where
  `clip_grad_norm_` was called);
- per step of the primary optimizer: the mean of the losses that contributed to it (`step_loss`).
"""

from __future__ import annotations

import math
from array import array
from typing import Dict, List, Optional, Tuple

from trainlint.runtime.records import LossRecord, StepRecord
from trainlint.runtime.sites import Site


class History:
    def __init__(self) -> None:
        self.loss_index = array("l")
        self.loss_step = array("l")
        self.loss_epoch = array("l")  # 0: no DataLoader
        self.loss_value = array("d")
        self.loss_size = array("l")  # 0: unknown
        self.loss_full = array("l")
        self.loss_site = array("l")
        self.sites: List[Site] = []
        self._site_ids: Dict[Site, int] = {}
        self.norms: Dict[str, Tuple[array, array]] = {}  # optimizer label -> (steps, norms)
        self.clip_norms: Dict[str, Tuple[array, array]] = {}  # optimizer label -> (steps, norms before clipping)
        self.norm_first_loss: Dict[str, array] = {}  # optimizer label -> loss index at each step
        # mean loss per step (index: step); NaN where no finite loss was recorded
        self._step_sum = array("d")
        self._step_n = array("l")
        self._step_bad = array("l")  # non-finite losses per step

    def add_losses(self, records: List[LossRecord]) -> None:
        """The losses of a flush, in order."""
        if not records:
            return
        site_ids = self._site_ids
        sids = []
        for r in records:
            sid = site_ids.get(r.site)
            if sid is None:
                sid = site_ids[r.site] = len(self.sites)
                self.sites.append(r.site)
            sids.append(sid)
        self.loss_index.extend([r.index for r in records])
        self.loss_step.extend([r.step for r in records])
        self.loss_epoch.extend([r.epoch or 0 for r in records])
        self.loss_value.extend([r.value for r in records])
        self.loss_size.extend([r.size or 0 for r in records])
        self.loss_full.extend([r.full or 0 for r in records])
        self.loss_site.extend(sids)
        step_sum, step_n, step_bad = self._step_sum, self._step_n, self._step_bad
        isfinite = math.isfinite
        for r in records:
            step = r.step
            if step < 0:
                continue
            while len(step_n) <= step:
                step_sum.append(0.0)
                step_n.append(0)
                step_bad.append(0)
            if isfinite(r.value):
                step_sum[step] += r.value
                step_n[step] += 1
            else:
                step_bad[step] += 1

    def add_step(self, r: StepRecord) -> None:
        steps, norms = self.norms.setdefault(r.opt.label, (array("l"), array("d")))
        steps.append(r.step)
        norms.append(r.total)
        if isinstance(r.clip, float):
            csteps, cnorms = self.clip_norms.setdefault(r.opt.label, (array("l"), array("d")))
            csteps.append(r.step)
            cnorms.append(r.clip)
        self.norm_first_loss.setdefault(r.opt.label, array("l")).append(r.loss_index)

    def step_loss(self, step: int) -> Optional[float]:
        """The mean finite loss of the backward() calls of a step (of the primary optimizer), if any."""
        if 0 <= step < len(self._step_n) and self._step_n[step]:
            return self._step_sum[step] / self._step_n[step]
        return None

    def step_nonfinite(self, step: int) -> bool:
        """Was a loss of this step NaN/Inf?"""
        return 0 <= step < len(self._step_bad) and self._step_bad[step] > 0

    @property
    def loss_steps(self) -> int:
        """One past the last step with a recorded loss."""
        return len(self._step_n)
