"""Event sources: everything the runtime mode attaches to torch, and nothing else.

Each source turns one thing torch does into one call on a sink (the `Monitor`), with no judgement:
- a global module forward hook (`register_module_forward_hook`), or a wrapper on `Module._call_impl`
  for a hook that only records (`light`)                        -> sink.forward(module, inputs, output)
  (installed and removed on the sink's request: `want_forward(bool)`);
- global optimizer step pre/post hooks                           -> sink.pre_step(opt, closure),
                                                                    sink.post_step(opt)
- wrappers on `torch.Tensor.backward` and `torch.autograd.backward` -> sink.backward_start(loss, implicit,
                                                                    calling frame),
                                                                    sink.backward_end() (only while
                                                                    `sink.wants_backward_end`)
- wrappers on `DataLoader.__iter__` and `_BaseDataLoaderIter.__next__` -> sink.loader_iter(loader, it),
                                                                    sink.batch(it, batch)
- a wrapper on `torch.amp.GradScaler.scale`                      -> sink.scaled(scaled, unscaled)
- a wrapper on `torch.nn.utils.clip_grad_norm_`                  -> sink.clipped(total_norm)
- forward pre-hooks on the modules the sink asks for (`watch_module`) -> the callback it gives
- only when the sink asks (`sink.wants_activations`): wrappers on `torch.softmax`, `F.softmax`,
  `Tensor.softmax`, `torch.sigmoid`, `Tensor.sigmoid` (`nn.Softmax`, `nn.Sigmoid` and `F.sigmoid` call
  them); they pass straight through unless `sink.activation_due` -> sink.activation(kind, input, output,
                                                                    args, kwargs)
- a wrapper on `torch.jit.script` that compiles with the original functions: TorchScript cannot compile
  a Python wrapper (`*args`), so a scripted module calls `F.softmax` itself, unwatched

What a loss is (a cross-entropy over C classes) is read from its autograd graph at backward(), not from
a wrapper on `F.cross_entropy`: a loss computed in a TorchScript module is recognised too.

Every wrapper passes straight through once the sink is closed, and every callback is guarded: a bug
in trainlint is recorded by `sink.internal(exc)` and never breaks the training. `detach()` restores
every patched attribute and removes every hook (idempotent).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from sys import _getframe
from typing import Any, Callable, List, Optional, Tuple

import torch


def _register_forward(hook: Callable[..., None]) -> Any:
    from torch.nn.modules import module as module_mod

    return module_mod.register_module_forward_hook(hook)


def _call_impl_wrappable() -> bool:
    """Does `Module.__call__` look `_call_impl` up at each call (torch >= 2.1: `_wrapped_call_impl` calls
    `self._call_impl`)? Before that, `__call__` *was* `_call_impl`, and wrapping it would not be seen;
    such a torch gets the global forward hook."""
    from torch.nn.modules.module import Module

    wrapped = Module.__dict__.get("_wrapped_call_impl")
    code = getattr(wrapped, "__code__", None)
    return callable(Module.__dict__.get("_call_impl")) and code is not None and "_call_impl" in code.co_names


class _CallImplHandle:
    """`remove()` puts `Module._call_impl` back, unless someone wrapped it over us since (then ours
    stays, and passes straight through once the sink is closed)."""

    def __init__(self, owner: Any, orig: Any, wrapper: Any):
        self.owner, self.orig, self.wrapper = owner, orig, wrapper

    def remove(self) -> None:
        if self.owner.__dict__.get("_call_impl") is self.wrapper:
            self.owner._call_impl = self.orig


class Sources:
    def __init__(self, sink: Any):
        self.sink = sink
        self._tls = threading.local()
        self._patches: List[Tuple[Any, str, Any, bool, Any]] = []
        self._handles: List[Any] = []
        self._fwd_handle = None
        self.forward_hook: Optional[Callable[..., None]] = None
        self._autograd_orig: Any = None  # `torch.autograd.backward` as found, and our wrapper of it
        self._autograd_wrapper: Any = None

    # ------------------------------------------------------------------ attach / detach
    def attach(self) -> None:
        from torch.optim import optimizer as optim_mod
        from torch.utils.data import dataloader as dl

        try:
            self._handles.append(optim_mod.register_optimizer_step_pre_hook(self._hook_pre_step))
            self._handles.append(optim_mod.register_optimizer_step_post_hook(self._hook_post_step))
            self.want_forward(True)
            self._patch(torch.Tensor, "backward", self._wrap_tensor_backward)
            self._patch(torch.autograd, "backward", self._wrap_autograd_backward)
            self._patch(dl.DataLoader, "__iter__", self._wrap_loader_iter)
            self._patch(dl._BaseDataLoaderIter, "__next__", self._wrap_iter_next)
            scaler = getattr(getattr(torch, "amp", None), "GradScaler", None)
            if scaler is not None and hasattr(scaler, "scale"):
                self._patch(scaler, "scale", self._wrap_scaler_scale)
            import torch.nn.utils as nn_utils

            clip_mod = getattr(nn_utils, "clip_grad", None)
            for owner in (nn_utils, clip_mod):
                if owner is not None and callable(getattr(owner, "clip_grad_norm_", None)):
                    self._patch(owner, "clip_grad_norm_", self._wrap_clip)
            import torch.nn.functional as F

            if getattr(self.sink, "wants_activations", False):
                for owner, name in ((torch, "softmax"), (F, "softmax"), (torch.Tensor, "softmax"),
                                    (torch, "sigmoid"), (torch.Tensor, "sigmoid")):
                    if callable(getattr(owner, name, None)):
                        self._patch(owner, name, functools.partial(self._wrap_activation, name))
            jit = getattr(torch, "jit", None)
            if jit is not None and callable(getattr(jit, "script", None)):
                self._patch(jit, "script", self._wrap_script)
        except BaseException:
            self.detach()
            raise

    def _guarded(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call back the sink unless it is closed; a bug in trainlint is recorded, never raised."""
        if self.sink.closed:
            return
        try:
            callback(*args)
        except Exception as exc:  # pragma: no cover - defensive
            self.sink.internal(exc)

    def watch_module(self, module: Any, callback: Callable[[Any, Any], None]) -> Any:
        """A forward pre-hook on one module: callback(module, inputs) before each of its calls. Returns
        its handle, for `unwatch`."""
        def pre_hook(mod, inputs):
            self._guarded(callback, mod, inputs)
            return None

        handle = module.register_forward_pre_hook(pre_hook)
        self._handles.append(handle)
        return handle

    def unwatch(self, handle: Any) -> None:
        handle.remove()
        try:
            self._handles.remove(handle)
        except ValueError:
            pass

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.want_forward(False)
        for owner, name, orig, owned, wrapper in reversed(self._patches):
            current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            if current is not wrapper:
                continue  # someone patched over us: leave theirs (ours passes through once closed)
            if owned:
                setattr(owner, name, orig)
            else:
                delattr(owner, name)
        self._patches.clear()

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        owned = name in owner.__dict__ if isinstance(owner, type) else True
        orig = owner.__dict__[name] if (isinstance(owner, type) and owned) else getattr(owner, name)
        wrapper = make(getattr(owner, name))
        setattr(owner, name, wrapper)
        self._patches.append((owner, name, orig, owned, wrapper))

    @contextlib.contextmanager
    def _unpatched(self):
        """The functions TorchScript may compile are the originals again for the duration."""
        saved = []
        for owner, name, orig, owned, wrapper in self._patches:
            current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            if current is wrapper and name != "script":
                saved.append((owner, name, wrapper))
                if owned:
                    setattr(owner, name, orig)
                else:
                    delattr(owner, name)
        try:
            yield
        finally:
            for owner, name, wrapper in saved:
                setattr(owner, name, wrapper)

    def _wrap_script(self, orig):
        src = self

        @functools.wraps(orig)
        def script(*args, **kwargs):
            if not src._patches:
                return orig(*args, **kwargs)
            with src._unpatched():
                return orig(*args, **kwargs)

        return script

    # ------------------------------------------------------------------ forward hook
    @property
    def forward_installed(self) -> bool:
        return self._fwd_handle is not None

    def want_forward(self, on: bool, hook: Optional[Callable[..., None]] = None, light: bool = False,
                     into: Optional[List[Any]] = None, limit: int = 0) -> None:
        """Install (or replace by `hook`, default `sink.forward`) or remove the forward hook: called with
        (module, positional inputs, output) after each module call.

        A global forward hook sends every module call down `Module._call_impl`'s slow path (~2 us a
        call); `light` wraps `Module._call_impl` itself instead (one Python call more, the fast path
        kept), for a hook that only records. With `into` (and `light`), the wrapper records without
        calling `hook`: it appends (module, inputs, output) to that list itself while gradients are
        enabled, and drops its older half beyond `limit` entries."""
        hook = hook or self.sink.forward
        if self._fwd_handle is not None and (not on or hook != self.forward_hook):
            self._fwd_handle.remove()
            self._fwd_handle = None
            self.forward_hook = None
        if on and self._fwd_handle is None:
            if light and _call_impl_wrappable():
                self._fwd_handle = self._wrap_call_impl(hook, into, limit)
            else:
                self._fwd_handle = _register_forward(hook)
            self.forward_hook = hook

    def _wrap_call_impl(self, hook: Callable[..., None], into: Optional[List[Any]], limit: int) -> Any:
        from torch.nn.modules.module import Module

        orig = Module.__dict__["_call_impl"]
        sink = self.sink

        if into is not None:
            grad_enabled = torch.is_grad_enabled
            append = into.append
            half = max(limit // 2, 1)

            def _call_impl(module, *args, **kwargs):
                out = orig(module, *args, **kwargs)
                if grad_enabled() and not sink.closed:
                    append((module, args, out))
                    if len(into) > limit:
                        del into[:half]
                return out
        else:
            def _call_impl(module, *args, **kwargs):
                out = orig(module, *args, **kwargs)
                try:
                    hook(module, args, out)
                except Exception as exc:  # pragma: no cover - defensive
                    sink.internal(exc)
                return out

        Module._call_impl = _call_impl
        return _CallImplHandle(Module, orig, _call_impl)

    # ------------------------------------------------------------------ optimizer hooks
    def _hook_pre_step(self, opt, args, kwargs) -> None:
        # torch passes the step's positional arguments with the optimizer itself first: step(closure)
        # gives args == (opt, closure)
        if args and args[0] is opt:
            args = args[1:]
        closure = args[0] if args else kwargs.get("closure")
        sink = self.sink
        if not sink.closed:
            try:  # (`_guarded`, inlined: this runs at every step)
                sink.pre_step(opt, closure is not None)
            except Exception as exc:  # pragma: no cover - defensive
                sink.internal(exc)
        return None

    def _hook_post_step(self, opt, args, kwargs) -> None:
        sink = self.sink
        if not sink.closed:
            try:
                sink.post_step(opt)
            except Exception as exc:  # pragma: no cover - defensive
                sink.internal(exc)

    # ------------------------------------------------------------------ backward
    def _wrap_tensor_backward(self, orig):
        src = self
        sink = self.sink
        autograd = torch.autograd
        has_torch_function = getattr(torch._C, "_has_torch_function_unary", None)
        # torch's own `Tensor.backward` (not a wrapper someone put there before us): for a plain tensor it
        # only calls `torch.autograd.backward`, which this wrapper then calls itself
        code = getattr(orig, "__code__", None)
        torchs_own = (has_torch_function is not None and code is not None
                      and code.co_filename.replace("\\", "/").endswith("torch/_tensor.py"))

        @functools.wraps(orig)
        def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None, **kwargs):
            # (`**kwargs`: an argument a later torch may add goes to torch's own `Tensor.backward`)
            tls = src._tls
            if sink.closed or getattr(tls, "depth", 0):
                return orig(self, gradient, retain_graph, create_graph, inputs, **kwargs)
            tls.depth = 1
            try:
                try:  # (`_guarded`, inlined: this runs at every step)
                    sink.backward_start(self, gradient is None, _getframe(1))
                except Exception as exc:  # pragma: no cover - defensive
                    sink.internal(exc)
                if torchs_own and not kwargs and not has_torch_function(self):
                    # a plain tensor, no torch-function mode: what torch's `Tensor.backward` does, without
                    # its frame and without passing through the `torch.autograd.backward` wrapper as well
                    run = autograd.backward
                    if run is src._autograd_wrapper:
                        run = src._autograd_orig
                    return run(self, gradient, retain_graph, create_graph, inputs=inputs)
                # a tensor subclass or a torch-function mode dispatches (and comes back here, or to the
                # `torch.autograd.backward` wrapper, as one call in progress); a wrapper put before ours runs
                return orig(self, gradient, retain_graph, create_graph, inputs, **kwargs)
            finally:
                tls.depth = 0
                if sink.wants_backward_end:
                    src._end()

        return backward

    def _wrap_autograd_backward(self, orig):
        src = self
        src._autograd_orig = orig

        @functools.wraps(orig)
        def backward(tensors, grad_tensors=None, *args, **kwargs):
            tls = src._tls
            if src.sink.closed or getattr(tls, "depth", 0):
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
                src._start(loss if isinstance(loss, torch.Tensor) else None, not grad_tensors_given,
                           _getframe(1))
                return orig(tensors, grad_tensors, *args, **kwargs)
            finally:
                tls.depth = 0
                if src.sink.wants_backward_end:
                    src._end()

        src._autograd_wrapper = backward
        return backward

    def _start(self, tensor: Optional[torch.Tensor], implicit: bool, caller: Any) -> None:
        sink = self.sink
        try:  # (the wrappers checked that the sink is open)
            sink.backward_start(tensor, implicit, caller)
        except Exception as exc:  # pragma: no cover - defensive
            sink.internal(exc)

    def _end(self) -> None:
        sink = self.sink
        if not sink.closed:
            try:
                sink.backward_end()
            except Exception as exc:  # pragma: no cover - defensive
                sink.internal(exc)

    # ------------------------------------------------------------------ data loading
    def _wrap_loader_iter(self, orig):
        src = self

        @functools.wraps(orig)
        def __iter__(loader):
            it = orig(loader)
            src._guarded(src.sink.loader_iter, loader, it)
            return it

        return __iter__

    def _wrap_iter_next(self, orig):
        sink = self.sink

        @functools.wraps(orig)
        def __next__(it):
            if sink.closed:
                return orig(it)
            batch = orig(it)
            try:
                sink.batch(it, batch)
            except Exception as exc:  # pragma: no cover - defensive
                sink.internal(exc)
            return batch

        return __next__

    # ------------------------------------------------------------------ AMP, clipping
    def _wrap_scaler_scale(self, orig):
        src = self

        @functools.wraps(orig)
        def scale(self, outputs):
            out = orig(self, outputs)
            if not src.sink.closed and isinstance(outputs, torch.Tensor) and isinstance(out, torch.Tensor):
                src.sink.scaled(out, outputs)
            return out

        return scale

    def _wrap_clip(self, orig):
        src = self

        @functools.wraps(orig)
        def clip_grad_norm_(*args, **kwargs):
            total = orig(*args, **kwargs)
            if isinstance(total, torch.Tensor):
                src._guarded(src.sink.clipped, total)
            return total

        return clip_grad_norm_

    def _wrap_activation(self, kind, orig):
        sink = self.sink

        @functools.wraps(orig)
        def activation(input, *args, **kwargs):
            out = orig(input, *args, **kwargs)
            if sink.activation_due and not sink.closed:
                self._guarded(sink.activation, kind, input, out, args, kwargs)
            return out

        return activation
