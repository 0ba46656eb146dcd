"""The `watch()` API: attach, detach, numbers unchanged, nesting, restriction to given objects."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import runtime_scenarios as S  # noqa: E402
from conftest import codes  # noqa: E402

from trainlint.runtime import watch  # noqa: E402


def _attachment_points():
    from torch.nn.modules import module as module_mod
    from torch.optim import optimizer as optim_mod
    from torch.utils.data import dataloader as dl

    return {
        "Tensor.backward": torch.Tensor.__dict__["backward"],
        "autograd.backward": torch.autograd.backward,
        "DataLoader.__iter__": dl.DataLoader.__dict__["__iter__"],
        "_BaseDataLoaderIter.__next__": dl._BaseDataLoaderIter.__dict__["__next__"],
        "GradScaler.scale": torch.amp.GradScaler.__dict__["scale"],
        "forward hooks": len(module_mod._global_forward_hooks),
        "step pre hooks": len(optim_mod._global_optimizer_pre_hooks),
        "step post hooks": len(optim_mod._global_optimizer_post_hooks),
    }


def test_every_hook_is_detached_after_watch():
    before = _attachment_points()
    with watch(config=False):
        during = _attachment_points()
        S.healthy(epochs=1)
    assert during["Tensor.backward"] is not before["Tensor.backward"]
    assert during["forward hooks"] == before["forward hooks"] + 1 or during["forward hooks"] == before["forward hooks"]
    assert _attachment_points() == before


def test_hooks_are_detached_when_the_block_raises():
    before = _attachment_points()
    with pytest.raises(RuntimeError, match="inside"):
        with watch(config=False) as w:
            S.no_zero_grad(steps=3)
            raise RuntimeError("inside")
    assert _attachment_points() == before
    assert codes(w.findings) == ["TL103"]  # found before the error


def test_numbers_are_unchanged_by_watching():
    plain = S.healthy(epochs=2)
    with watch(config=False):
        watched = S.healthy(epochs=2)
    assert plain == watched


def test_findings_are_available_while_watching_and_nested_watch_shares_them():
    with watch(config=False, every=1000) as outer:
        S.no_zero_grad(steps=4)
        assert codes(outer.findings) == ["TL103"]  # flushes what is pending
        with watch(config=False) as inner:  # e.g. a script using watch() under `trainlint run`
            S.fp16_adam(steps=2)
        assert inner.monitor is outer.monitor
        assert torch.Tensor.backward is not None
    assert codes(outer.findings) == ["TL103", "TL107"]


def test_explicit_optimizer_restricts_the_checks():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.01)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.01)
    with watch(model=a, optimizer=opt_a, config=False) as w:
        for _ in range(4):
            x = torch.randn(8, 4)
            opt_a.zero_grad()
            a(x).pow(2).mean().backward()
            opt_a.step()
            b(x).pow(2).mean().backward()  # never cleared, but b's optimizer is not watched
            opt_b.step()
    assert w.findings == []
    assert w.steps == 4


def test_grad_scaler_loss_is_recorded_unscaled():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    losses = []
    with watch(config=False) as w:
        for _ in range(3):
            opt.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
    assert list(w.monitor.history.loss_value) == pytest.approx(losses)
    assert w.findings == []


def test_every_one_and_backward_without_optimizer():
    model = torch.nn.Linear(4, 1)
    with watch(config=False, every=1) as w:
        for _ in range(3):
            torch.autograd.backward(model(torch.randn(2, 4)).sum())  # the functional form
    assert len(w.monitor.history.loss_value) == 3
    assert w.findings == []


def test_static_side_and_settings_do_not_import_torch():
    code = ("import sys; import trainlint.cli, trainlint.runtime; "
            "from trainlint.runtime.settings import DEFAULTS, resolve; resolve({'every': 5}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _as_on_an_accelerator(w):
    """Make the monitor behave as with a CUDA loss: values stay on the device until a flush."""
    w.monitor.immediate = False
    return w


def test_deferred_mode_reads_device_values_only_when_flushing(monkeypatch):
    """The accelerator path (losses and norms kept as tensors, read every `every` steps): no host read
    of a tensor value from trainlint outside `Monitor.flush` (on CUDA each one would be a sync)."""
    import os

    runtime_dir = os.path.dirname(__import__("trainlint.runtime.monitor").runtime.monitor.__file__)
    outside = []

    def spy(name):
        orig = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            f = sys._getframe(1)
            if f.f_code.co_filename.startswith(runtime_dir):
                g, in_flush = f, False
                while g is not None:
                    in_flush = in_flush or g.f_code.co_name == "flush"
                    g = g.f_back
                if not in_flush:
                    outside.append((name, f.f_code.co_name))
            return orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in ("item", "tolist", "cpu", "__float__", "__bool__", "numpy"):
        spy(name)
    with watch(config=False, every=10) as w:
        _as_on_an_accelerator(w)
        S.healthy(epochs=2)
        S.no_zero_grad(steps=5)
    monkeypatch.undo()
    assert outside == []
    assert codes(w.findings) == ["TL103"]
    assert len(w.monitor.history.loss_value) == 27


def test_deferred_mode_localises_the_next_non_finite_step():
    with watch(config=False, every=2) as w:
        _as_on_an_accelerator(w)
        S.log_underflow(steps=12, bad_step=6)
    d = [d for d in w.findings if d.code == "TL101"][0]
    ev = d.runtime["evidence"]
    assert d.runtime["step"] == 6  # the first non-finite loss (0-based, as the script counts), read later
    assert ev["module_seen_at_step"] > 6  # examined as it happened once armed
    assert "module" in ev
