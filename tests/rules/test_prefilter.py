"""The prefilter must never cost a finding: every rule's positive examples pass its own prefilter,
and a file that no rule can match is not parsed."""

import importlib

import pytest
from helpers import src

from trainlint.engine import _rules_matching, lint_text

MODULES = {"TL001": "test_tl001", "TL002": "test_tl002", "TL003": "test_tl003", "TL004": "test_tl004",
           "TL005": "test_tl005"}


@pytest.mark.parametrize("code", sorted(MODULES))
def test_positive_examples_pass_their_prefilter(code):
    bad = importlib.import_module(MODULES[code]).BAD
    assert bad
    for name, text in bad.items():
        opts = {"TL003": {"batch-size-names": ["batch_size", "bs", "bsz"]}}
        assert [r.CODE for r in _rules_matching(src(text), [code], opts)] == [code], name


def test_file_without_rule_words_is_not_parsed():
    r = lint_text("def f(x):\n    return x + 1\n", "x.py", list(MODULES), {})
    assert r.parsed is False and r.diagnostics == []


def test_tl002_prefilter_ignores_http():
    assert _rules_matching("url = 'http://x/y'\nz = a / b\n", ["TL002"]) == []


def test_tl003_prefilter_follows_the_configured_batch_size_names():
    text = "import torch.nn.functional as F\nloss = F.mse_loss(out, y) / mb\n"
    assert _rules_matching(text, ["TL003"], {"TL003": {"batch-size-names": ["batch_size"]}}) == []
    assert _rules_matching(text, ["TL003"], {"TL003": {"batch-size-names": ["mb"]}})


def test_tl001_prefilter_needs_calls():
    assert _rules_matching("# call backward() after step()\n", ["TL001"]) != []
    assert _rules_matching("def backward(ctx, g):\n    return g\n", ["TL001"]) == []
