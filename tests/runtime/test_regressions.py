"""Runtime mode v2 (issue 16): each item of "Wrong today" and each new check, on a real tiny CPU run."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import runtime_scenarios as S  # noqa: E402
from conftest import codes  # noqa: E402

from trainlint.runtime import watch  # noqa: E402
from trainlint.runtime.checks.base import fmt  # noqa: E402


def watched(fn, *args, **kwargs):
    with watch(config=False) as w:
        fn(*args, **kwargs)
    return w.findings


def only(diags, code):
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in diags]
    return found[0]


def show(diags):
    return [(d.code, d.message) for d in diags]


# ------------------------------------------------------------------ healthy runs stay silent
HEALTHY = [
    (S.healthy, {}),
    (S.classifier_short_batch, {}),  # item 1: a 3-sample last batch with a near-zero loss
    (S.dice_fixed, {}),  # item 2: gradient norm rises ~20x from a small start as learning starts
    (S.full_batch_adam, {}),  # item 2: full-batch Adam near convergence, norm 0.02 -> 0.4
    (S.classifier, {}),
    (S.classifier, {"clip": 1.0}),  # clipping
    (S.classifier, {"lr": 1e-4}),  # a slow start near ln 10 is not a chance-level stall
    (S.accumulation, {"steps": 6, "accumulate": 4}),
    (S.gan, {}),
    (S.autocast_bf16, {}),
    (S.warmup_from_zero, {}),
    (S.frozen_layers, {}),
    (S.lbfgs, {}),
    (S.bf16_adam, {}),
    (S.bn_cnn, {}),  # BatchNorm on batches of 16
    (S.scripted_loss, {}),  # torch.jit.script of a module calling F.cross_entropy
    (S.optimizer_clears_in_step, {"set_to_none": False}),  # step() zeroes the gradients in place
    (S.optimizer_clears_in_step, {"set_to_none": True}),  # step() sets them to None
]


@pytest.mark.parametrize("fn,kw", HEALTHY, ids=[f"{f.__name__}{'-' + '-'.join(map(str, k.values())) if k else ''}"
                                                for f, k in HEALTHY])
def test_healthy_runs_are_silent(fn, kw):
    diags = watched(fn, **kw)
    assert diags == [], show(diags)


# ------------------------------------------------------------------ item 1: TL104 judges spikes, not dips
def test_tl104_ignores_a_short_batch_whose_loss_dips():
    with watch(config=False) as w:
        S.classifier_short_batch(epochs=8)
    assert "TL104" not in codes(w.findings)
    check = [c for c in w.monitor.checks if c.code == "TL104"][0]
    results = [r for rs in check.results.values() for r in rs]
    assert results and any(r.factor < 0.5 for r in results)  # the dips the old check counted


def test_tl104_message_shows_the_numbers_it_judged():
    d = only(watched(S.short_batch_double_division, epochs=4), "TL104")
    ev = d.runtime["evidence"]
    assert ev["median_spike_factor"] >= ev["threshold"] == 2.0
    assert f"{fmt(ev['median_spike_factor'])}x the median loss" in d.message
    assert "threshold 2x" in d.message and "below" not in d.message


# ------------------------------------------------------------------ item 2: TL105 needs a worse loss or a large norm
def test_tl105_says_why_the_spike_is_an_explosion():
    d = only(watched(S.lr_spike), "TL105")
    ev = d.runtime["evidence"]
    assert ev["reason"] in ("loss", "norm")
    if ev["reason"] == "loss":
        assert ev["loss_after"] >= 1.5 * ev["loss_before"] and "the loss got worse" in d.message
    else:
        assert ev["grad_norm"] >= 100 and "a norm that large" in d.message


def test_tl105_not_reported_when_the_loss_keeps_falling():
    with watch(config=False) as w:
        S.dice_fixed()
    check = [c for c in w.monitor.checks if c.code == "TL105"][0]
    h = w.monitor.history
    steps, norms = next(iter(h.norms.values()))
    assert max(norms[20:60]) > 10 * min(norms[:20])  # the rise the old check reported
    assert all(s.first is None for s in check.states.values())


# ------------------------------------------------------------------ item 3: a learning rate far too high
def test_tl109_loss_explodes_in_the_first_steps_without_nan():
    diags = watched(S.lr_too_high)
    d = only(diags, "TL109")
    ev = d.runtime["evidence"]
    assert d.runtime["step"] <= 3  # watched from the first step
    assert ev["factor"] >= 10 and math.isfinite(ev["peak_loss"])
    assert "TL101" not in codes(diags)


def test_tl110_loss_sits_at_chance_level():
    d = only(watched(S.lr_too_high), "TL110")
    ev = d.runtime["evidence"]
    assert ev["classes"] == 10 and ev["chance_loss"] == pytest.approx(math.log(10), rel=1e-5)
    assert abs(ev["median_loss"] - math.log(10)) <= 0.1 * math.log(10)
    assert ev["consecutive_losses"] >= 100
    assert "ln 10 = 2.3" in d.message
    line = S.__file__ and open(S.__file__).read().splitlines()[d.location.row - 1]
    assert line.strip() == "loss.backward()"


def test_tl110_judges_the_cross_entropy_when_the_loss_is_it_scaled_by_a_constant():
    with watch(config=False) as w:
        S.lr_too_high(divide_by=1.0)
    d = only(w.findings, "TL110")
    assert d.runtime["evidence"]["classes"] == 10
    # loss / 4 (Adam does not mind the scale): judged on the cross-entropy's own value, ~ln 10, not ln 10 / 4
    d = only(watched(S.lr_too_high, divide_by=4.0), "TL110")
    assert abs(d.runtime["evidence"]["median_loss"] - math.log(10)) <= 0.1 * math.log(10)


def test_tl110_not_reported_for_a_sane_learning_rate_or_without_cross_entropy():
    assert watched(S.lr_too_high, lr=1e-2) == []
    assert "TL110" not in codes(watched(S.healthy))  # MSE: no number of classes


# ------------------------------------------------------------------ item 4: zero_grad() between backward() and step()
@pytest.mark.parametrize("set_to_none,reason", [(True, "set-to-none-after-backward"),
                                                (False, "zeroed-after-backward")])
def test_tl108_zero_grad_between_backward_and_step(set_to_none, reason):
    diags = watched(S.zero_grad_before_step, steps=20, set_to_none=set_to_none)
    d = only(diags, "TL108")
    ev = d.runtime["evidence"]
    # a run shorter than `grad-every` (32): the clearing is tracked at steps 0-3 only, and every one of them
    # that tells was without an update. At step 0 nothing was watched before: gradients set to None show
    # (no gradient at all), a norm of 0 does not tell whether they were zeroed after backward() (not counted)
    looked, first = (4, 0) if set_to_none else (3, 1)
    assert ev["reason"] == reason and ev["steps_looked_at"] == ev["steps_without_update"] == looked
    assert d.runtime["step"] == first and ev["optimizer_steps"] == 20
    assert "zero_grad" in d.message and "after `loss.backward()`" in d.message
    assert codes(diags) == ["TL108"]  # not TL103 (nothing accumulated), not TL106 (nothing computed)
    assert d.runtime["confirms"] == "TL001"


def test_gradients_zeroed_after_backward_at_untracked_warm_up_steps_are_not_a_collapse():
    # a long warm-up whose steps 4.. are looked at for their norms only: their norms of 0 are TL108's
    with watch(config=False, grad_every=32, warmup_steps=50) as w:
        S.zero_grad_before_step(steps=80, set_to_none=False)
    assert codes(w.findings) == ["TL108"]


def test_tl108_optimizer_whose_parameters_never_get_a_gradient():
    d = only(watched(S.detached_output), "TL108")
    assert d.runtime["evidence"]["reason"] == "no-gradients"
    assert "`opt` (SGD)" in d.message and d.runtime["step"] == 0


def test_tl103_still_reports_uncleared_gradients_that_are_clipped():
    torch.manual_seed(0)
    model = S._mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    with watch(config=False) as w:
        for _ in range(8):
            model(torch.randn(16, 8)).pow(2).mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # in place, but not a clear
            opt.step()
    d = only(w.findings, "TL103")
    assert "clipping or scaling" in d.message


# ------------------------------------------------------------------ item 5: closures and clipping
def test_closure_step_reads_the_gradients_of_that_step():
    diags = watched(S.closure_nan_gradient, steps=8, bad_step=4)
    d = only(diags, "TL102")
    assert d.runtime["step"] == 4  # the step whose closure produced the NaN gradient, not the next one
    assert "the loss itself was finite" in d.message


def test_a_step_without_closure_is_read_before_it_runs():
    """torch hands the step hooks `args` with the optimizer first: a plain `step()` is not a closure
    step, so its gradients are read before it runs (an optimizer that frees its gradients in place at
    the end of step(), as some fused and sharded optimizers do, is not a step on zeroed gradients)."""

    class SGDThatClears(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            out = super().step(closure)
            for g in self.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        p.grad.zero_()
            return out

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = SGDThatClears(model.parameters(), lr=0.01)
    with watch(config=False) as w:
        for _ in range(12):
            opt.zero_grad()
            model(torch.randn(16, 8)).pow(2).mean().backward()
            opt.step()
        assert w.monitor.opt_states[0].closure is False
    assert w.findings == [], show(w.findings)
    with watch(config=False) as w:
        S.lbfgs(steps=3)
        assert w.monitor.opt_states[0].closure is True


def test_clipping_does_not_hide_an_explosion():
    diags = watched(S.clipped_lr_spike)
    d = only(diags, "TL105")
    ev = d.runtime["evidence"]
    assert ev["clipped_norm"] <= 1.0 + 1e-4 < ev["grad_norm"]
    assert d.runtime["step"] >= 30 and "before clipping" in d.message


# ------------------------------------------------------------------ item 6: TL101 points at an earlier cause
def test_tl101_after_a_divergence_points_at_it():
    diags = watched(S.diverge_to_nan)
    d = only(diags, "TL101")
    ev = d.runtime["evidence"]
    assert ev["explained_by"] in ("TL105", "TL109") and ev["explained_by_step"] < d.runtime["step"]
    assert f"it follows {ev['explained_by']}" in d.message
    assert "log of 0" not in d.message


def test_tl101_without_an_earlier_cause_keeps_its_own_diagnosis():
    d = only(watched(S.log_underflow, steps=10, bad_step=6), "TL101")
    assert "explained_by" not in d.runtime["evidence"] and "it follows" not in d.message


# ------------------------------------------------------------------ item 8: names and numbering
def test_optimizers_and_models_are_named_by_their_variables():
    d = only(watched(S.gan_not_cleared), "TL103")
    assert d.message.startswith("`optimizerD` (Adam).step() at step 1 (the 2nd optimizer step)")
    assert d.runtime["evidence"]["optimizer"] == "optimizerD"
    assert all(n.startswith("netD.") for n in d.runtime["evidence"]["parameters_checked"])


def test_two_models_of_one_class_get_distinct_parameter_names():
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)]  # no variable of their own
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with watch(config=False) as w:
        for step in range(6):
            for m, o in zip(models, opts):
                o.zero_grad()
                x = torch.randn(8, 4)
                if step == 4 and m is models[1]:
                    x[0, 0] = float("inf")
                m(x).pow(2).mean().backward()
                o.step()
    names = set()
    mon = w.monitor
    for m in models:
        names.update(mon.param_name(p) for p in m.parameters())
    assert len(names) == 4, names


# ------------------------------------------------------------------ TL111 bad input data, TL112 BatchNorm batches
def test_tl111_nan_in_the_data_with_its_batch_and_tl101_points_at_it():
    diags = watched(S.dirty_data, epochs=2, bad_row=437)
    d = only(diags, "TL111")
    ev = d.runtime["evidence"]
    assert ev["kind"] == "non-finite" and ev["batch"] == 437 // 64 and ev["epoch"] == 1
    assert ev["batches_with_non_finite"] == 2  # the same row, once per epoch
    line = open(S.__file__).read().splitlines()[d.location.row - 1]
    assert line.strip() == "for xb, yb in loader:"
    tl101 = only(diags, "TL101")
    assert tl101.runtime["evidence"]["explained_by"] == "TL111"


def test_tl111_a_feature_in_raw_units():
    d = only(watched(S.unnormalised), "TL111")
    ev = d.runtime["evidence"]
    assert ev["kind"] == "scale" and ev["feature"] == 5 and ev["factor"] > 1000
    assert ev["features_off"] == [5]


def test_tl111_a_feature_whose_square_overflows_is_reported():
    diags = watched(S.unnormalised, units=1e20)  # ~1e20: its square is beyond float32
    scale = [d for d in diags if d.code == "TL111" and d.runtime["evidence"]["kind"] == "scale"]
    assert len(scale) == 1 and scale[0].runtime["evidence"]["feature"] == 5


def test_tl111_a_feature_with_a_missing_value_still_gets_its_scale():
    diags = watched(S.unnormalised, missing_row=100)
    scale = [d for d in diags if d.code == "TL111" and d.runtime["evidence"]["kind"] == "scale"]
    assert len(scale) == 1 and scale[0].runtime["evidence"]["feature"] == 5
    assert 1000 < scale[0].runtime["evidence"]["factor"] < 1e5


def test_tl112_batchnorm_on_batches_of_two():
    d = only(watched(S.bn_cnn, batch_size=2), "TL112")
    ev = d.runtime["evidence"]
    assert ev["kind"] == "small-batch" and ev["smallest_batch"] == 2 and ev["module"] == "1"
    assert watched(S.bn_cnn, batch_size=16) == []


def test_tl112_a_last_batch_of_one_sample_is_named_before_batchnorm_raises():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        with watch(config=False) as w:
            S.bn_last_batch_of_one()
    d = only(w.findings, "TL112")
    assert d.runtime["evidence"]["kind"] == "single-value" and d.runtime["evidence"]["shape"] == [1, 16]
    assert d.runtime["step"] == 4 and d.runtime["confirms"] == "TL004"


def test_tl113_relus_die_under_a_learning_rate_far_too_high():
    diags = watched(S.lr_too_high)
    d = only(diags, "TL113")
    ev = d.runtime["evidence"]
    assert ev["dead_fraction"] >= 0.5 > ev["first_dead_fraction"] and ev["consecutive_checks"] >= 5
    assert ev["module"] in ("1", "3") and "(ReLU)" in d.message
    assert codes(diags) == ["TL109", "TL110", "TL113"]


def test_tl111_on_an_accelerator_checks_every_batch_on_the_device():
    with watch(config=False, every=5) as w:
        w.monitor.immediate = False  # as with a CUDA loss: values read at the flush only
        S.dirty_data(epochs=1, bad_row=437)
    d = only(w.findings, "TL111")
    assert d.runtime["evidence"]["batch"] == 6 and d.runtime["evidence"]["batches_with_non_finite"] == 1


# ------------------------------------------------------------------ the patches stay out of TorchScript's way
def _probabilities(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softmax(x, dim=1)


def test_torch_jit_script_compiles_under_watch_and_the_wrappers_come_back():
    import warnings

    import torch.nn.functional as F

    original = F.softmax
    with watch(config=False, select=["TL1", "TL115"]) as w:  # TL115 wraps F.softmax
        wrapped = F.softmax
        assert wrapped is not original
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+: torch.jit.script is deprecated
            scripted = torch.jit.script(_probabilities)
        assert F.softmax is wrapped  # the originals were put back only while compiling
        assert torch.allclose(scripted(torch.zeros(2, 4)), torch.full((2, 4), 0.25))
        S.scripted_loss(steps=5)
    assert F.softmax is original and torch.jit.script.__module__.startswith("torch")
    assert w.monitor.errors == []
    # the scripted module's cross-entropy is known as one (read from the autograd graph, not a wrapper)
    (tl110,) = [c for c in w.monitor.checks if c.code == "TL110"]
    assert [s.classes for s in tl110.series.values()] == [10]  # _classifier: 10 classes


def test_a_step_that_calls_super_step_is_one_step_and_a_step_that_raised_does_not_stick():
    S.optimizer_clears_in_step(steps=2)  # torch patches SGD.step too once an SGD exists
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    class Flaky(torch.optim.SGD):
        fail = True

        def step(self, closure=None):
            if Flaky.fail:
                Flaky.fail = False
                raise RuntimeError("a step that raised")
            return super().step(closure)

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(3))
    with watch(config=False) as mon:
        opt = Flaky([w], lr=0.1)
        for i in range(6):
            opt.zero_grad()
            (w ** 2).sum().backward()
            try:
                opt.step()
            except RuntimeError:
                pass
    assert mon.monitor.step == 5  # 6 calls, one raised before its post-step hooks ran
    assert mon.findings == [], show(mon.findings)


# ------------------------------------------------------------------ gradients looked at every `grad-every` steps
def test_gradients_are_looked_at_every_step_while_warming_up_then_every_grad_every_steps():
    with watch(config=False) as w:
        S.classifier(steps=100)
    steps, _ = w.monitor.history.norms["opt"]
    assert list(steps) == list(range(20)) + [32, 64, 96]  # then every 32nd (grad-every)
    with watch(config=False, grad_every=1) as w:
        S.classifier(steps=30)
    assert list(w.monitor.history.norms["opt"][0]) == list(range(30))


def test_tl103_and_tl108_count_the_steps_looked_at():
    d = only(watched(S.no_zero_grad, steps=100), "TL103")
    ev = d.runtime["evidence"]
    assert d.runtime["step"] == 1
    # the clearing tracked: steps 0-3, then 32, 64 and 96 (every 32nd; the other warm-up steps are looked at
    # for their norms only)
    assert ev["steps_looked_at"] == 7 and ev["steps_not_cleared"] == 6 and ev["optimizer_steps"] == 100
    assert "6 of the 6 steps looked at after the first" in d.message
    d = only(watched(S.zero_grad_before_step, steps=100), "TL108")
    ev = d.runtime["evidence"]
    assert d.runtime["step"] == 0 and ev["consecutive_steps"] == 97  # steps 0 to 96, the last look
    assert ev["steps_without_update"] == ev["steps_looked_at"] == 7 and ev["optimizer_steps"] == 100


def test_tl102_a_nan_gradient_in_a_step_not_looked_at_is_found_by_the_parameters_it_broke():
    # step 30 is not looked at (every 32nd step after the first 20): the loss of step 30 is finite, that of
    # step 31 NaN; the parameters are checked then, once
    diags = watched(S.nan_gradient, steps=40, bad_step=30)
    d = only(diags, "TL102")
    ev = d.runtime["evidence"]
    assert ev["kind"] == "parameter" and d.runtime["step"] == 30 and ev["last_finite_check_step"] == 29
    assert ev["gradients_looked_at_every_step"] is False
    assert "in the update of step 30, whose gradients were not looked at" in d.message
    assert "`grad-every = 1` tells which" in d.message
    t101 = only(diags, "TL101")
    assert t101.runtime["evidence"]["explained_by"] == "TL102" and t101.runtime["evidence"]["explained_by_step"] == 30
    # every step looked at: the gradient itself, at the same step
    with watch(config=False, grad_every=1) as w:
        S.nan_gradient(steps=40, bad_step=30)
    d = only(w.findings, "TL102")
    assert d.runtime["evidence"]["kind"] == "gradient" and d.runtime["step"] == 30
    assert "the loss itself was finite" in d.message
    # a step looked at after the warm-up: the gradient
    d = only(watched(S.nan_gradient, steps=40, bad_step=32), "TL102")
    assert d.runtime["evidence"]["kind"] == "gradient" and d.runtime["step"] == 32


def test_a_loss_that_jumps_gets_its_step_looked_at_between_the_scheduled_looks():
    # the learning rate jumps at step 25: the loss leaps at step 26, not a scheduled look (32, 64, ...)
    with watch(config=False) as w:
        S.lr_spike()
    looked = list(w.monitor.history.norms["opt"][0])
    assert looked[:21] == list(range(20)) + [26] and 25 not in looked
    assert only(w.findings, "TL105").runtime["step"] == 26
    # a healthy run: the scheduled looks (and at most a stray one, at a noisy batch)
    with watch(config=False) as w:
        S.classifier(steps=120)
    extra = [s for s in w.monitor.history.norms["opt"][0] if s >= 20 and s % w.monitor.grad_every]
    assert len(extra) <= 2 and not w.findings


def test_a_step_looked_at_for_its_loss_needs_the_loss_to_stay_worse_to_be_an_explosion():
    # one batch of wrong labels: looked at (its loss jumped), its gradient norm ~900x the running
    # median, but the loss is back at once: not an explosion (the step's own loss is why it was chosen)
    with watch(config=False) as w:
        losses = S.classifier(n=4096, wrong_labels_at=61)
    assert losses[61] > 100 * losses[60]
    looked = list(w.monitor.history.norms["opt"][0])
    assert 61 in looked and 61 % w.monitor.grad_every
    assert w.findings == []


def test_grad_every_is_a_runtime_setting(tmp_path):
    from trainlint.runtime.settings import DEFAULTS

    assert DEFAULTS["grad-every"] == 32
    with watch(config=False, grad_every=2) as w:
        S.classifier(steps=30)
    assert list(w.monitor.history.norms["opt"][0]) == list(range(20)) + list(range(20, 30, 2))


def test_tl113_counts_the_live_units_of_every_look_at_once():
    from trainlint.runtime.checks.tl113_dead_relu import _alive_counts

    looks = [torch.tensor([1.0, -1.0, 0.0, 2.0]), torch.tensor([-1.0, -2.0]), torch.tensor([3.0])]
    assert _alive_counts(looks) == [2, 0, 1] and _alive_counts([]) == []


def test_module_outputs_are_captured_without_a_global_forward_hook_and_module_call_is_restored():
    from torch.nn.modules import module as module_mod

    call_impl = module_mod.Module.__dict__["_call_impl"]
    with watch(config=False) as w:
        S.classifier(steps=5)
        assert module_mod.Module.__dict__["_call_impl"] is not call_impl  # capture, from the third step
        assert not module_mod._global_forward_hooks  # the discovery hook of the first two steps is gone
    assert module_mod.Module.__dict__["_call_impl"] is call_impl and not module_mod._global_forward_hooks
    assert w.findings == []


# ------------------------------------------------------------------ what a loss is, from its autograd graph
def test_a_cross_entropy_is_recognised_from_its_graph_in_every_form_torch_computes_it():
    import torch.nn.functional as F

    from trainlint.runtime.tensors import cross_entropy_of

    torch.manual_seed(0)
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    probs = torch.softmax(torch.randn(8, 5), 1)
    image = torch.randn(2, 5, 3, 3, requires_grad=True)
    seg = torch.randint(0, 5, (2, 3, 3))
    recognised = {
        "indices": (F.cross_entropy(x, y), (5, 1.0)),
        "class weights": (F.cross_entropy(x, y, weight=torch.rand(5)), (5, 1.0)),
        "segmentation (N, C, H, W)": (F.cross_entropy(image, seg), (5, 1.0)),
        "nll of log_softmax": (F.nll_loss(F.log_softmax(x, 1), y), (5, 1.0)),
        "label smoothing": (F.cross_entropy(x, y, label_smoothing=0.1), (5, 1.0)),
        "probabilities (mixup)": (F.cross_entropy(x, probs), (5, 1.0)),
        "divided by 4 (Lightning)": (F.cross_entropy(x, y) / 4, (5, 4.0)),
        "times 0.5": (0.5 * F.cross_entropy(x, y), (5, 2.0)),
    }
    for name, (loss, expected) in recognised.items():
        assert cross_entropy_of(loss) == expected, name
    learned = torch.ones((), requires_grad=True)
    not_one = {
        "sum-reduced (not comparable with ln C)": F.cross_entropy(x, y, reduction="sum"),
        "per-sample, then averaged by hand": F.cross_entropy(x, y, reduction="none").mean(),
        "cross-entropy plus another term": F.cross_entropy(x, y) + 0.1 * (x ** 2).mean(),
        "weighted sum of two terms": 0.9 * F.cross_entropy(x, y) + 0.1 * (x ** 2).mean(),
        "times a learned weight": F.cross_entropy(x, y) * learned,
        "soft cross-entropy written by hand": torch.sum(-probs * F.log_softmax(x, dim=-1), dim=-1).mean(),
        "binary cross-entropy": F.binary_cross_entropy_with_logits(x, torch.rand(8, 5)),
        "mse": F.mse_loss(x, torch.zeros(8, 5)),
        "one class": F.cross_entropy(torch.randn(4, 1, requires_grad=True), torch.zeros(4, dtype=torch.long)),
        "no graph": F.cross_entropy(x.detach(), y),
    }
    for name, loss in not_one.items():
        assert cross_entropy_of(loss) is None, name


def test_a_scaled_cross_entropy_is_judged_at_its_own_value_on_the_accelerator_path_too():
    with watch(config=False) as w:
        w.monitor.immediate = False  # values kept as tensors and read at the flush, as on CUDA
        S.lr_too_high(divide_by=4.0)
    d = only(w.findings, "TL110")
    assert abs(d.runtime["evidence"]["median_loss"] - math.log(10)) < 0.1 * math.log(10)


# ------------------------------------------------------------------ nothing kept alive, nothing replayed
def test_pending_losses_do_not_keep_the_batches_alive():
    import gc
    import weakref

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64 * 40, 20), torch.randint(0, 5, (64 * 40,)))
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with watch(config=False) as w:
        for i, (x, y) in enumerate(torch.utils.data.DataLoader(data, batch_size=64)):
            seen.append(weakref.ref(x))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            del x, y, loss
            if i == 30:
                gc.collect()
                assert len(w.monitor.losses_pending) > 20  # the flush is still to come
                assert sum(r() is not None for r in seen) <= 2  # the batch in use (kept for TL111), not 31


def test_module_outputs_are_dropped_at_every_backward_even_without_a_recorded_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(config=False) as w:
        for step in range(4):
            opt.zero_grad()
            for _ in range(4):  # accumulation, two losses per backward: no scalar loss to record
                out = model(torch.randn(8, 16))
                torch.autograd.backward([torch.nn.functional.cross_entropy(out, torch.randint(0, 5, (8,))),
                                         (out ** 2).mean()])
            if step == 3:
                assert w.monitor.captured == []
            opt.step()


def test_the_loss_graph_is_read_without_running_saved_tensor_hooks():
    # with non-reentrant checkpointing, unpacking a saved tensor recomputes the checkpointed forward
    from torch.utils.checkpoint import checkpoint

    calls = []

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(20, 5)

        def forward(self, x, y):
            calls.append(1)
            return torch.nn.functional.cross_entropy(self.out(x), y)

    def train():
        torch.manual_seed(0)
        head, body = Head(), torch.nn.Linear(20, 20)
        opt = torch.optim.SGD(list(head.parameters()) + list(body.parameters()), lr=0.1)
        for _ in range(10):
            loss = checkpoint(head, body(torch.randn(8, 20)), torch.randint(0, 5, (8,)), use_reentrant=False)
            opt.zero_grad()
            loss.backward()
            opt.step()

    train()
    plain = len(calls)
    calls.clear()
    with watch(config=False) as w:
        train()
    assert len(calls) == plain == 20 and w.monitor.errors == []
    (tl110,) = [c for c in w.monitor.checks if c.code == "TL110"]
    assert [s.classes for s in tl110.series.values()] == [5]  # still known: from the graph's metadata


def _one_line_two_kinds(kinds):
    """One backward() line whose loss is a cross-entropy ("ce") or an MSE ("mse"), step by step."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(config=False) as w:
        for kind in kinds:
            out = model(torch.randn(16, 8))
            if kind == "ce":
                loss = F.cross_entropy(out, torch.randint(0, 4, (16,)))
            else:
                loss = F.mse_loss(out, out.detach() + 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        w.monitor.flush(drain=True)
        (tl110,) = [c for c in w.monitor.checks if c.code == "TL110"]
        return sum(s.seen for s in tl110.series.values())


def test_a_line_whose_loss_alternates_between_kinds_has_every_cross_entropy_known():
    # what a line's loss is, is read from every loss until 8 agree: alternating kinds never agree
    assert _one_line_two_kinds(["ce", "mse"] * 40) == 40
    assert _one_line_two_kinds(["ce", "ce", "ce", "mse"] * 20) == 60
    assert _one_line_two_kinds((["ce"] * 7 + ["mse"]) * 10) == 70


def test_a_line_whose_loss_changes_kind_for_good_is_read_again_within_twenty_two_losses():
    # settled lines are read once in each block of 16 losses, at a place that moves by 7 from block to
    # block: two reads are at most 16 + 7 losses apart
    assert 80 - 22 <= _one_line_two_kinds(["mse"] * 40 + ["ce"] * 80) <= 80
    assert 40 <= _one_line_two_kinds(["ce"] * 40 + ["mse"] * 80) <= 40 + 22


def test_a_line_whose_loss_starts_alternating_after_it_settled_is_found_out():
    # 8 cross-entropies settle the line; then every other loss is an MSE (or every 4th): a read at a
    # fixed place in each block of 16 would always land on a cross-entropy
    assert 68 <= _one_line_two_kinds(["ce"] * 8 + ["ce", "mse"] * 60) <= 68 + 20
    assert 98 <= _one_line_two_kinds(["ce"] * 8 + ["ce", "ce", "ce", "mse"] * 30) <= 98 + 20


def test_backward_on_a_tensor_that_is_no_loss_raises_torchs_error_and_records_nothing():
    model = torch.nn.Linear(4, 3)
    with watch(config=False) as w:
        with pytest.raises(RuntimeError, match="scalar"):
            model(torch.randn(2, 4)).backward()  # not a scalar: no implicit gradient
        with pytest.raises(RuntimeError):
            torch.ones((), dtype=torch.long).backward()  # an integer tensor cannot require a gradient
    assert w.monitor.errors == [] and w.monitor.loss_count == 0


@pytest.mark.parametrize("captured", [True, False], ids=["cpu-captured", "accelerator-hooked"])
def test_tl113_looks_at_the_captured_relu_calls_where_outputs_are_captured_and_hooks_them_elsewhere(
        captured, monkeypatch):
    from trainlint.runtime import sources

    hooked = []
    original = sources.Sources.watch_module

    def watch_module(self, module, callback):
        hooked.append(type(module).__name__)
        return original(self, module, callback)

    monkeypatch.setattr(sources.Sources, "watch_module", watch_module)
    with watch(config=False) as w:
        if not captured:
            w.monitor.immediate = False  # values kept on the device: no module output is captured
        S.classifier(steps=100)
    (tl113,) = [c for c in w.monitor.checks if c.code == "TL113"]
    looks = [s.looks for s in tl113.states.values()]
    assert looks and all(n == 5 for n in looks)  # steps 0, 20, 40, 60 and 80 (dead-every)
    if captured:
        assert hooked == []  # shown from the captured module calls: no hook, no slow path
    else:
        assert hooked and set(hooked) == {"ReLU"}


@pytest.mark.parametrize("captured", [True, False], ids=["cpu", "accelerator-path"])
def test_a_parameter_the_loss_does_not_use_is_checked_at_every_flush(captured):
    # a NaN parameter the loss does not use never shows in a loss: the flush's pass over the parameter
    # values finds it (on the CPU and elsewhere alike)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    unused = torch.nn.Linear(4, 4)  # optimized, never called
    opt = torch.optim.SGD([*model.parameters(), *unused.parameters()], lr=0.01)
    with watch(config=False, every=5) as w:
        if not captured:
            w.monitor.immediate = False
        for step in range(30):
            if step == 16:
                with torch.no_grad():
                    unused.weight[0, 0] = float("nan")
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.zeros(8, 1)).backward()
            opt.step()
    d = only(w.findings, "TL102")
    ev = d.runtime["evidence"]
    assert ev["kind"] == "parameter" and ev["parameters"] == ["<parameter of shape (4, 4)>"]
    # flushes after steps 4, 9, 14, 19, 24 and 29: broken between the checks after steps 14 and 19
    assert (ev["last_finite_check_step"], d.runtime["step"]) == (14, 19)


class _TaggedLoss(torch.Tensor):
    """A tensor subclass with its own `__torch_function__` (user code that torch dispatches through)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def test_backward_of_a_subclass_or_through_an_earlier_wrapper_is_one_loss_at_the_users_line(monkeypatch):
    import inspect

    calls = []
    original = torch.Tensor.backward

    def earlier_wrapper(self, *args, **kwargs):  # another tool's wrapper, put before trainlint's
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", earlier_wrapper)
    model = torch.nn.Linear(4, 1)
    torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.zeros(8, 1)).backward()
    torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.zeros(8, 1)).as_subclass(_TaggedLoss).backward()
    unwatched, calls[:] = list(calls), []  # (the subclass's dispatch calls `Tensor.backward` once more)
    with watch(config=False) as w:
        loss = torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.zeros(8, 1))
        loss.backward(); line = inspect.currentframe().f_lineno  # noqa: E702
        tagged = torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.zeros(8, 1)).as_subclass(_TaggedLoss)
        tagged.backward(); tagged_line = inspect.currentframe().f_lineno  # noqa: E702
        site = w.monitor.last_loss_site
        w.monitor.flush(drain=True)
    assert calls == unwatched  # the earlier wrapper still runs, as often as without trainlint
    assert w.monitor.loss_count == 2 and w.monitor.errors == []
    assert [s.row for s in w.monitor.history.sites] == [line, tagged_line] and site.row == tagged_line


# ------------------------------------------------------------------ gradient norms: one vector per device and dtype
def test_gradient_norms_of_an_optimizer_over_two_dtypes_are_read_per_group_and_name_the_broken_one():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    tail = torch.nn.Linear(3, 1).double()  # a second dtype: two fused norm kernels, two vectors
    # interleaved: the fused kernels group the parameters by dtype, the names must follow the groups' order
    opt = torch.optim.SGD([head.weight, tail.weight, tail.bias, head.bias], lr=0.01)
    norms = []
    with watch(config=False, grad_every=1) as w:
        for step in range(6):
            opt.zero_grad()
            out = tail(head(torch.randn(8, 4)).double())
            out.pow(2).mean().backward()
            params = [*head.parameters(), *tail.parameters()]
            norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params)))
            if step == 4:
                tail.bias.grad[0] = float("nan")  # after the backward: only the gradient is broken
            opt.step()
    recorded = list(w.monitor.history.norms["opt"][1])
    assert recorded[:4] == pytest.approx(norms[:4], rel=1e-5)
    d = only(w.findings, "TL102")
    assert d.runtime["step"] == 4 and d.runtime["evidence"]["parameters"] == ["tail.bias"]
    assert "gradient of `tail.bias` is NaN/Inf at step 4" in d.message


def test_gradient_norms_on_an_accelerator_are_joined_per_device_and_sliced_back_per_look():
    from trainlint.runtime.records import StepRecord
    from trainlint.runtime.transfer import fetch_norms

    class _Device:  # stands for a CUDA device: its vectors are joined and copied once
        type = "cuda"

    dev, cpu = _Device(), torch.device("cpu")
    a = StepRecord(None, 0, None, ["p", "q"], [(dev, torch.tensor([3.0, 4.0]))], 0)
    b = StepRecord(None, 1, None, ["p", "q", "r"],
                   [(dev, torch.tensor([1.0])), (cpu, torch.tensor([float("nan"), 2.0]))], 0)
    c = StepRecord(None, 2, None, ["p"], [(dev, torch.tensor([12.0]))], 0)
    fetch_norms([a, b, c])
    assert a.total == 5.0 and c.total == 12.0 and a.vecs == b.vecs == c.vecs == []
    assert math.isnan(b.total) and b.bad == ["q"]


@pytest.mark.parametrize("immediate", [True, False], ids=["cpu", "accelerator-path"])
def test_tl105_judges_the_scheduled_looks_long_after_the_warm_up(immediate):
    # the learning rate jumps at step 150: on an accelerator only the scheduled looks (every 32nd step) see
    # the gradients, and the running median must hold enough of them to judge one (a window of 50 steps
    # held a single look at 32: nothing was judged after step 64)
    with watch(config=False) as w:
        w.monitor.immediate = immediate
        S.lr_spike(steps=220, at=150)
    d = only(w.findings, "TL105")
    assert 150 < d.runtime["step"] <= (152 if immediate else 160)
    assert d.runtime["evidence"]["running_median"] < 100 and "last 100 steps" in d.message
    # a window set narrower than three looks is widened
    with watch(config=False, explode_window=50) as w:
        w.monitor.immediate = immediate
        S.lr_spike(steps=220, at=150)
    assert "last 97 steps" in only(w.findings, "TL105").message
