"""The structural gate (analysis/gate.py) must never cost a finding: every rule's positive examples pass
its gate, and a file that no gate lets through is not parsed by LibCST. The gate's savings are measured by
benchmarks (`benchmarks/gate_check.py` compares findings with and without it on real trees)."""

import importlib
import os

import pytest
from helpers import src

from trainlint.codes import STATIC_CODES
from trainlint.engine import _rules_matching, gate_rules, lint_text

OPTS = {"TL003": {"batch-size-names": ["batch_size", "bs", "bsz"]}}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gated(text, codes, filename="train.py"):
    rules = _rules_matching(text, codes, OPTS)
    kept, cpython = gate_rules(text, filename, rules, OPTS)
    return [r.CODE for r in kept], cpython


@pytest.mark.parametrize("code", STATIC_CODES)
def test_positive_examples_pass_their_gate(code):
    bad = importlib.import_module(f"test_{code.lower()}").BAD
    assert bad
    for name, text in bad.items():
        assert _gated(src(text), [code]) == ([code], True), name


@pytest.mark.parametrize("path", ["examples/train.py", "examples/more_training_bugs.py", "examples/project/train.py"])
def test_examples_pass_every_gate_they_need(path, monkeypatch):
    """The examples lint the same with and without the gate."""
    full = os.path.join(REPO, path)
    text = open(full, encoding="utf-8").read()
    gated = lint_text(text, full, list(STATIC_CODES), OPTS).diagnostics
    monkeypatch.setenv("TRAINLINT_NO_GATE", "1")
    plain = lint_text(text, full, list(STATIC_CODES), OPTS).diagnostics
    assert gated and [(d.code, d.location) for d in gated] == [(d.code, d.location) for d in plain]


def test_words_in_comments_and_docstrings_are_not_code():
    text = src('''
        """Call loss.backward() and then optimizer.step(); a DataLoader(drop_last=True) helps; Adam(eps=1e-8)."""
        # (inter + smooth) / (union + smooth), x / x.std(), MaxPool2d(1, stride=2), set_detect_anomaly(True)
        x = 1
    ''')
    assert _rules_matching(text, list(STATIC_CODES), OPTS)  # the words are there...
    assert _gated(text, list(STATIC_CODES)) == ([], True)  # ...but no code that a rule reads
    assert lint_text(text, "a.py", list(STATIC_CODES), OPTS).parsed is False


def test_tl002_gate_needs_a_ratio_of_two_sums():
    assert _gated("def f(a, b, eps):\n    return a / b\n", ["TL002"])[0] == []
    assert _gated("def f(a, b, eps):\n    return (a + eps) / b\n", ["TL002"])[0] == []
    assert _gated("def f(a, b, eps):\n    return (a + eps) / (b + eps)\n", ["TL002"])[0] == ["TL002"]
    # the sums held by names, or passed in by a caller of this module
    assert _gated("def f(a, b, eps):\n    n = a + eps\n    d = b + eps\n    return n / d\n", ["TL002"])[0] == ["TL002"]
    text = "def ratio(n, d):\n    return n / d\n\ndef dice(i, u, eps):\n    return ratio(2 * i + eps, u + eps)\n"
    assert _gated(text, ["TL002"])[0] == ["TL002"]


def test_a_name_is_followed_in_its_own_scope_only():
    text = src('''
        def dice(i, u, eps=1.0):
            total = u.sum()
            return (2 * i + eps) / total

        def other(a, b):
            total = a + b
            return total
    ''')
    assert _gated(text, ["TL002"])[0] == []


def test_tl003_gate_needs_a_batch_size_denominator():
    assert _gated("loss = crit(out, y)\nloss = loss / 4\n", ["TL003"])[0] == []
    assert _gated("loss = crit(out, y)\nloss = loss / x.size(0)\n", ["TL003"])[0] == ["TL003"]
    assert _gated("n, c = x.shape\nloss = crit(out, y) / n\n", ["TL003"])[0] == ["TL003"]
    assert _gated("loss = crit(out, y) / args.batch_size\n", ["TL003"])[0] == ["TL003"]


def test_called_names_follow_import_aliases():
    import ast

    from trainlint.analysis.gate import module_facts

    text = "for x in data:\n    bw(loss(x))\n    O(p)\nfrom torch.autograd import backward as bw\nfrom torch.optim import Adam as O\n"
    facts = module_facts(ast.parse(text))
    assert {"bw", "backward", "O", "Adam"} <= facts.calls
    assert facts.loop_calls_all(("backward",), ("Adam",))


def test_code_cpython_cannot_parse_keeps_every_rule():
    """LibCST's parse then reports the syntax error at CPython's location, as without the gate."""
    text = "loss.backward(\nopt.step()\n"
    codes, cpython = _gated(text, ["TL001"])
    assert codes == ["TL001"] and cpython is False
    diags = lint_text(text, "a.py", ["TL001"], OPTS).diagnostics
    assert [d.code for d in diags] == ["TL000"]


def test_a_broken_gate_keeps_its_rule(monkeypatch):
    from trainlint.rules import load

    rule = load(["TL005"])[0]

    def broken(facts, options):
        raise ValueError("bug")

    monkeypatch.setattr(rule, "gate", broken)
    assert _gated("import torch\n", ["TL005"]) == ([], True)  # the prefilter ("Adam") still applies
    assert _gated("import torch\nopt = torch.optim.SGD(m)  # not Adam\n", ["TL005"])[0] == ["TL005"]


def test_tl012_gate_reads_where_dropout_is_called():
    functional = "import torch.nn.functional as F\nclass M(nn.Module):\n    def forward(self, x):\n{}"
    assert _gated(functional.format("        return F.dropout(x, 0.1)\n"), ["TL012"])[0] == ["TL012"]
    nested = "        def inner(y):\n            return F.dropout(y, 0.1)\n        return inner(x)\n"
    assert _gated(functional.format(nested), ["TL012"])[0] == ["TL012"]  # a def nested in the method
    built_in_init = "import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        self.d = nn.Dropout(0.1)\n"
    assert _gated(built_in_init, ["TL012"])[0] == []
    assert _gated("import torch.nn.functional as F\ny = F.dropout(x, 0.1)\nclass A: pass\n", ["TL012"])[0] == []


def test_tl017_gate_needs_a_forward_call_on_a_model_value():
    assert _gated("class A(B):\n    def f(self, x):\n        return self.forward(x) + B.forward(self, x)\n", ["TL017"])[0] == []
    assert _gated("y = model.forward(x)\n", ["TL017"])[0] == ["TL017"]
    assert _gated("y = model.forward(x)\n", ["TL017"], filename="tests/test_model.py")[0] == []


def test_tl010_gate_reads_literal_kernels_and_strides():
    head = "import torch.nn as nn\nimport torch.nn.functional as F\n"
    assert _gated(head + "p = nn.MaxPool2d(3, stride=2)\nq = nn.MaxPool2d(2)\n", ["TL010"])[0] == []
    assert _gated(head + "p = nn.MaxPool2d(2, stride=3)\n", ["TL010"])[0] == ["TL010"]
    assert _gated(head + "p = nn.AvgPool2d((2, 2), (3, 3))\n", ["TL010"])[0] == ["TL010"]
    assert _gated(head + "S = 4\ny = F.max_pool2d(x, kernel_size=2, stride=S)\n", ["TL010"])[0] == ["TL010"]
    # `max_pool2d` is also TensorFlow's (ksize, strides): both signatures are read
    assert _gated("import tensorflow as tf\ny = tf.nn.max_pool2d(x, 2, 3, 'SAME')\n", ["TL010"])[0] == ["TL010"]


def test_tl003_gate_reads_literal_batch_sizes_from_the_loaders():
    loader = "from torch.utils.data import DataLoader\nloader = DataLoader(ds, batch_size=32)\n"
    assert _gated(loader + "loss = crit(out, y) / 32\n", ["TL003"])[0] == ["TL003"]
    assert _gated(loader + "x = torch.arange(20) / 20\n", ["TL003"])[0] == []
    assert _gated(loader + "m = data - mean[0] / std[0]\n", ["TL003"])[0] == []  # [0] of a list, not a shape
