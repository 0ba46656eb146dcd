"""One real tiny training run per runtime check (CPU), under `trainlint.runtime.watch()`."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import runtime_scenarios as S  # noqa: E402
from conftest import SCENARIOS, codes  # noqa: E402

from trainlint.runtime import watch  # noqa: E402


def watched(fn, *args, **kwargs):
    with watch(config=False) as w:
        fn(*args, **kwargs)
    return w.findings


def only(diags, code):
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in diags]
    return found[0]


def test_healthy_run_has_no_finding():
    assert watched(S.healthy) == []


def test_findings_point_at_the_users_line_and_serialise():
    d = only(watched(S.no_zero_grad), "TL103")
    assert d.filename.endswith("runtime_scenarios.py")
    line = SCENARIOS.read_text().splitlines()[d.location.row - 1]
    assert line.strip() == "opt.step()"
    assert d.location.column == line.index("opt") + 1
    assert d.end_location.row == d.location.row and d.end_location.column == len(line.rstrip()) + 1
    data = json.loads(json.dumps(d.to_json(), allow_nan=False))
    assert data["confirms"] == "TL001" and data["step"] == 1 and "evidence" in data  # the 2nd step, 0-based


def test_tl101_log_of_underflowing_probability_names_the_module():
    diags = watched(S.log_underflow, steps=10, bad_step=6)
    d = only(diags, "TL101")
    ev = d.runtime["evidence"]
    assert d.runtime["step"] == 6  # steps count from 0, as the script's bad_step does
    assert "step 6 (the 7th optimizer step)" in d.message
    assert ev["loss"] == "inf" and ev["module"] == "log_prob" and ev["module_type"] == "LogProb"
    assert ev["module_inputs_finite"] is True
    assert "`log_prob` (LogProb)" in d.message
    line = SCENARIOS.read_text().splitlines()[d.location.row - 1]
    assert line.strip() == "loss.backward()"
    assert json.dumps(d.to_json(), allow_nan=False)  # NaN/Inf evidence is JSON-safe


def test_tl102_nan_gradient_with_finite_loss_names_parameters():
    d = only(watched(S.nan_gradient, steps=8, bad_step=4), "TL102")
    ev = d.runtime["evidence"]
    assert d.runtime["step"] == 4
    assert ev["kind"] == "gradient"
    assert "0.weight" in ev["parameters"]
    assert "loss itself was finite" in d.message


def test_tl102_parameter_becomes_non_finite_with_finite_gradients():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(config=False, every=5) as w:
        for i in range(5):
            if i == 4:
                opt.param_groups[0]["lr"] = float("inf")  # the update itself overflows
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
    d = only(w.findings, "TL102")
    ev = d.runtime["evidence"]
    assert ev["kind"] == "parameter" and "weight" in ev["parameters"]
    assert ev["last_finite_check_step"] == -1 and d.runtime["step"] == 4


def test_tl103_missing_zero_grad():
    d = only(watched(S.no_zero_grad, steps=12), "TL103")
    assert d.runtime["step"] == 1
    # the clearing is tracked at steps 0-3 of a short run (then at every `grad-every`-th step)
    assert d.runtime["evidence"]["steps_not_cleared"] == 3 == d.runtime["evidence"]["steps_looked_at"] - 1
    assert "3 of the 3 steps looked at after the first" in d.message
    assert d.runtime["confirms"] == "TL001"
    with watch(config=False, grad_every=1) as w:
        S.no_zero_grad(steps=12)
    d = only(w.findings, "TL103")
    assert d.runtime["evidence"]["steps_not_cleared"] == 11 and "11 of the 11 steps after the first" in d.message


@pytest.mark.parametrize("clear", ["zero_grad", "zero_grad_keep", "model", "none_assign", "in_place"])
def test_tl103_gradient_accumulation_is_fine(clear):
    assert watched(S.accumulation, steps=6, accumulate=4, clear=clear) == []


def test_tl103_accumulation_without_clearing():
    assert "TL103" in codes(watched(S.accumulation, steps=6, accumulate=4, clear="never"))


def test_tl103_clear_between_backward_and_step_of_another_model_is_fine():
    """GAN-style: the generator's loss flows through the discriminator, whose gradients are then
    cleared before its own backward."""
    torch.manual_seed(0)
    G, D = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.01), torch.optim.SGD(D.parameters(), lr=0.01)
    with watch(config=False) as w:
        for _ in range(6):
            z = torch.randn(8, 4)
            opt_d.zero_grad()
            d_loss = D(G(z).detach()).mean() - D(torch.randn(8, 4)).mean()
            d_loss.backward()
            opt_d.step()
            opt_g.zero_grad()
            g_loss = -D(G(z)).mean()
            g_loss.backward()  # also accumulates into D's gradients ...
            opt_g.step()  # ... which opt_d.zero_grad() clears before D's next backward
    assert "TL103" not in codes(w.findings)


def test_tl104_short_last_batch_with_double_division():
    d = only(watched(S.short_batch_double_division, epochs=4), "TL104")
    ev = d.runtime["evidence"]
    assert ev["batch_size"] == 100 and ev["short_batch_sizes"] == [10]
    assert ev["spiking_epochs"] >= 3 and ev["epochs_with_short_batch"] == 4
    assert sum(f >= 2 for f in ev["factors"]) == ev["spiking_epochs"]
    assert d.runtime["epoch"] == 1 and d.runtime["step"] == 10  # the 11th batch (step 10) is the short one
    assert d.runtime["confirms"] == "TL004"
    assert "10 samples" in d.message and "full batches 100" in d.message


def test_tl104_not_reported_with_drop_last():
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(S._regression_data(), batch_size=100, shuffle=True, drop_last=True)
    model = S._mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    with watch(config=False) as w:
        for _ in range(4):
            for xb, yb in loader:
                opt.zero_grad()
                (torch.nn.functional.mse_loss(model(xb), yb) / len(xb)).backward()
                opt.step()
    assert "TL104" not in codes(w.findings)


def test_tl105_exploding_learning_rate():
    diags = watched(S.lr_spike)
    d = only(diags, "TL105")
    ev = d.runtime["evidence"]
    assert d.runtime["step"] > 25 and ev["factor"] >= 10
    line = SCENARIOS.read_text().splitlines()[d.location.row - 1]
    assert line.strip() == "opt.step()"


def test_tl106_dice_smooth_collapse():
    d = only(watched(S.dice_collapse, steps=70), "TL106")
    ev = d.runtime["evidence"]
    assert ev["collapsed_steps"] >= 20
    assert ev["grad_norm"] < 1e-3 * ev["reference_grad_norm"]
    assert ev["loss"] > 0.1 * ev["reference_loss"]
    assert d.runtime["confirms"] == "TL002"
    assert "TL105" not in codes(watched(S.dice_collapse, steps=70))


def test_tl107_fp16_params_with_default_adam_eps():
    d = only(watched(S.fp16_adam), "TL107")
    ev = d.runtime["evidence"]
    assert ev["eps"] == 1e-8 and ev["dtype"] == "float16" and ev["optimizer"] == "opt"  # the variable
    assert d.runtime["step"] == 0 and d.runtime["confirms"] == "TL005"
    assert d.message.startswith("`opt` (Adam) eps=1e-08")


def test_tl107_not_reported_for_bf16_or_a_large_eps():
    assert watched(S.bf16_adam) == []
    model = torch.nn.Linear(4, 1).half()
    opt = torch.optim.Adam(model.parameters(), eps=1e-4)
    with watch(config=False) as w:
        opt.zero_grad()
        model(torch.randn(2, 4).half()).float().sum().backward()
        opt.step()
    assert w.findings == []


def test_select_and_ignore():
    with watch(config=False, select=["TL101", "TL103"], ignore=["TL103"]) as w:
        S.no_zero_grad(steps=5)
    assert w.findings == []
    assert w.codes == ["TL101"]
    with pytest.raises(ValueError):
        watch(config=False, select=["TL999"])


def test_thresholds_are_configurable():
    # with a factor no loss ratio reaches, TL104 stays quiet
    with watch(config=False, spike_factor=1000.0) as w:
        S.short_batch_double_division(epochs=3)
    assert "TL104" not in codes(w.findings)
    from trainlint.runtime.settings import SettingsError

    with pytest.raises(SettingsError):
        watch(config=False, every=0)
    with pytest.raises(SettingsError):
        watch(config=False, no_such_threshold=1)


def test_tl104_with_a_dataloader_created_every_epoch():
    torch.manual_seed(0)
    data = S._regression_data()
    model = S._mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    with watch(config=False) as w:
        for _ in range(3):
            for xb, yb in torch.utils.data.DataLoader(data, batch_size=100, shuffle=True):
                opt.zero_grad()
                (torch.nn.functional.mse_loss(model(xb), yb) / len(xb)).backward()
                opt.step()
            for xb, _ in torch.utils.data.DataLoader(data, batch_size=256):  # validation: no backward
                model(xb)
    d = only(w.findings, "TL104")
    assert d.runtime["evidence"]["epochs"] == [1, 2, 3]
    assert w.epochs == 3
