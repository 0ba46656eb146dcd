"""TL115 saturated-probabilities on real tiny CPU runs: a learning rate far too high saturates a sigmoid
and a softmax; confident, converged classifiers and masked attention stay silent."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import runtime_scenarios as S  # noqa: E402

from trainlint.runtime import watch  # noqa: E402
from trainlint.runtime.checks.tl115_saturated_probabilities import limit  # noqa: E402


ON = ["TL1", "TL115"]  # TL115 is off by default


def run(fn, **kwargs):
    with watch(config=False, select=ON) as w:
        losses = fn(**kwargs)
    return w.findings, losses


def test_a_sigmoid_saturated_by_a_huge_learning_rate():
    diags, losses = run(S.sigmoid_probabilities, lr=50.0)
    assert all(l == l for l in losses)  # no NaN: BCELoss clamps its log, the run just stops learning
    (d,) = [d for d in diags if d.code == "TL115"]
    ev = d.runtime["evidence"]
    assert ev["function"] == "sigmoid" and ev["dtype"] == "float32"
    assert ev["first_saturated_fraction"] < 0.5 <= ev["saturated_fraction"]
    assert ev["consecutive_looks"] >= 5 and d.runtime["step"] == 10  # the second look (every 10 steps)
    assert d.message.startswith("sigmoid saturated: ") and "exactly 0 or 1 in float32" in d.message
    # points at the user's line that calls the model holding nn.Sigmoid
    assert d.filename.endswith("runtime_scenarios.py") and "model(x[idx])" in open(S.__file__).read().splitlines()[
        d.location.row - 1]


def test_a_softmax_saturated_by_a_huge_learning_rate():
    diags, _ = run(S.softmax_probabilities, lr=5.0)
    (d,) = [d for d in diags if d.code == "TL115"]
    ev = d.runtime["evidence"]
    assert ev["function"] == "softmax" and ev["saturated_fraction"] >= 0.5
    assert "rows are exactly one-hot" in d.message
    assert "torch.softmax" in open(S.__file__).read().splitlines()[d.location.row - 1]


@pytest.mark.parametrize("fn,kwargs", [
    (S.sigmoid_probabilities, {"lr": 1.0, "steps": 400}),  # converged: logits in the tens, outputs 1.0 in float32
    (S.softmax_probabilities, {"lr": 1e-2, "steps": 400}),
    (S.masked_attention, {}),  # -inf masks: exact zeros from the first step
])
def test_confident_classifiers_and_masked_attention_are_silent(fn, kwargs):
    with watch(config=False, select=ON) as w:
        fn(**kwargs)
    assert [(d.code, d.message) for d in w.findings] == []
    (check,) = [c for c in w.monitor.checks if c.code == "TL115"]
    assert [s.looks for s in check.states.values()] == [kwargs.get("steps", 80) // 10]  # it did look


def test_a_confident_classifier_is_confident_but_not_saturated():
    """The healthy sigmoid run above does reach outputs of exactly 1.0 in float32 (logits > 17): a
    confident model, which TL115 leaves alone; only logits past ln(smallest subnormal) count."""
    torch.manual_seed(0)
    S.sigmoid_probabilities(lr=1.0, steps=400)
    assert torch.sigmoid(torch.tensor(20.0)).item() == 1.0
    assert 103 < limit(torch.float32) < 104 and 16 < limit(torch.float16) < 17


def test_off_by_default_and_its_wrappers_exist_only_while_it_is_watching():
    from trainlint.runtime.api import selected_codes

    assert "TL115" not in selected_codes() and "TL115" not in selected_codes(["TL1"])
    assert "TL115" in selected_codes(["TL115"]) and "TL115" in selected_codes(["ALL"])
    assert "TL115" not in selected_codes(["TL115"], ignore=["TL115"])
    orig = (torch.softmax, torch.sigmoid, torch.nn.functional.softmax)
    with watch(config=False) as w:  # the default checks
        assert (torch.softmax, torch.sigmoid, torch.nn.functional.softmax) == orig
        assert "softmax" not in torch.Tensor.__dict__ and "TL115" not in w.codes
    with watch(config=False, select=ON):
        assert torch.softmax is not orig[0] and "sigmoid" in torch.Tensor.__dict__
    assert (torch.softmax, torch.sigmoid, torch.nn.functional.softmax) == orig
    assert "softmax" not in torch.Tensor.__dict__ and "sigmoid" not in torch.Tensor.__dict__
    with watch(config=False) as w:
        S.sigmoid_probabilities(lr=50.0)
    assert "TL115" not in [d.code for d in w.findings]
