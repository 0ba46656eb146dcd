"""The monitor: attaches to torch through public hooks, turns what it sees into records, feeds the checks.

Attached while watching (all restored by `detach()`):
- a global module forward hook (`register_module_forward_hook`): which modules exist (for names), and,
  only while it can be read for free (CPU) or after a non-finite loss was seen, the module outputs of
  the current step, to name the first module whose output was non-finite;
- global optimizer step pre/post hooks: gradient norms (kept on the device), the first-step
  inspection of eps, the step count;
- wrappers on `torch.Tensor.backward` and `torch.autograd.backward`: each loss, and whether the
  gradients it accumulates into were cleared since the last optimizer step;
- wrappers on `DataLoader.__iter__` and `_BaseDataLoaderIter.__next__`: epochs, batch sizes;
- a wrapper on `torch.amp.GradScaler.scale`, so that the loss recorded is the unscaled one.

No host-device synchronisation per step on an accelerator: losses and per-parameter gradient norms stay
on the device and are copied to the host in one transfer every `every` optimizer steps ("flush"). On
the CPU there is nothing to synchronise and the loss is read as it arrives.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from array import array
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from trainlint.runtime.records import LossRecord, ParamCheck, StepRecord
from trainlint.runtime.sites import Site, SiteFinder, UNKNOWN

_CAPTURE_LIMIT = 8192  # module outputs held at most while waiting for a backward()
_ARM_BACKWARDS = 64  # backward calls checked one by one after a non-finite loss was seen (accelerator)
_ACTIVE: Optional["Monitor"] = None  # at most one monitor attaches hooks at a time


def active_monitor() -> Optional["Monitor"]:
    return _ACTIVE


class OptState:
    """What the monitor knows about one optimizer."""

    __slots__ = ("ref", "index", "label", "cls", "steps", "site", "primary", "param_ok_step",
                 "params_bad", "plan", "__weakref__")

    def __init__(self, opt, index: int, primary: bool):
        self.ref = weakref.ref(opt)
        self.index = index
        self.cls = type(opt).__name__
        self.label = self.cls if index == 0 else f"{self.cls}#{index + 1}"
        self.steps = 0  # completed steps of this optimizer
        self.site: Site = UNKNOWN  # where its step() is called (resolved once)
        self.primary = primary  # the first optimizer that stepped: its steps are "the" steps
        self.param_ok_step = 0
        self.params_bad = False
        self.plan: Optional[Tuple[Any, List[Any], bool]] = None  # see Monitor._plan

    @property
    def opt(self):
        return self.ref()


class LoaderState:
    __slots__ = ("key", "epoch", "batch", "full", "__weakref__")

    def __init__(self, key: int, full: Optional[int]):
        self.key = key
        self.epoch = 0  # 1-based once iterated
        self.batch = -1
        self.full = full


def batch_size_of(batch: Any, depth: int = 0) -> Optional[int]:
    """The leading dimension of the first tensor in a batch (tensor, tuple/list, dict), from metadata
    only (no device access)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if depth > 4:
        return None
    if isinstance(batch, (list, tuple)):
        if not batch:
            return None
        first = batch[0]
        if isinstance(first, (torch.Tensor, list, tuple, dict)):
            return batch_size_of(first, depth + 1)
        return len(batch)  # a collated list of strings/numbers
    if isinstance(batch, dict):
        for v in batch.values():
            n = batch_size_of(v, depth + 1)
            if n is not None:
                return n
    return None


def _nonfinite(obj: Any, depth: int = 0) -> bool:
    """Is any floating tensor in `obj` NaN/Inf (reads values: used only when something went wrong)."""
    if isinstance(obj, torch.Tensor):
        if not (obj.is_floating_point() or obj.is_complex()) or obj.numel() == 0:
            return False
        return not bool(torch.isfinite(obj).all())
    if depth > 3:
        return False
    if isinstance(obj, (list, tuple)):
        return any(_nonfinite(o, depth + 1) for o in obj)
    if isinstance(obj, dict):
        return any(_nonfinite(o, depth + 1) for o in obj.values())
    return False


def _foreach_norms(tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    """Per-tensor L2 norms in float32 (one fused kernel per device/dtype group where torch has one)."""
    try:
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except (TypeError, RuntimeError, AttributeError):  # older torch: no dtype argument
        try:
            return [n.float() for n in torch._foreach_norm(tensors, 2)]
        except (RuntimeError, AttributeError):
            return [torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors]


def _grouped(params: List[Any], tensors: List[torch.Tensor]):
    """Group (param, tensor) pairs by (device, dtype) for the fused norm kernels."""
    if not tensors:
        return []
    key0 = (tensors[0].device, tensors[0].dtype)
    if all(t.device == key0[0] and t.dtype == key0[1] for t in tensors):
        return [(params, tensors)]
    groups: Dict[Tuple[Any, Any], Tuple[List[Any], List[torch.Tensor]]] = {}
    for p, t in zip(params, tensors):
        ps, ts = groups.setdefault((t.device, t.dtype), ([], []))
        ps.append(p)
        ts.append(t)
    return list(groups.values())


class History:
    """Host-side series for the report (compact arrays)."""

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
        self.norm_first_loss: Dict[str, array] = {}  # optimizer label -> loss index at each step

    def add_loss(self, r: LossRecord) -> None:
        sid = self._site_ids.get(r.site)
        if sid is None:
            sid = self._site_ids[r.site] = len(self.sites)
            self.sites.append(r.site)
        self.loss_index.append(r.index)
        self.loss_step.append(r.step)
        self.loss_epoch.append(r.epoch or 0)
        self.loss_value.append(r.value)
        self.loss_size.append(r.size or 0)
        self.loss_full.append(r.full or 0)
        self.loss_site.append(sid)

    def add_step(self, r: StepRecord) -> None:
        steps, norms = self.norms.setdefault(r.opt.label, (array("l"), array("d")))
        steps.append(r.step)
        norms.append(r.total)
        self.norm_first_loss.setdefault(r.opt.label, array("l")).append(r.loss_index)


class Monitor:
    def __init__(self, settings: Dict[str, Any], codes: Iterable[str], models: Iterable[Any] = (),
                 optimizers: Optional[Iterable[Any]] = None):
        from trainlint.runtime.checks import Check, build_checks

        self.settings = settings
        self.every = int(settings["every"])
        self.sites = SiteFinder()
        self.history = History()
        self.step = 0  # completed steps of the primary optimizer
        self.loss_count = 0
        self.losses_pending: List[LossRecord] = []
        self.steps_pending: List[StepRecord] = []
        self.opts: "weakref.WeakKeyDictionary[Any, OptState]" = weakref.WeakKeyDictionary()
        self.opt_states: List[OptState] = []
        self._only_opts = weakref.WeakSet(optimizers) if optimizers is not None else None
        self._ignored_opts: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.loaders: "weakref.WeakKeyDictionary[Any, LoaderState]" = weakref.WeakKeyDictionary()
        self.iters: "weakref.WeakKeyDictionary[Any, LoaderState]" = weakref.WeakKeyDictionary()
        self._loader_keys = 0
        self.current_batch: Optional[Tuple[LoaderState, int, int, Optional[int], Optional[int]]] = None
        # training epochs: the passes over DataLoaders whose batches reach backward(), numbered in the
        # order they happen (a loader re-created every epoch still counts its passes)
        self._epoch_of: Dict[Tuple[int, int], int] = {}
        self.current_epoch: Optional[int] = None
        self.last_loss_site: Site = UNKNOWN
        self.models = list(models)
        self.modules_seen: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._names: Dict[int, Tuple[Any, str]] = {}  # id(module) -> (weakref, qualified name)
        self._pnames: Dict[int, Tuple[Any, str]] = {}  # id(parameter) -> (weakref, qualified name)
        # module output capture (to name the first non-finite module)
        self.immediate: Optional[bool] = None  # losses readable for free (CPU); decided at first loss
        self.armed = 0  # > 0: read losses one by one (after a non-finite loss, on an accelerator)
        self.localised = False
        self.captured: List[Tuple[Any, Any, Any]] = []
        self._last_scaled: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._tls = threading.local()
        self._patches: List[Tuple[Any, str, Any, bool, Any]] = []
        self._handles: List[Any] = []
        self._fwd_handle = None
        self.attached = False
        self.closed = False
        self.errors: List[str] = []

        self.checks = build_checks(codes, self, settings)
        self._want_capture = any(c.code == "TL101" for c in self.checks)

        def listeners(name: str) -> List[Callable]:
            # only the checks that override an event are called for it
            return [getattr(c, name) for c in self.checks if getattr(type(c), name) is not getattr(Check, name)]

        self._ev_backward_start = listeners("on_backward_start")
        self._ev_backward_end = listeners("on_backward_end")
        self._ev_optimizer = listeners("on_optimizer")
        self._ev_pre_step = listeners("on_pre_step")
        self._ev_post_step = listeners("on_post_step")
        self._ev_loss = listeners("on_loss")
        self._ev_step = listeners("on_step")
        self._ev_params = listeners("on_params")
        self._ev_finish = listeners("finish")

    # ------------------------------------------------------------------ attach / detach
    def attach(self) -> None:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("another trainlint monitor is already attached")
        from torch.optim import optimizer as optim_mod
        from torch.utils.data import dataloader as dl

        _ACTIVE = self
        self.attached = True
        try:
            self._handles.append(optim_mod.register_optimizer_step_pre_hook(self._hook_pre_step))
            self._handles.append(optim_mod.register_optimizer_step_post_hook(self._hook_post_step))
            self._install_forward_hook()
            self._patch(torch.Tensor, "backward", self._wrap_tensor_backward)
            self._patch(torch.autograd, "backward", self._wrap_autograd_backward)
            self._patch(dl.DataLoader, "__iter__", self._wrap_loader_iter)
            self._patch(dl._BaseDataLoaderIter, "__next__", self._wrap_iter_next)
            scaler = getattr(getattr(torch, "amp", None), "GradScaler", None)
            if scaler is not None and hasattr(scaler, "scale"):
                self._patch(scaler, "scale", self._wrap_scaler_scale)
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook and restore every patched attribute (idempotent)."""
        global _ACTIVE
        self.closed = True
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._fwd_handle is not None:
            self._fwd_handle.remove()
            self._fwd_handle = None
        for owner, name, orig, owned, wrapper in reversed(self._patches):
            current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            if current is not wrapper:
                continue  # someone patched over us: leave theirs (ours passes through once closed)
            if owned:
                setattr(owner, name, orig)
            else:
                delattr(owner, name)
        self._patches.clear()
        self.captured.clear()
        self._last_scaled = None
        if _ACTIVE is self:
            _ACTIVE = None
        self.attached = False

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        owned = name in owner.__dict__ if isinstance(owner, type) else True
        orig = owner.__dict__[name] if (isinstance(owner, type) and owned) else getattr(owner, name)
        wrapper = make(getattr(owner, name))
        setattr(owner, name, wrapper)
        self._patches.append((owner, name, orig, owned, wrapper))

    def _internal(self, exc: BaseException) -> None:
        """A bug in a check must never break the training: record it, stop watching."""
        import traceback

        self.errors.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        self.closed = True

    # ------------------------------------------------------------------ forward hook
    def _install_forward_hook(self) -> None:
        if self._fwd_handle is None:
            from torch.nn.modules import module as module_mod

            self._fwd_handle = module_mod.register_module_forward_hook(self._hook_forward)

    def _update_forward_hook(self) -> None:
        """Keep the global forward hook only while it is useful: discovering the model (first steps),
        or capturing module outputs where that is free (CPU) or armed after a non-finite loss."""
        need = self.step < 2 or self._capturing()
        if need and self._fwd_handle is None and not self.closed:
            self._install_forward_hook()
        elif not need and self._fwd_handle is not None:
            self._fwd_handle.remove()
            self._fwd_handle = None
            self.captured.clear()

    def _capturing(self) -> bool:
        if not self._want_capture or self.localised:
            return False
        return self.armed > 0 or self.immediate is not False

    def _hook_forward(self, module, inputs, output) -> None:
        if self.closed:
            return
        if self.step < 2:
            self.modules_seen.add(module)
        if self._capturing() and torch.is_grad_enabled():
            cap = self.captured
            if len(cap) >= _CAPTURE_LIMIT:
                del cap[: _CAPTURE_LIMIT // 2]
            cap.append((module, inputs, output))

    # ------------------------------------------------------------------ backward
    def _wrap_tensor_backward(self, orig):
        mon = self

        @functools.wraps(orig)
        def backward(self, gradient=None, *args, **kwargs):
            tls = mon._tls
            if mon.closed or getattr(tls, "depth", 0):
                return orig(self, gradient, *args, **kwargs)
            tls.depth = 1
            try:
                mon._before_backward(self, gradient is None)
                return orig(self, gradient, *args, **kwargs)
            finally:
                tls.depth = 0
                mon._after_backward()

        return backward

    def _wrap_autograd_backward(self, orig):
        mon = self

        @functools.wraps(orig)
        def backward(tensors, grad_tensors=None, *args, **kwargs):
            tls = mon._tls
            if mon.closed or getattr(tls, "depth", 0):
                return orig(tensors, grad_tensors, *args, **kwargs)
            tls.depth = 1
            try:
                loss = tensors
                if isinstance(tensors, (list, tuple)):
                    loss = tensors[0] if len(tensors) == 1 else None
                    if isinstance(grad_tensors, (list, tuple)) and all(g is None for g in grad_tensors):
                        grad_tensors_given = False
                    else:
                        grad_tensors_given = grad_tensors is not None
                else:
                    grad_tensors_given = grad_tensors is not None
                mon._before_backward(loss if isinstance(loss, torch.Tensor) else None, not grad_tensors_given)
                return orig(tensors, grad_tensors, *args, **kwargs)
            finally:
                tls.depth = 0
                mon._after_backward()

        return backward

    def _before_backward(self, tensor: Optional[torch.Tensor], implicit: bool) -> None:
        if self.closed:
            return
        try:
            for f in self._ev_backward_start:
                f()
            if tensor is None or not implicit or tensor.numel() != 1 or not tensor.is_floating_point():
                return
            scaled = self._last_scaled
            self._last_scaled = None
            if scaled is not None and scaled[0] is tensor:
                tensor = scaled[1]  # GradScaler: record the loss, not loss * scale
            site = self.sites.find(1)
            self.last_loss_site = site
            self._record_loss(tensor.detach(), site)
        except Exception as exc:  # pragma: no cover - defensive
            self._internal(exc)

    def _after_backward(self) -> None:
        if self.closed:
            return
        try:
            for f in self._ev_backward_end:
                f()
            self.captured.clear()
        except Exception as exc:  # pragma: no cover - defensive
            self._internal(exc)

    def _record_loss(self, t: torch.Tensor, site: Site) -> None:
        cb = self.current_batch
        if cb is not None:
            st, pass_no, batch, size, full = cb
            epoch = self._epoch_of.get((st.key, pass_no))
            if epoch is None:
                epoch = self._epoch_of[(st.key, pass_no)] = len(self._epoch_of) + 1
            self.current_epoch = epoch
            rec = LossRecord(self.loss_count, self.step + 1, epoch, st.key, batch, size, full, site)
        else:
            rec = LossRecord(self.loss_count, self.step + 1, None, None, None, None, None, site)
        self.loss_count += 1
        if self.immediate is None:
            self.immediate = t.device.type == "cpu" or self.every == 1
        if self.immediate or self.armed > 0:
            v = float(t)  # free on the CPU; on an accelerator only while armed (after a failure)
            rec.value = v
            if self.armed > 0:
                self.armed -= 1
            if not math.isfinite(v) and not self.localised:
                self._scan(rec)
        else:
            rec.tensor = t.reshape(())
        self.losses_pending.append(rec)
        if len(self.losses_pending) >= 4 * self.every and not self.steps_pending:
            self.flush()  # backward without optimizer steps: flush anyway

    def _scan(self, rec: LossRecord) -> None:
        """The loss of this step is non-finite: find the first module (in the order the forward passes
        finished, i.e. innermost first) whose output was non-finite."""
        if not self.captured:
            return
        rec.scanned = True
        self.localised = True
        self.armed = 0
        for module, inputs, output in self.captured:
            if _nonfinite(output):
                params_ok = True
                for p in module.parameters(recurse=False):
                    if _nonfinite(p.detach()):
                        params_ok = False
                        break
                rec.module = {
                    "name": self.module_name(module),
                    "type": type(module).__name__,
                    "inputs_finite": not _nonfinite(inputs),
                    "params_finite": params_ok,
                }
                break
        self.captured.clear()

    def arm_localisation(self) -> None:
        """Called by TL101 when a flushed loss was non-finite and nothing was localised yet."""
        if not self.localised and self.armed == 0 and not self.immediate:
            self.armed = _ARM_BACKWARDS
            self._update_forward_hook()

    # ------------------------------------------------------------------ optimizer hooks
    def _opt_state(self, opt) -> Optional[OptState]:
        st = self.opts.get(opt)
        if st is not None:
            return st
        if opt in self._ignored_opts:
            return None
        if self._only_opts is not None and opt not in self._only_opts:
            self._ignored_opts.add(opt)
            return None
        st = OptState(opt, len(self.opt_states), primary=not self.opt_states)
        self.opts[opt] = st
        self.opt_states.append(st)
        return st

    def _hook_pre_step(self, opt, args, kwargs) -> None:
        if self.closed:
            return None
        try:
            st = self._opt_state(opt)
            if st is None:
                return None
            if st.steps == 0 and st.site is UNKNOWN:
                st.site = self.sites.find(1)
                for f in self._ev_optimizer:
                    f(st)
            for f in self._ev_pre_step:
                f(st)
            self._record_norms(st, opt)
        except Exception as exc:
            self._internal(exc)
        return None

    def _hook_post_step(self, opt, args, kwargs) -> None:
        if self.closed:
            return
        try:
            st = self.opts.get(opt)
            if st is None:
                return
            st.steps += 1
            for f in self._ev_post_step:
                f(st)
            self.captured.clear()
            if st.primary:
                self.step += 1
                if self.step == 2:
                    self._build_names()  # the model is known by now; name it while it is alive
                if self.step % self.every == 0:
                    self.flush()
                if self.step <= 2 or self._fwd_handle is not None:
                    self._update_forward_hook()
        except Exception as exc:
            self._internal(exc)

    def _plan(self, st: OptState, opt) -> Tuple[Any, List[Any], bool]:
        """The optimizer's parameters as a flat list, rebuilt only when its param groups change."""
        groups = opt.param_groups
        key = tuple((id(g["params"]), len(g["params"])) for g in groups)
        plan = st.plan
        if plan is None or plan[0] != key:
            params = [p for g in groups for p in g["params"]]
            dtypes = {(p.device, p.dtype) for p in params}
            plan = st.plan = (key, params, len(dtypes) <= 1)
        return plan

    def _record_norms(self, st: OptState, opt) -> None:
        _, params, uniform = self._plan(st, opt)
        grads = [p.grad for p in params]
        if any(g is None or g.is_sparse for g in grads):
            pairs = [(p, g) for p, g in zip(params, grads) if g is not None and not g.is_sparse]
            params = [p for p, _ in pairs]
            grads = [g for _, g in pairs]
            if not grads:
                return
        with torch.no_grad():
            if uniform:  # the usual case: one device, one dtype
                ordered, vecs = params, [(grads[0].device, _foreach_norms(grads))]
            else:
                ordered, vecs = [], []
                for ps, gs in _grouped(params, grads):
                    vecs.append((gs[0].device, _foreach_norms(gs)))
                    ordered.extend(ps)
        # the norms stay on the device as 0-dim tensors: stacked and copied once per flush
        rec = StepRecord(st, st.steps + 1, self.epoch(), ordered, vecs, self.loss_count)
        rec.site = self.last_loss_site
        cb = self.current_batch
        if cb is not None and cb[3] is not None and cb[4] is not None and cb[3] < cb[4]:
            rec.short = True
        self.steps_pending.append(rec)

    # ------------------------------------------------------------------ data loading
    def _wrap_loader_iter(self, orig):
        mon = self

        @functools.wraps(orig)
        def __iter__(loader):
            it = orig(loader)
            if not mon.closed:
                try:
                    st = mon.loaders.get(loader)
                    if st is None:
                        mon._loader_keys += 1
                        st = LoaderState(mon._loader_keys, None)
                        mon.loaders[loader] = st
                    st.full = getattr(loader, "batch_size", None)
                    st.epoch += 1
                    st.batch = -1
                    mon.iters[it] = st
                except Exception as exc:  # pragma: no cover - defensive
                    mon._internal(exc)
            return it

        return __iter__

    def _wrap_iter_next(self, orig):
        mon = self

        @functools.wraps(orig)
        def __next__(it):
            if mon.closed:
                return orig(it)
            batch = orig(it)
            try:
                mon._on_batch(it, batch)
            except Exception as exc:  # pragma: no cover - defensive
                mon._internal(exc)
            return batch

        return __next__

    def _on_batch(self, it, batch) -> None:
        st = self.iters.get(it)
        if st is None:  # iterator created before watching began
            self._loader_keys += 1
            sampler = getattr(it, "_index_sampler", None)
            st = LoaderState(self._loader_keys, getattr(sampler, "batch_size", None))
            st.epoch = 1
            self.iters[it] = st
        st.batch += 1
        if self.captured:
            self.captured.clear()  # a new batch: the outputs of earlier forward passes are not its
        full = st.full if isinstance(st.full, int) else None
        self.current_batch = (st, st.epoch, st.batch, batch_size_of(batch), full)

    def epoch(self) -> Optional[int]:
        return self.current_epoch

    def _wrap_scaler_scale(self, orig):
        mon = self

        @functools.wraps(orig)
        def scale(self, outputs):
            out = orig(self, outputs)
            if not mon.closed and isinstance(outputs, torch.Tensor) and isinstance(out, torch.Tensor):
                mon._last_scaled = (out, outputs)
            return out

        return scale

    # ------------------------------------------------------------------ flush: device -> host, checks
    def flush(self) -> None:
        """Copy the pending device values to the host (one transfer per device) and feed the checks."""
        losses, self.losses_pending = self.losses_pending, []
        steps, self.steps_pending = self.steps_pending, []
        if not losses and not steps and self.step == 0:
            return
        with torch.no_grad():
            self._fetch_losses(losses)
            self._fetch_norms(steps)
            param_checks = self._check_params()
        for r in losses:
            self.history.add_loss(r)
            for f in self._ev_loss:
                f(r)
        for r in steps:
            self.history.add_step(r)
            for f in self._ev_step:
                f(r)
            r.params = []  # drop the references to the parameters
        for pc in param_checks:
            for f in self._ev_params:
                f(pc)

    @staticmethod
    def _fetch_losses(losses: List[LossRecord]) -> None:
        by_device: Dict[Any, List[LossRecord]] = {}
        for r in losses:
            if r.tensor is not None:
                by_device.setdefault(r.tensor.device, []).append(r)
        for recs in by_device.values():
            values = torch.stack([r.tensor for r in recs]).float().cpu().tolist()
            for r, v in zip(recs, values):
                r.value = v
                r.tensor = None

    @staticmethod
    def _fetch_norms(steps: List[StepRecord]) -> None:
        by_device: Dict[Any, List[torch.Tensor]] = {}
        for r in steps:
            for dev, norms in r.vecs:
                by_device.setdefault(dev, []).extend(norms)
        host: Dict[Any, List[float]] = {}
        for dev, norms in by_device.items():
            host[dev] = torch.stack(norms).float().cpu().tolist()
        offsets = {dev: 0 for dev in host}
        isfinite = math.isfinite
        for r in steps:
            if len(r.vecs) == 1:
                dev, norms = r.vecs[0]
                o = offsets[dev]
                values = host[dev][o:o + len(norms)]
                offsets[dev] = o + len(norms)
            else:
                values = []
                for dev, norms in r.vecs:
                    o = offsets[dev]
                    values.extend(host[dev][o:o + len(norms)])
                    offsets[dev] = o + len(norms)
            r.vecs = []
            total = math.fsum(x * x for x in values)
            r.total = math.sqrt(total) if isfinite(total) else total
            if not isfinite(r.total):
                r.bad = [p for p, x in zip(r.params, values) if not isfinite(x)]
                if not r.bad:  # a finite but huge gradient whose square overflowed
                    r.total = math.inf

    def _check_params(self) -> List[ParamCheck]:
        """Are the parameters of each optimizer still finite (one fused norm pass per flush)?"""
        out: List[ParamCheck] = []
        if not self._ev_params:
            return out
        for st in self.opt_states:
            opt = st.opt
            if opt is None or st.params_bad or st.steps == 0:
                continue
            params = [p for g in opt.param_groups for p in g["params"]
                      if p.layout == torch.strided and (p.is_floating_point() or p.is_complex())]
            if not params:
                continue
            tensors = [p.detach() for p in params]
            ordered: List[Any] = []
            vecs: List[torch.Tensor] = []
            for ps, ts in _grouped(params, tensors):
                vecs.append(torch.stack(_foreach_norms(ts)))
                ordered.extend(ps)
            values = torch.cat([v.to("cpu") for v in vecs]).tolist() if len(vecs) > 1 else vecs[0].cpu().tolist()
            bad = [p for p, x in zip(ordered, values) if not math.isfinite(x)]
            bad = [p for p in bad if _nonfinite(p.detach())]  # not just a norm that overflowed
            if bad:
                st.params_bad = True
                out.append(ParamCheck(st, st.steps, st.param_ok_step, self.epoch(), bad))
            else:
                st.param_ok_step = st.steps
        return out

    # ------------------------------------------------------------------ names
    def _roots(self) -> List[Any]:
        mods = list(self.models) + [m for m in list(self.modules_seen) if all(m is not x for x in self.models)]
        inner = set()
        for m in mods:
            for c in m.modules():
                if c is not m:
                    inner.add(id(c))
        return [m for m in mods if id(m) not in inner]

    def _build_names(self) -> None:
        """Qualified names of the modules and parameters of the models seen so far (kept with weak
        references, so that names survive the models going out of scope before the report)."""
        roots = self._roots()
        many = len(roots) > 1
        for root in roots:
            prefix = type(root).__name__ + "." if many else ""
            for name, m in root.named_modules():
                self._names.setdefault(id(m), (weakref.ref(m), prefix + name if name else type(root).__name__))
            for name, p in root.named_parameters():
                self._pnames.setdefault(id(p), (weakref.ref(p), prefix + name))

    @staticmethod
    def _lookup(table: Dict[int, Tuple[Any, str]], obj: Any) -> Optional[str]:
        e = table.get(id(obj))
        if e is None:
            return None
        if e[0]() is not obj:  # an id reused by a new object
            del table[id(obj)]
            return None
        return e[1]

    def module_name(self, module) -> str:
        name = self._lookup(self._names, module)
        if name is None:
            self._build_names()
            name = self._lookup(self._names, module)
        return name or type(module).__name__

    def param_name(self, p) -> str:
        name = self._lookup(self._pnames, p)
        if name is None:
            self._build_names()
            name = self._lookup(self._pnames, p)
        return name or f"<parameter of shape {tuple(p.shape)}>"

    # ------------------------------------------------------------------ results
    def close(self) -> None:
        """Flush what is pending, let the checks finish, detach everything."""
        try:
            if not self.closed:
                self.flush()
                for f in self._ev_finish:
                    f()
        except Exception as exc:  # pragma: no cover - defensive
            self._internal(exc)
        finally:
            self.detach()

    def diagnostics(self) -> List[Any]:
        if not self.closed:
            try:
                self.flush()
            except Exception as exc:  # pragma: no cover - defensive
                self._internal(exc)
        out: List[Any] = []
        for c in self.checks:
            try:
                out.extend(c.diagnostics())
            except Exception as exc:  # pragma: no cover - defensive
                self.errors.append(f"{c.code}: {exc!r}")
        out.sort(key=lambda d: ((d.runtime or {}).get("step") or 0, d.code))
        return out

    @property
    def epochs(self) -> int:
        return len(self._epoch_of)
