"""The monitor: turns the events of `sources.Sources` into records, keeps them in the `History`, feeds
the checks (`checks/`).

- `sources.py`  what is attached to torch (hooks, wrappers), and nothing else;
- `monitor.py`  (here) the state of the run (steps, epochs, batches, optimizers) and the records;
- `transfer.py` the device-to-host copy of pending values, once per flush;
- `history.py`  the host-side series: the report's data and the facts the checks read;
- `names.py`    names of modules, parameters, models and optimizers;
- `gradtrack.py` what happened to the gradients between steps (cleared, accumulated), from metadata;
- `checks/`     one small file per code, fed by the events listed in `checks/base.py`.

No host-device synchronisation per step on an accelerator: losses and per-parameter gradient norms stay
on the device and are copied to the host in one transfer every `every` optimizer steps ("flush"). On
the CPU there is nothing to synchronise and the loss is read as it arrives.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from trainlint.runtime import transfer
from trainlint.runtime.gradtrack import GradTracker
from trainlint.runtime.history import History
from trainlint.runtime.names import Names
from trainlint.runtime.ranks import Ranks, merge
from trainlint.runtime.records import BatchPlace, LossRecord, ParamCheck, StepRecord
from trainlint.runtime.sites import Site, SiteFinder, UNKNOWN
from trainlint.runtime.checks.base import ordinal
from trainlint.runtime.sources import Sources
from trainlint.runtime.tensors import batch_size_of, cross_entropy_of, grouped, nonfinite, norm_vector, one_kind

is_grad_enabled = torch.is_grad_enabled

_CAPTURE_LIMIT = 8192  # module outputs held at most while waiting for a backward()
_ARM_BACKWARDS = 64  # backward calls checked one by one after a non-finite loss was seen (accelerator)
_NEVER = sys.maxsize
_NO_LOSS = object()  # (see `Monitor._loss_value`)
_TRACKED_FIRST = 4  # the clearing tracker watches every step of the first few (see `Monitor.tracks`)
_JUMP = 3.0  # a loss this many times its recent level gets its step's gradients looked at
# what a backward() line's loss is (a cross-entropy over C classes?) is read from its autograd graph for
# its first _CE_SETTLE losses; once they all agree, for one loss in each block of _CE_RECHECK
# (`Monitor._cross_entropy_at`)
_CE_SETTLE = 8
_CE_RECHECK = 16
_ACTIVE: Optional["Monitor"] = None  # at most one monitor attaches hooks at a time


def active_monitor() -> Optional["Monitor"]:
    return _ACTIVE


class OptState:
    """What the monitor knows about one optimizer."""

    __slots__ = ("ref", "index", "label", "cls", "steps", "site", "primary", "param_ok_step",
                 "params_bad", "plan", "closure", "var", "depth", "look", "look_after",
                 "track", "track_after", "__weakref__")

    def __init__(self, opt, index: int, primary: bool):
        self.ref = weakref.ref(opt)
        self.index = index
        self.cls = type(opt).__name__
        self.label = self.cls if index == 0 else f"{self.cls}#{index + 1}"  # or the user's variable name
        self.var: Optional[str] = None  # the user's variable name, where found
        self.steps = 0  # completed steps of this optimizer
        self.site: Site = UNKNOWN  # where its step() is called (resolved once)
        self.primary = primary  # the first optimizer that stepped: its steps are "the" steps
        self.param_ok_step = -1
        self.params_bad = False
        self.plan: Optional[Tuple[Any, List[Any], bool, List[Any]]] = None  # see Monitor._plan
        self.closure = False  # the step in progress was called with a closure (LBFGS, Lightning)
        # step() calls in progress: a subclass's step() calling super().step() runs the hooks twice when
        # torch has patched both classes' step (it patches the class of every optimizer it builds)
        self.depth = 0
        # are the gradients of its next step looked at (`Monitor.looks`), and of the step after it?
        self.look = True
        self.look_after = True
        # ... and of those looks, is what happened to its gradients between the steps tracked (`tracks`)?
        self.track = True
        self.track_after = True

    @property
    def opt(self):
        return self.ref()

    @property
    def title(self) -> str:
        """How messages name it: `optimizerG` (Adam), or Adam#2 when no variable was found."""
        return f"`{self.var}` ({self.cls})" if self.var else self.label


class LoaderState:
    __slots__ = ("key", "epoch", "batch", "full", "listeners", "pass_of_epoch", "train_epoch", "__weakref__")

    def __init__(self, key: int, full: Any, listeners: List[Any]):
        self.key = key
        self.epoch = 0  # 1-based once iterated
        self.batch = -1
        self.full = full if isinstance(full, int) else None  # the DataLoader's batch size
        self.listeners = listeners  # the checks' on_batch still wanting this DataLoader's batches
        self.pass_of_epoch = 0  # the pass whose training epoch is `train_epoch` (see Monitor._training_epoch)
        self.train_epoch: Optional[int] = None


_isfinite = math.isfinite


class _Line:
    """What the monitor keeps about the losses of one backward() line: their recent level (a moving
    average, for the jump looks) and what they are (`Monitor._cross_entropy_at`)."""

    __slots__ = ("level", "ce", "agreed", "seen", "next_read")

    def __init__(self) -> None:
        self.level: Optional[float] = None
        self.ce: Optional[Tuple[int, float]] = None  # the answer the losses agreed on
        self.agreed = 0  # losses in a row that gave it (-1: they differ; every loss is read)
        self.seen = 0  # losses of this line
        self.next_read = 0  # the number of the loss read next, once settled


def _loss_record(p: Tuple[Any, ...]) -> LossRecord:
    """The record of a loss kept as (value or device tensor, index, step, epoch, batch in use, site,
    classes, cross-entropy scale) by `Monitor._record_loss`."""
    value, index, step, epoch, cb, site, classes, ce_scale = p
    if cb is not None:
        rec = LossRecord(index, step, epoch, cb[0].key, cb[2], cb[3], cb[4], site)
    else:
        rec = LossRecord(index, step, None, None, None, None, None, site)
    rec.classes = classes
    rec.ce_scale = ce_scale  # (the cross-entropy's value is set at the flush: `transfer.fetch_losses`)
    if isinstance(value, float):
        rec.value = value
    else:
        rec.tensor = value
    return rec


def _fan_out(fns: List[Any]) -> Any:
    def callback(mod, inp):
        for f in fns:
            f(mod, inp)

    return callback


def _inside_step_of(opt, limit: int = 64) -> bool:
    """Is a `step` method of `opt` running further up the stack (its body called super().step())?
    Asked only when a step of `opt` began and did not end: nested, or ended by an exception."""
    f = sys._getframe(1)
    while f is not None and limit:
        if f.f_code.co_name == "step" and f.f_locals.get("self") is opt:
            return True
        f = f.f_back
        limit -= 1
    return False


class Monitor:
    def __init__(self, settings: Dict[str, Any], codes: Iterable[str], models: Iterable[Any] = (),
                 optimizers: Optional[Iterable[Any]] = None):
        from trainlint.runtime.checks import Check, build_checks

        self.settings = settings
        self.every = int(settings["every"])
        # the gradients (norms, clearing) are looked at in every step of an optimizer's first
        # `warmup-steps`, then in its steps numbered a multiple of `grad-every` (see `looks`)
        self.grad_every = int(settings.get("grad-every", 1))
        self._dense = int(settings.get("warmup-steps", 0))
        self.sites = SiteFinder()
        self.history = History()
        self.names = Names(models, self.sites.skips)
        self.grads = GradTracker()
        self.sources = Sources(self)
        self.ranks = Ranks()  # torchrun: this process's rank and the side channel to the others
        self._merged: Optional[List[Any]] = None
        self.step = 0  # completed steps of the primary optimizer
        self.loss_count = 0
        self.losses_pending: List[Any] = []  # LossRecords, or tuples the flush makes into records
        self._loss_flush_at = 4 * self.every  # losses pending without an optimizer step: flush anyway
        self.steps_pending: List[StepRecord] = []
        self.opts: "weakref.WeakKeyDictionary[Any, OptState]" = weakref.WeakKeyDictionary()
        self.opt_states: List[OptState] = []
        self._only_opts = weakref.WeakSet(optimizers) if optimizers is not None else None
        self._ignored_opts: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._last_opt: Optional[Tuple[Any, OptState]] = None  # (weakref, state) of the last optimizer seen
        self._last_iter: Optional[Tuple[Any, LoaderState]] = None  # (weakref, state) of the last DataLoader iterator
        self.loaders: "weakref.WeakKeyDictionary[Any, LoaderState]" = weakref.WeakKeyDictionary()
        self.iters: "weakref.WeakKeyDictionary[Any, LoaderState]" = weakref.WeakKeyDictionary()
        self._loader_keys = 0
        # the batch in use: (loader state, pass, index, size, full size, step when fetched)
        self.current_batch: Optional[Tuple[LoaderState, int, int, Optional[int], Optional[int], int]] = None
        self.current_data: Any = None  # the batch in use itself (a reference), for on_bad_loss
        # training epochs: the passes over DataLoaders whose batches reach backward(), numbered in the
        # order they happen (a loader re-created every epoch still counts its passes)
        self._epoch_of: Dict[Tuple[int, int], int] = {}
        self.current_epoch: Optional[int] = None
        self.last_loss_site: Site = UNKNOWN
        # module output capture (to name the first non-finite module)
        self.immediate: Optional[bool] = None  # losses readable for free (CPU); decided at first loss
        self.armed = 0  # > 0: read losses one by one (after a non-finite loss, on an accelerator)
        self.localised = False
        self._hook_stale = False  # what the forward hook must do may have changed (see post_step)
        self._finite_step = -1  # the last step with a finite loss (losses read as they come: CPU)
        self._lines: Dict[Site, _Line] = {}  # backward() line -> what is kept about its losses
        self._jumped = False  # a loss of the step in progress jumped above its level: look at the step
        self._params_looked = False  # the parameters were checked at the first non-finite loss
        self.captured: List[Tuple[Any, Any, Any]] = []
        self._last_scaled: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._last_clip: Optional[torch.Tensor] = None
        self.attached = False
        self.closed = False
        self.draining = False  # a flush for findings wanted now (see `flush`)
        self.wants_backward_end = False  # backward_end() wanted (see there; set once the checks are known)
        self.errors: List[str] = []
        self.started: Optional[float] = None  # wall-clock time of attach() and detach(), for the report
        self.ended: Optional[float] = None

        self.checks = build_checks(codes, self, settings)
        self._want_capture = any(c.code == "TL101" for c in self.checks)

        def listeners(name: str) -> List[Any]:
            # only the checks that override an event are called for it
            return [getattr(c, name) for c in self.checks if getattr(type(c), name) is not getattr(Check, name)]

        self._ev_backward_start = listeners("on_backward_start")
        self._ev_backward_end = listeners("on_backward_end")
        self._want_backward_end()
        self._ev_optimizer = listeners("on_optimizer")
        self._ev_pre_step = listeners("on_pre_step")
        self._ev_post_step = listeners("on_post_step")
        self._ev_losses = [c.on_losses for c in self.checks
                           if type(c).on_losses is not Check.on_losses or type(c).on_loss is not Check.on_loss]
        self._ev_step = listeners("on_step")
        self._ev_params = listeners("on_params")
        self._ev_flush = listeners("on_flush")
        self._ev_finish = listeners("finish")
        self._ev_batch = listeners("on_batch")
        self._ev_bad_loss = listeners("on_bad_loss")
        self._ev_activation = listeners("on_activation")
        # softmax/sigmoid calls are wrapped only for a check that looks at them, and looked at only in
        # the steps it samples (`saturation-every`); the wrappers read `activation_due` and nothing else
        self.wants_activations = bool(self._ev_activation)
        self._activation_every = int(settings.get("saturation-every", 10))
        self.activation_due = self.wants_activations
        self.current_place: Optional[BatchPlace] = None  # see place()
        # module types some check watches, and which checks: module inputs via forward pre-hooks
        self._watched_types = tuple({t for c in self.checks for t in c.watches})
        self._watched: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._sampled_watch: Dict[int, List[Tuple[Any, Any]]] = {}  # every -> [(module ref, callback)]
        self._sampled_handles: Dict[int, List[Any]] = {}  # every -> hooks attached for the step in progress
        self._rewatch_at = _NEVER  # the next step at which _rewatch has something to do
        # id(module) -> [(module ref, callback)] to show from `captured` in the step in progress (`_rewatch`)
        self._shown: Optional[Dict[int, List[Tuple[Any, Any]]]] = None

    # ------------------------------------------------------------------ attach / detach
    @property
    def models(self) -> List[Any]:
        return self.names.models

    def attach(self) -> None:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("another trainlint monitor is already attached")
        _ACTIVE = self
        self.attached = True
        self.started = time.time()
        try:
            self.sources.attach()
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook and restore every patched attribute (idempotent)."""
        global _ACTIVE
        self.closed = True
        if self.ended is None and self.started is not None:
            self.ended = time.time()
        self.sources.detach()
        self.captured.clear()
        self._last_scaled = None
        self._last_clip = None
        self.current_batch = None
        self.current_data = None
        if _ACTIVE is self:
            _ACTIVE = None
        self.attached = False

    def internal(self, exc: BaseException) -> None:
        """A bug in a check must never break the training: record it, stop watching."""
        import traceback

        self.errors.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        self.closed = True

    # ------------------------------------------------------------------ forward
    def _update_forward_hook(self) -> None:
        """Keep the global forward hook only while it is useful: discovering the model (first steps),
        or capturing module outputs where that is free (CPU) or armed after a non-finite loss."""
        need = (self.step < 2 or self._capturing()) and not self.closed
        hook = self.forward if self.step < 2 else self.capture
        if need != self.sources.forward_installed or (need and self.sources.forward_hook != hook):
            capture = hook == self.capture  # (recorded by the sources' wrapper itself, into `captured`)
            self.sources.want_forward(need, hook, light=capture, into=self.captured if capture else None,
                                      limit=_CAPTURE_LIMIT)
            if not need:
                self.captured.clear()
            if self._sampled_watch:
                self._rewatch()  # the step about to run: its sampled module watches through the capture or hooks

    def _capturing(self) -> bool:
        if not self._want_capture or self.localised:
            return False
        return self.armed > 0 or self.immediate is not False

    def forward(self, module, inputs, output) -> None:
        if self.closed:
            return
        if self.step < 2:
            self.names.saw_module(module)
            if self._watched_types and isinstance(module, self._watched_types) and module not in self._watched:
                self._watch_module(module, inputs)
        if self._capturing() and torch.is_grad_enabled():
            cap = self.captured
            if len(cap) >= _CAPTURE_LIMIT:
                del cap[: _CAPTURE_LIMIT // 2]
            cap.append((module, inputs, output))

    def capture(self, module, inputs, output) -> None:
        """The forward hook once the model is discovered and only capture is left to do (from the third
        step on, instead of `forward`). Where `Module._call_impl` can be wrapped (torch >= 2.1) the
        sources' wrapper does the same appending itself and this is only the hook's identity."""
        if self.closed or not is_grad_enabled():
            return
        cap = self.captured
        cap.append((module, inputs, output))
        if len(cap) > _CAPTURE_LIMIT:
            del cap[: _CAPTURE_LIMIT // 2]

    def _watch_module(self, module, inputs) -> None:
        """A module some check watches: hook its later calls (for a check with `watch_every`, only in the
        steps it looks at: see `_rewatch`), and show it this call's inputs."""
        self._watched.add(module)
        by_every: Dict[int, List[Any]] = {}
        for c in self.checks:
            if c.watches and isinstance(module, c.watches):
                every = int(self.settings[c.watch_every]) if c.watch_every else 0
                by_every.setdefault(every, []).append(c.on_module_input)
        for every, fns in by_every.items():
            callback = fns[0] if len(fns) == 1 else _fan_out(fns)
            if every:
                self._sampled_watch.setdefault(every, []).append((weakref.ref(module), callback))
                self._rewatch_at = 0  # attached from the next step that looks
            else:
                self.sources.watch_module(module, callback)
            callback(module, inputs)

    def _rewatch(self) -> None:
        """After a step: watch the modules of the checks that look at the next step, stop watching the
        others. Where module outputs are captured anyway (the CPU: `captured`), the calls of the next step
        are shown from the captured list at backward() (`_show_captured`): no hook, no slow path; else
        the modules are hooked for that step."""
        step = self.step
        # the next step at which some hook must come or go: at a multiple of `every`, and the step after
        self._rewatch_at = min((step + 1 if step % e == 0 else step + e - step % e
                                for e in self._sampled_watch if e > 1), default=_NEVER)
        from_capture = self.sources.forward_installed and self.sources.forward_hook == self.capture
        shown: Dict[int, List[Tuple[Any, Any]]] = {}
        for every, modules in self._sampled_watch.items():
            due = step % every == 0
            handles = self._sampled_handles.pop(every, None)
            if handles and (not due or from_capture):
                for h in handles:
                    self.sources.unwatch(h)
                handles = None
            if due and from_capture:
                for ref, cb in modules:
                    m = ref()
                    if m is not None:
                        shown.setdefault(id(m), []).append((ref, cb))
            elif due:
                if not handles:
                    handles = [self.sources.watch_module(m, cb)
                               for ref, cb in modules for m in (ref(),) if m is not None]
                self._sampled_handles[every] = handles
        self._shown = shown or None

    def _show_captured(self) -> None:
        """A step some check watches modules in, with their outputs captured: show it the calls of this
        backward()'s forward, in order (the inputs, as a forward pre-hook would see them)."""
        shown = self._shown
        for module, inputs, _ in self.captured:
            for ref, cb in shown.get(id(module), ()):
                if ref() is module:
                    cb(module, inputs)

    # ------------------------------------------------------------------ backward
    def backward_start(self, tensor: Optional[torch.Tensor], implicit: bool, caller: Any = None) -> None:
        self._last_clip = None  # a clip norm belongs to the gradients of the last backward
        if self.grads.active:
            self.grads.backward_start()
        if self._ev_backward_start:
            for f in self._ev_backward_start:
                f()
        if tensor is not None and implicit:
            scaled = self._last_scaled
            if scaled is not None:
                self._last_scaled = None
                if scaled[0] is tensor:
                    tensor = scaled[1]  # GradScaler: record the loss, not loss * scale
            value = self._loss_value(tensor)
            if value is not _NO_LOSS:
                site = self.last_loss_site = self.sites.at(caller) if caller is not None else self.sites.find(1)
                line = self._lines.get(site)
                if line is None:
                    line = self._lines[site] = _Line()
                seen = line.seen = line.seen + 1
                if line.agreed >= _CE_SETTLE and seen != line.next_read:
                    ce = line.ce  # (`_cross_entropy_at`'s answer between its reads, inlined)
                else:
                    ce = self._cross_entropy_at(line, tensor, seen)
                classes, ce_scale = ce if ce is not None else (None, None)
                if ce_scale == 1.0:
                    ce_scale = None  # the loss is the cross-entropy itself
                self._record_loss(tensor, value, site, line, classes, ce_scale)
        if self.captured:
            if self._shown is not None:
                self._show_captured()
            # the loss is recorded (and a non-finite one localised), or there is none: the forward's
            # outputs are not needed any more
            self.captured.clear()

    def _cross_entropy_at(self, line: _Line, tensor: torch.Tensor, seen: int) -> Optional[Tuple[int, float]]:
        """Is the loss a cross-entropy over C classes (TL110's chance level), or one scaled by a constant
        on its way to backward() (Lightning's `loss / accumulate_grad_batches`)? Read from its autograd
        graph (metadata only, `cross_entropy_of`), per backward() line: for its first _CE_SETTLE losses,
        then, if they all agreed, for one loss in each block of _CE_RECHECK (the others take the answer
        they agreed on; a later disagreement makes the line read every loss again). The loss read moves
        within the block (by 7 places from one block to the next: every place in turn), so losses that
        alternate between kinds in any pattern are found out: from the start, while settling; later, at a
        read. A line whose loss changes kind for good (a curriculum) carries the old answer for at most
        _CE_RECHECK + 6 losses. Called for the losses that are read (`seen`: this one's number on its
        line); `backward_start` answers the others from `line.ce` itself."""
        agreed = line.agreed
        block = seen // _CE_RECHECK + 1
        line.next_read = block * _CE_RECHECK + 7 * block % _CE_RECHECK
        ce = cross_entropy_of(tensor)
        if seen == 1:
            line.ce, line.agreed = ce, 1
        elif agreed >= 0:
            line.agreed = agreed + 1 if ce == line.ce else -1
        return ce

    def backward_end(self) -> None:
        """Called only while `wants_backward_end` is true: the gradient tracker is active (around a look), or
        a check listens."""
        if self.grads.active:
            self.grads.backward_end()
        if self._ev_backward_end:
            for f in self._ev_backward_end:
                f()

    def _want_backward_end(self) -> None:
        self.wants_backward_end = bool(self.grads.active or self._ev_backward_end)

    def _loss_value(self, t: torch.Tensor) -> Any:
        """The value of a loss given to backward() with an implicit gradient: a float where losses are read
        as they come (the CPU; on an accelerator while armed, after a failure), else None (read at the
        flush); _NO_LOSS for a tensor that is not a real scalar (whose backward() raises torch's own error):
        nothing is recorded for it."""
        immediate = self.immediate
        if immediate is None:
            if t.numel() != 1 or not t.is_floating_point():
                return _NO_LOSS
            immediate = self.immediate = t.device.type == "cpu" or self.every == 1
        if immediate or self.armed > 0:
            try:
                v = t.item()  # free on the CPU
            except RuntimeError:  # not one element
                return _NO_LOSS
            return v if type(v) is float else _NO_LOSS  # (not an integer, boolean or complex tensor)
        return None if t.numel() == 1 and t.is_floating_point() else _NO_LOSS

    def _record_loss(self, t: torch.Tensor, v: Optional[float], site: Site, line: _Line, classes: Optional[int],
                     ce_scale: Optional[float] = None) -> None:
        """One loss (`v`: its value, or None when it is read at the flush). Kept as a tuple until the flush
        builds its `LossRecord` (`_loss_record`), unless it is non-finite and read as it came: then the
        record is built at once, for the checks that look at the batch and the module outputs while they
        are still there."""
        cb = self.current_batch
        epoch = None
        if cb is not None:
            st = cb[0]
            if st.pass_of_epoch != cb[1]:  # the first loss of this pass over the DataLoader
                self._training_epoch(st, cb[1])
            epoch = self.current_epoch = st.train_epoch
        index = self.loss_count
        self.loss_count = index + 1
        if v is None:
            self.losses_pending.append((t.detach().reshape(()), index, self.step, epoch, cb, site, classes, ce_scale))
        else:
            if self.armed > 0:
                self.armed -= 1
                if self.armed == 0:
                    self._hook_stale = True  # capturing may stop
            if _isfinite(v):
                self._finite_step = self.step
                # a loss far above its line's recent level: the gradients of this step are looked at too
                # (an explosion shows in the step it happens, whatever `grad-every` says)
                level = line.level
                if level is None:
                    line.level = v
                else:
                    if v > _JUMP * level > 0.0:
                        self._jumped = True
                    line.level = level + 0.1 * (v - level)
                self.losses_pending.append((v, index, self.step, epoch, cb, site, classes, ce_scale))
            else:
                rec = _loss_record((v, index, self.step, epoch, cb, site, classes, ce_scale))
                self.losses_pending.append(rec)
                self._bad_loss(rec)
        if len(self.losses_pending) >= self._loss_flush_at and not self.steps_pending:
            self.flush()  # backward without optimizer steps: flush anyway

    def _training_epoch(self, st: LoaderState, pass_no: int) -> None:
        """A pass over a DataLoader whose batches reach backward(): a training epoch, numbered in order."""
        epoch = self._epoch_of.get((st.key, pass_no))
        if epoch is None:
            epoch = self._epoch_of[(st.key, pass_no)] = len(self._epoch_of) + 1
        st.pass_of_epoch, st.train_epoch = pass_no, epoch

    def _bad_loss(self, rec: LossRecord) -> None:
        """A non-finite loss read as it came."""
        if not self.localised:
            self._scan(rec)
        if not self._params_looked and rec.step >= 1 and self._finite_step == rec.step - 1:
            self._params_at_first_bad_loss()
        if self._ev_bad_loss:
            where = self.place()
            for f in self._ev_bad_loss:
                f(rec, where, self.current_data)

    def _scan(self, rec: LossRecord) -> None:
        """The loss of this step is non-finite: find the first module (in the order the forward passes
        finished, i.e. innermost first) whose output was non-finite."""
        if not self.captured:
            return
        rec.scanned = True
        self.localised = True
        self.armed = 0
        self._hook_stale = True  # nothing left to capture
        for module, inputs, output in self.captured:
            if nonfinite(output):
                params_ok = True
                for p in module.parameters(recurse=False):
                    if nonfinite(p.detach()):
                        params_ok = False
                        break
                rec.module = {
                    "name": self.module_name(module),
                    "type": type(module).__name__,
                    "inputs_finite": not nonfinite(inputs),
                    "params_finite": params_ok,
                }
                break
        self.captured.clear()

    def arm_localisation(self) -> None:
        """Called by TL101 when a flushed loss was non-finite and nothing was localised yet."""
        if not self.localised and self.armed == 0 and not self.immediate:
            self.armed = _ARM_BACKWARDS
            self._update_forward_hook()

    # ------------------------------------------------------------------ AMP, clipping
    def scaled(self, scaled: torch.Tensor, unscaled: torch.Tensor) -> None:
        self._last_scaled = (scaled, unscaled)

    def clipped(self, total: torch.Tensor) -> None:
        self._last_clip = total.detach()

    # ------------------------------------------------------------------ softmax / sigmoid
    def activation(self, kind: str, x: Any, out: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        """A softmax/sigmoid call in a sampled step: its input and output, if it is part of training
        (gradients enabled, an input that requires them)."""
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or not x.requires_grad \
                or not torch.is_grad_enabled() or not x.is_floating_point() or x.numel() == 0:
            return
        dim = None
        if kind == "softmax":
            dim = args[0] if args else kwargs.get("dim")
            if dim is None:  # F.softmax's legacy implicit dimension
                dim = 0 if x.dim() in (0, 1, 3) else 1
        for f in self._ev_activation:
            f(kind, x, out, dim)

    # ------------------------------------------------------------------ optimizer steps
    def _opt_state(self, opt) -> Optional[OptState]:
        last = self._last_opt
        if last is not None and last[0]() is opt:
            return last[1]  # the same optimizer as the last step (no weak-dictionary lookup)
        st = self.opts.get(opt)
        if st is not None:
            self._last_opt = (st.ref, st)
            return st
        if opt in self._ignored_opts:
            return None
        if self._only_opts is not None and opt not in self._only_opts:
            self._ignored_opts.add(opt)
            return None
        st = OptState(opt, len(self.opt_states), primary=not self.opt_states)
        self.opts[opt] = st
        self.opt_states.append(st)
        self._last_opt = (st.ref, st)
        return st

    def pre_step(self, opt, closure: bool) -> None:
        last = self._last_opt
        if last is not None and last[0]() is opt:
            st = last[1]  # the same optimizer as the last step (no weak-dictionary lookup)
        else:
            st = self._opt_state(opt)
            if st is None:
                return
        if st.depth:
            if _inside_step_of(opt):
                st.depth += 1
                return  # super().step() inside the optimizer's own step(): the same step
        st.depth = 1  # (a step that raised never ran its post-step hooks: no step is in progress)
        st.closure = closure
        if st.steps == 0 and st.site is UNKNOWN:
            self._first_step(st, opt)
        if self._ev_pre_step:
            for f in self._ev_pre_step:
                f(st)
        if st.track_after:
            self.grads.before_step(st)  # the next step is a tracked look
        if (st.look or self._jumped) and not closure:  # a look (with a closure, at the end of the step)
            self._record_step(st, opt)

    def _first_step(self, st: OptState, opt) -> None:
        st.site = self.sites.find(2)
        st.var = self.names.variable(opt)
        if st.var:
            st.label = st.var
        st.look, st.look_after = self.looks(0), self.looks(1)
        st.track, st.track_after = self.tracks(0), self.tracks(1)
        for f in self._ev_optimizer:
            f(st)

    def post_step(self, opt) -> None:
        last = self._last_opt
        st = last[1] if last is not None and last[0]() is opt else self.opts.get(opt)
        if st is None:
            return
        if st.depth > 1:
            st.depth -= 1
            return
        st.depth = 0
        if st.closure and (st.look or self._jumped):
            self._record_step(st, opt)
        st.steps += 1
        st.look = st.look_after
        track_next = st.track = st.track_after
        st.look_after, st.track_after = self.looks(st.steps + 1), self.tracks(st.steps + 1)
        if track_next or self.grads.active:
            self.grads.post_step(st, track_next)
            self._want_backward_end()
        if self._ev_post_step:
            for f in self._ev_post_step:
                f(st)
        if self.captured:
            self.captured.clear()
        if st.primary:
            self._jumped = False
            step = self.step = self.step + 1
            if self.wants_activations:
                self.activation_due = step % self._activation_every == 0
            if step >= self._rewatch_at:
                self._rewatch()
            if step % self.every == 0:
                self.flush()
                if self.ranks.rank is None:
                    self.ranks.probe()  # a torchrun worker? (the process group may come later; once known, kept)
            if step <= 2 or self._hook_stale:
                self._early_or_stale(step)

    def _early_or_stale(self, step: int) -> None:
        if step == 1 and self.ranks.rank is None:
            self.ranks.probe()
        if step == 2:
            self.names.build()  # the model is known by now; name it while it is alive
        self._hook_stale = False
        self._update_forward_hook()

    def looks(self, step: int) -> bool:
        """Are the gradients of an optimizer's step `step` (0-based) looked at? Every step of the first
        `warmup-steps` (first-step bugs and early divergence at the step they happen, the reference levels
        of TL105/TL106), then every `grad-every` steps: reading every gradient is the largest cost of a
        step, and what it finds (stale or cleared gradients, exploding or collapsed norms) lasts."""
        return step < self._dense or step % self.grad_every == 0

    def tracks(self, step: int) -> bool:
        """Of the looks (`looks`), is step `step` one where the clearing tracker (`gradtrack`) watches
        what happens to the gradients between the steps (TL103, TL108)? The scheduled ones, and the first
        _TRACKED_FIRST steps: a loop's clearing does not change from one step to the next (what the
        tracker finds lasts, and its first step is the first it can find), so the other warm-up steps,
        looked at for their norms, are not tracked (the tracker reads the sampled gradients five times
        around each tracked step)."""
        return step % self.grad_every == 0 or step < _TRACKED_FIRST and step < self._dense

    def looks_text(self) -> str:
        """Which steps' gradients are looked at, in words (for the report)."""
        if self.grad_every == 1:
            return "every step"
        return f"every step of the first {self._dense}, then every {ordinal(self.grad_every)} step (the grad-every setting)"

    def unlooked_between(self, first: int, last: int) -> bool:
        """Was any step in first..last (inclusive) not looked at (`looks`)?"""
        return self._any_not(self.looks, first, last)

    def untracked_between(self, first: int, last: int) -> bool:
        """Was any step in first..last (inclusive) not tracked (`tracks`)?"""
        return self._any_not(self.tracks, first, last)

    def _any_not(self, scheduled: Any, first: int, last: int) -> bool:
        # past the warm-up (and the first tracked steps) both schedules repeat every `grad-every` steps:
        # one period beyond them tells
        if self.grad_every == 1:
            return False
        end = min(last, max(first, self._dense, _TRACKED_FIRST) + self.grad_every)
        return any(not scheduled(i) for i in range(first, end + 1))

    def _plan(self, st: OptState, opt) -> Tuple[Any, List[Any], bool, List[Any]]:
        """The optimizer's parameters as a flat list, rebuilt only when its param groups change: (key,
        parameters, whether they share one device and one dtype (the usual case: one fused norm kernel, no
        grouping), those whose values the parameter check can read (`transfer.checkable_params`))."""
        groups = opt.param_groups
        key = [(id(g["params"]), len(g["params"])) for g in groups]
        plan = st.plan
        if plan is None or plan[0] != key:
            params = [p for g in groups for p in g["params"]]
            plan = st.plan = (key, params, one_kind(params), transfer.checkable_params(params))
        return plan

    def _record_step(self, st: OptState, opt) -> None:
        """A step `st` is taking that is looked at (every `grad-every` steps): its gradient norms (a vector
        per device and dtype, kept on the device until the flush), the norm before clipping, what happened
        to the gradients since the previous step."""
        _, params, uniform, _ = self._plan(st, opt)
        grads = [p.grad for p in params]
        for g in grads:
            if g is None or g.is_sparse:
                pairs = [(p, g) for p, g in zip(params, grads) if g is not None and not g.is_sparse]
                params = [p for p, _ in pairs]
                grads = [g for _, g in pairs]
                break
        ordered: List[Any] = []
        vecs: List[Any] = []
        # one vector of norms per device and dtype (stacked here: the flush reads each in one call)
        for ps, gs in grouped(params, grads, uniform):
            vecs.append((gs[0].device, norm_vector(gs)))
            ordered.extend(ps)
        rec = StepRecord(st, st.steps, self.epoch(), ordered, vecs, self.loss_count)
        rec.no_grads = not grads
        rec.closure = st.closure
        rec.forced = not st.look  # (a step whose loss jumped)
        rec.tracked = st.track
        if st.track:
            rec.accumulated, rec.after_backward = self.grads.at_step(st)
        if self._last_clip is not None:
            rec.clip = self._last_clip
            self._last_clip = None
        rec.site = self.last_loss_site
        cb = self.current_batch
        if cb is not None and cb[3] is not None and cb[4] is not None and cb[3] < cb[4]:
            rec.short = True
        self.steps_pending.append(rec)

    # ------------------------------------------------------------------ data loading
    def loader_iter(self, loader, it) -> None:
        st = self.loaders.get(loader)
        if st is None:
            self._loader_keys += 1
            st = LoaderState(self._loader_keys, None, list(self._ev_batch))
            self.loaders[loader] = st
        full = getattr(loader, "batch_size", None)
        st.full = full if isinstance(full, int) else None
        st.epoch += 1
        st.batch = -1
        self.iters[it] = st

    def _iter_state(self, it) -> LoaderState:
        st = self.iters.get(it)
        if st is None:  # iterator created before watching began
            self._loader_keys += 1
            sampler = getattr(it, "_index_sampler", None)
            st = LoaderState(self._loader_keys, getattr(sampler, "batch_size", None), list(self._ev_batch))
            st.epoch = 1
            self.iters[it] = st
        self._last_iter = (weakref.ref(it), st)  # the iterator of the batches that follow (weakly)
        return st

    def batch(self, it, batch) -> None:
        last = self._last_iter
        st = last[1] if last is not None and last[0]() is it else self._iter_state(it)
        st.batch += 1
        if self.captured:
            self.captured.clear()  # a new batch: the outputs of earlier forward passes are not its
        self.current_batch = (st, st.epoch, st.batch, batch_size_of(batch), st.full, self.step)
        # the batch itself, by reference, for a check reading it at a non-finite loss (never in a loss
        # record: the pending records would keep every batch of a flush alive)
        self.current_data = batch if self._ev_bad_loss else None
        self.current_place = None
        if st.listeners:
            where = self.place()
            for f in tuple(st.listeners):
                if f(batch, where) is False:  # no more batches of this DataLoader wanted
                    st.listeners.remove(f)

    def place(self) -> Optional[BatchPlace]:
        """Where the batch in use comes from (built when a check asks; one object per batch)."""
        where = self.current_place
        if where is None and self.current_batch is not None:
            st, pass_no, batch, _, _, step = self.current_batch
            where = self.current_place = BatchPlace(st.key, pass_no, batch, step, self._epoch_of)
        return where

    def epoch(self) -> Optional[int]:
        return self.current_epoch

    @property
    def epochs(self) -> int:
        return len(self._epoch_of)

    # ------------------------------------------------------------------ flush: device -> host, checks
    def flush(self, drain: bool = False) -> None:
        """Copy the pending device values to the host (one transfer per device) and feed the checks.
        `drain`: the findings are wanted now (the end of the run, or `diagnostics()`): the checks that
        judge their looks in blocks judge what they hold too (`draining`)."""
        self.draining = drain
        try:
            self._flush()
        finally:
            self.draining = False

    def _flush(self) -> None:
        losses, self.losses_pending = self.losses_pending, []
        steps, self.steps_pending = self.steps_pending, []
        if not losses and not steps and self.step == 0:
            return
        losses = [r if type(r) is LossRecord else _loss_record(r) for r in losses]
        with torch.no_grad():
            transfer.fetch_losses(losses)
            transfer.fetch_norms(steps)
            param_checks = self._check_params()
        h = self.history
        h.add_losses(losses)
        for r in steps:
            h.add_step(r)
        if losses:
            for f in self._ev_losses:
                f(losses)
        for r in steps:
            for f in self._ev_step:
                f(r)
            r.params = []  # drop the references to the parameters
        for pc in param_checks:
            for f in self._ev_params:
                f(pc)
        for f in self._ev_flush:
            f()

    def _params_at_first_bad_loss(self) -> None:
        """The first non-finite loss, read as it came, after a step whose loss was finite: are the
        parameters already NaN/Inf? Then the update of that last step made them so (the gradients of a
        step in between looks are not known): one pass over the parameters, once."""
        self._params_looked = True
        with torch.no_grad():
            found = self._check_params(after_finite_step=True)
        for pc in found:
            for f in self._ev_params:
                f(pc)

    def _check_params(self, after_finite_step: bool = False) -> List[ParamCheck]:
        """Are the parameters of each optimizer still finite (one fused norm pass)? At each flush, and
        once at the first non-finite loss after a finite one (`after_finite_step`: the primary's
        parameters were finite before its last step, whose loss was finite)."""
        out: List[ParamCheck] = []
        if not self._ev_params:
            return out
        for st in self.opt_states:
            opt = st.opt
            if opt is None or st.params_bad or st.steps == 0:
                continue
            _, _, uniform, checkable = self._plan(st, opt)
            bad = transfer.nonfinite_params(checkable, uniform=uniform)
            if bad:
                st.params_bad = True
                ok = max(st.param_ok_step, st.steps - 2) if after_finite_step and st.primary else st.param_ok_step
                out.append(ParamCheck(st, st.steps - 1, ok, self.epoch(), bad))
            else:
                st.param_ok_step = st.steps - 1
        return out

    # ------------------------------------------------------------------ names
    def module_name(self, module) -> str:
        return self.names.module(module)

    def param_name(self, p) -> str:
        return self.names.param(p)

    # ------------------------------------------------------------------ results
    def close(self) -> None:
        """Flush what is pending, let the checks finish, detach everything."""
        try:
            if not self.closed:
                self.flush(drain=True)
                for f in self._ev_finish:
                    f()
        except Exception as exc:  # pragma: no cover - defensive
            self.internal(exc)
        finally:
            self.detach()

    def diagnostics(self) -> List[Any]:
        """The findings so far. Once the run is over (detached), in a torchrun run: on rank 0 every rank's
        findings merged (each naming its rank), on the other ranks their own (also sent to rank 0)."""
        if not self.closed:
            try:
                self.flush(drain=True)
            except Exception as exc:  # pragma: no cover - defensive
                self.internal(exc)
        elif self._merged is not None:
            return list(self._merged)
        ranks = self.ranks
        others = None
        final = self.ended is not None  # detached: the run is over (not a monitor stopped by its own error)
        if final and ranks.active and ranks.rank == 0:
            # first the other ranks' findings: they come once those ranks finished, so every checksum
            # TL114 compares is in the store by then
            others = ranks.gather_findings(float(self.settings["rank-wait"]))
        out = self._own_diagnostics()
        if final and ranks.active:
            if ranks.rank == 0:
                out = merge(out, 0, others or {})
            else:
                ranks.send_findings(out)
                out = merge(out, ranks.rank, {})
            self._merged = out
        return list(out)

    def _own_diagnostics(self) -> List[Any]:
        out: List[Any] = []
        # checks that read the others' findings (to point at an earlier cause) come last
        for c in sorted(self.checks, key=lambda c: c.reads_findings):
            try:
                if c.reads_findings:
                    c.others = list(out)
                out.extend(c.diagnostics())
            except Exception as exc:  # pragma: no cover - defensive
                self.errors.append(f"{c.code}: {exc!r}")
        out.sort(key=lambda d: ((d.runtime or {}).get("step") or 0, d.code))
        return out
