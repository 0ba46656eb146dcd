"""The base of the runtime checks: the events they may listen to and how they report.

Host-time events (called synchronously from the hooks; must be cheap, no device reads):
  on_backward_start(), on_backward_end(), on_optimizer(opt) (an optimizer's first step),
  on_pre_step(opt), on_post_step(opt),
  on_batch(batch, where) (each batch a DataLoader yields; `where` is a `BatchPlace`; returning False
  says that no later batch of that DataLoader is wanted),
  on_bad_loss(rec, where, batch) (a non-finite loss read as it happens, on the CPU; `where`/`batch`:
  the batch in use, or None),
  on_module_input(module, inputs) (each call of a module of a type listed in the check's `watches`,
  before its forward; modules are found in the first steps; with `watch_every`, only in the steps
  numbered a multiple of that setting, and where module outputs are captured (the CPU) after the
  forward, at that step's backward(), for the calls made with gradients enabled; the inputs are the
  same unless the module changed them in place, as `ReLU(inplace=True)` does),
  on_activation(kind, x, out, dim) (a softmax (`dim`) or sigmoid call of the training graph, in the
  steps numbered a multiple of `saturation-every` only; the wrappers exist only when a check
  listens)
Flushed events (every `every` steps and at the end, host values in order):
  on_losses([LossRecord, ...]) (the block's losses in order; the default calls on_loss(LossRecord) for
  each: a check that sees every loss loops itself, one call per block instead of one per loss),
  on_step(StepRecord), on_params(ParamCheck), then on_flush()
and finish() once at the end. `diagnostics()` may be called at any time and again later.

When the flushed events run, `self.history` (`history.History`) already holds every record up to the
end of the block: a check may read the losses of the steps after the one it judges. A check that
reads the other checks' findings (to say that an earlier one explains its own) sets `reads_findings`
and gets them in `self.others` before `diagnostics()` is called.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from trainlint.codes import CODES
from trainlint.diagnostics import Diagnostic, Location
from trainlint.runtime.records import LossRecord, ParamCheck, StepRecord
from trainlint.runtime.sites import Site


class Check:
    code = ""
    reads_findings = False
    watches: tuple = ()  # module types whose inputs on_module_input() sees
    # the setting (a number of steps) when on_module_input() is needed only in the steps numbered a
    # multiple of it: the calls are then shown from the captured module outputs, or through hooks attached
    # for those steps only (a hooked module is slower to call)
    watch_every = ""

    def __init__(self, ctx: Any, settings: Dict[str, Any]):
        self.ctx = ctx  # the Monitor: names, epoch(), arm_localisation()
        self.settings = settings
        self.history = ctx.history
        self.others: List[Diagnostic] = []

    # host-time events
    def on_backward_start(self) -> None: ...
    def on_backward_end(self) -> None: ...
    def on_optimizer(self, opt) -> None: ...
    def on_pre_step(self, opt) -> None: ...
    def on_post_step(self, opt) -> None: ...
    def on_batch(self, batch: Any, where: Any) -> Optional[bool]: ...
    def on_bad_loss(self, rec: LossRecord, where: Any, batch: Any) -> None: ...
    def on_module_input(self, module: Any, inputs: Any) -> None: ...
    def on_activation(self, kind: str, x: Any, out: Any, dim: Optional[int]) -> None: ...

    # flushed events
    def on_losses(self, recs: List[LossRecord]) -> None:
        on_loss = self.on_loss
        for rec in recs:
            on_loss(rec)

    def on_loss(self, rec: LossRecord) -> None: ...
    def on_step(self, rec: StepRecord) -> None: ...
    def on_params(self, rec: ParamCheck) -> None: ...
    def on_flush(self) -> None: ...
    def finish(self) -> None: ...

    def diagnostics(self) -> List[Diagnostic]:
        return []

    def diagnostic(self, message: str, site: Site, step: Optional[int], epoch: Optional[int],
                   evidence: Dict[str, Any]) -> Diagnostic:
        info = CODES[self.code]
        start, end = site.columns()
        return Diagnostic(
            code=self.code,
            name=info.name,
            message=message,
            filename=site.display_name(),
            location=Location(site.row, start),
            end_location=Location(site.row, end),
            severity=info.severity,
            runtime={"step": step, "epoch": epoch, "evidence": clean(evidence), "confirms": info.confirms},
        )


def clean(value: Any) -> Any:
    """Evidence as JSON can hold it: NaN/Inf as strings, floats to 6 significant digits."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return str(value)


def fmt(v: Optional[float]) -> str:
    """A number for a message: 3 significant digits, nan/inf spelled out."""
    if v is None:
        return "?"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return f"{v:.3g}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def when(step: Optional[int], epoch: Optional[int]) -> str:
    """`step 6 (the 7th optimizer step, epoch 1)`: steps counted from 0, as training loops count them,
    with the ordinal to leave no doubt."""
    if step is None:
        s = "the first step"
        return f"{s} (epoch {epoch})" if epoch else s
    tail = f", epoch {epoch}" if epoch else ""
    return f"step {step} (the {ordinal(step + 1)} optimizer step{tail})"


def names_text(names: List[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def median(values) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return math.nan
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


_LOOKS_PER_JUDGE = 64


class SustainedFraction:
    """A fraction looked at again and again (dead units, saturated outputs): found when it is at least
    `fraction` in `needed` looks in a row, having been below it at the first look. `found` is the look
    the run started at (step, epoch, value), `found_len` that run's length so far, `peak` its highest;
    `looks` counts the looks."""

    __slots__ = ("first", "run", "run_start", "found", "found_len", "peak", "looks")

    def __init__(self) -> None:
        self.looks = 0
        self.first: Optional[float] = None
        self.run = 0
        self.run_start: Optional[Tuple[int, Optional[int], float]] = None
        self.found: Optional[Tuple[int, Optional[int], float]] = None
        self.found_len = 0
        self.peak = 0.0

    def observe(self, step: int, epoch: Optional[int], v: float, fraction: float, needed: int) -> None:
        self.looks += 1
        if self.first is None:
            self.first = v
        if v >= fraction and self.first < fraction:
            if self.run == 0:
                self.run_start = (step, epoch, v)
            self.run += 1
            self.peak = max(self.peak, v)
            if self.found is None and self.run >= needed:
                self.found = self.run_start
            if self.found is not None and self.found is self.run_start:
                self.found_len = self.run
        else:
            self.run = 0


class FractionLooks(Check):
    """A check that looks at a fraction every few steps (TL113's dead units, TL115's saturated outputs)
    and reports it when sustained: a look appends (state, step, epoch, device value) to `pending`; at the
    flush `fractions(pending)` turns the values into host floats (one transfer for the block) and each
    state, a `SustainedFraction`, observes its own against `fraction` and `needed`."""

    fraction = 0.0
    needed = 1

    def __init__(self, ctx: Any, settings: Dict[str, Any]):
        super().__init__(ctx, settings)
        self.states: Dict[Any, SustainedFraction] = {}
        self.pending: List[Tuple[Any, int, Optional[int], Any]] = []

    def fractions(self, pending: List[Tuple[Any, int, Optional[int], Any]]) -> List[float]:
        raise NotImplementedError

    def on_flush(self) -> None:
        # a look's value is a few device numbers, and what it shows lasts (dead units stay dead): the
        # looks are judged in blocks of `_LOOKS_PER_JUDGE`, one transfer each, and when the findings
        # are wanted (the end of the run, `diagnostics()`)
        if len(self.pending) >= _LOOKS_PER_JUDGE or self.ctx.draining:
            self._judge()

    def _judge(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        for (s, step, epoch, _), v in zip(pending, self.fractions(pending)):
            s.observe(step, epoch, v, self.fraction, self.needed)

    def finish(self) -> None:
        self._judge()

    def found(self) -> List[Any]:
        """The states whose fraction was sustained (the looks still pending are judged first)."""
        if self.pending and not self.ctx.closed:
            self._judge()
        return [s for s in self.states.values() if s.found is not None]
