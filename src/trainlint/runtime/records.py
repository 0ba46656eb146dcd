"""What the monitor records and hands to the checks: one record per loss (backward call) and per
optimizer step, and a periodic look at the parameters.

Steps are numbered as training scripts count them: from 0. A loss's `step` is the step it contributes
to (the primary optimizer's step in progress); a step record's `step` is that optimizer's own count.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from trainlint.runtime.sites import UNKNOWN, Site


class LossRecord:
    """One backward() call on a scalar loss.

    `step` is the 0-based optimizer step this loss contributes to, `epoch` the 1-based pass over the
    training DataLoader (None without a DataLoader), `batch` the 0-based batch index within that epoch,
    `size`/`full` the batch's size and the loader's batch size. `value` is a host float once the record
    has been flushed. `classes` is the number of classes when the loss is the output of a cross-entropy
    (`F.cross_entropy`, `nn.CrossEntropyLoss`) over class scores.
    """

    __slots__ = ("index", "step", "epoch", "loader", "batch", "size", "full", "value", "site",
                 "tensor", "scanned", "module", "classes", "ce_value", "ce_scale")

    def __init__(self, index: int, step: int, epoch: Optional[int], loader: Optional[int],
                 batch: Optional[int], size: Optional[int], full: Optional[int], site: Site):
        self.index = index
        self.step = step
        self.epoch = epoch
        self.loader = loader
        self.batch = batch
        self.size = size
        self.full = full
        self.site = site
        self.value: float = math.nan
        self.tensor: Any = None  # the detached loss on its device until flushed
        self.scanned = False  # module outputs of this step were examined (non-finite loss only)
        self.module: Optional[Dict[str, Any]] = None  # first module with a non-finite output
        self.classes: Optional[int] = None
        # when the loss is a cross-entropy scaled by a constant: the factor from the loss's value to the
        # cross-entropy's (`ce_scale`), and that value (`ce_value`, a float once the loss's value is
        # known); both None when the loss is the cross-entropy itself
        self.ce_value: Optional[float] = None
        self.ce_scale: Optional[float] = None

    @property
    def short(self) -> bool:
        return self.size is not None and self.full is not None and self.size < self.full


class StepRecord:
    """One optimizer step: the global gradient norm, the parameters whose gradient is non-finite, and
    what happened to the gradients since the previous step."""

    __slots__ = ("opt", "step", "epoch", "total", "bad", "params", "vecs", "loss_index", "site", "short",
                 "clip", "no_grads", "accumulated", "after_backward", "closure", "forced",
                 "tracked")

    def __init__(self, opt, step: int, epoch: Optional[int], params: List[Any], vecs: List[Any],
                 loss_index: int):
        self.opt = opt  # OptState
        self.step = step  # 0-based step of this optimizer
        self.epoch = epoch
        self.params = params  # the parameters whose gradient norms are in `vecs`, in that order
        # [(device, 1-D float32 tensor of the norms of the next ones of `params`)], on the device until flushed
        self.vecs = vecs
        self.total: float = math.nan  # global L2 norm (host, after flush); 0.0 without any gradient
        self.bad: List[Any] = []  # parameters whose gradient norm is NaN/Inf
        self.loss_index = loss_index  # number of loss records seen when the step ran
        self.site: Site = UNKNOWN  # the backward() line of the last loss before this step
        self.short = False  # the last batch before this step was a short (last) batch
        self.clip: Any = None  # the norm clip_grad_norm_ returned before this step (device, then host float)
        self.no_grads = False  # no parameter of the optimizer had a gradient
        self.accumulated = False  # a backward() added onto the gradients of the previous step
        # "", "replaced" or "modified": gradients touched after the last backward; None: not known (nothing
        # watched before this step to compare with: an optimizer's first step)
        self.after_backward: Optional[str] = ""
        self.closure = False  # step(closure): the gradients are those of the closure's last backward
        # looked at because its loss jumped, not on the schedule: its own loss is why it was chosen (TL105;
        # such a step is not `tracked` either)
        self.forced = False
        # the clearing tracker watched it (`accumulated`/`after_backward` are known): the scheduled looks and
        # the first few steps (`Monitor.tracks`), not the rest of the warm-up nor a step looked at for its loss
        self.tracked = True

    @property
    def raw(self) -> float:
        """The gradient norm before clipping (the norm `clip_grad_norm_` saw), else the norm at the step."""
        return self.clip if isinstance(self.clip, float) else self.total


class ParamCheck:
    """A periodic look at the parameter values of one optimizer (at each flush): `step` is the last
    completed step (0-based), `last_ok_step` the last step after which they were all finite (-1: none
    checked before)."""

    __slots__ = ("opt", "step", "last_ok_step", "epoch", "bad")

    def __init__(self, opt, step: int, last_ok_step: int, epoch: Optional[int], bad: List[Any]):
        self.opt = opt
        self.step = step
        self.last_ok_step = last_ok_step
        self.epoch = epoch
        self.bad = bad


class BatchPlace:
    """Where a batch comes from: the DataLoader pass (`loader`, `pass_no`), its 0-based index in that
    pass, and the step in progress when it was fetched. `epoch()` is the training epoch of that pass,
    known once a loss computed from one of its batches reached backward() (None for validation)."""

    __slots__ = ("loader", "pass_no", "batch", "step", "_epochs")

    def __init__(self, loader: int, pass_no: int, batch: int, step: int, epochs: Dict[Any, int]):
        self.loader = loader
        self.pass_no = pass_no
        self.batch = batch
        self.step = step
        self._epochs = epochs

    def epoch(self) -> Optional[int]:
        return self._epochs.get((self.loader, self.pass_no))
