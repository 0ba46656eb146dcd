"""Reliability (issue 6): no traceback on any input, internal errors become TL000, concurrent runs,
static mode never runs the linted code, strict configuration errors.

The hypothesis tests run a few hundred examples; `TRAINLINT_SLOW=1` runs thousands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import traceback

try:
    import resource
except ImportError:  # Windows
    resource = None

import hypothesmith
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trainlint.cli import main
from trainlint.codes import STATIC_CODES
from trainlint.config import Settings
from trainlint.engine import lint_text, parse
from trainlint.fixer import fix_text
from trainlint.source import SourceError, decode

SLOW = os.environ.get("TRAINLINT_SLOW") == "1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTS = Settings().rule_options()

# Text that contains every prefilter word, so that every rule parses and runs on the generated code.
# The examples show every rule: as comments, their text passes every rule's prefilter.
EXAMPLES = [os.path.join(REPO, "examples", name) for name in ("train.py", "more_training_bugs.py")]
# Code that passes every rule's structural gate (analysis/gate.py), so that LibCST parses the generated
# programs and every rule runs on them (words in comments do not pass a gate), with no finding of its own.
GATES = """\
import torch
from torch.utils.data import DataLoader, DistributedSampler
class _M(torch.nn.Module):
    def forward(self, x, y, a, b, s, scaler, opt, loader, val_loader):
        for batch in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x, y) + torch.log(y + 1) + torch.softmax(x, 1).sum()
            scaler.scale(loss).backward()
            opt.step()
            self.eval()
        r = (a + s) / (b + s) / x.size(0) / x.std()
        torch.optim.Adam(self.parameters()), torch.nn.MaxPool2d(2, stride=s)
        torch.nn.functional.dropout(x, training=self.training)
        DataLoader(x), DistributedSampler(x), torch.autograd.set_detect_anomaly(False), self.m.forward(x)
        with torch.no_grad():
            for b in val_loader:
                pass
"""
PREFILTER = ("# loss.backward() opt.step() optimizer_step() zero_grad() DataLoader Adam RMSprop Adagrad smooth dice "
             "inter eps Loss loss.mean() reduce_mean x.size(0) len( batch_size / * (1\n"
             + "".join(f"# {line}\n" for path in EXAMPLES for line in open(path, encoding="utf-8").read().splitlines())
             + GATES)


def examples(ci: int, slow: int) -> int:
    return slow if SLOW else ci


def hsettings(ci: int, slow: int):
    return settings(
        max_examples=examples(ci, slow),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


BAD = """\
import torch

def train(model, loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        loss = model(x).sub(y).pow(2).mean()
        loss.backward()
        optimizer.step()
"""  # TL001 at 8:9

DICE = """\
def dice_loss(p, t, smooth=1.0):
    inter = (p * t).sum()
    return 1 - (2 * inter + smooth) / (p.sum() + t.sum() + smooth)
"""  # TL002 at 3:16

BOTH = BAD + "\n\n" + DICE  # TL001 at 8:9 and TL002 at 13:16

# Messages a TL000 may carry for a file that is not broken: a LibCST limitation at worst, never a crash.
PARSER_LIMITS = ("syntax error", "cannot parse file", "code is nested too deeply")


# -- the properties every source text must have -------------------------------------------------------

def check_source(text: str, newline: str = "\n", valid: bool = False) -> None:
    """lint_text and fix_text(unsafe=True) never raise; a fix leaves a parsing file; fixing is idempotent."""
    result = lint_text(text, "gen.py", STATIC_CODES, OPTS)
    for d in result.diagnostics:
        if d.code == "TL000":
            assert "internal error" not in d.message, d.message
            assert not valid, f"valid program reported as {d.message}"
            assert d.message.startswith(PARSER_LIMITS), d.message
        rows = text.count("\n") + text.count("\r") - text.count("\r\n") + 2
        assert 1 <= d.location.row <= rows and d.location.column >= 1, d
        if d.fix is not None:
            for e in d.fix.edits:
                assert e.location <= e.end_location, d.fix
    new, applied, remaining = fix_text(text, "gen.py", STATIC_CODES, OPTS, True, newline)
    assert not [d.message for d in remaining if "internal error" in d.message]
    if not applied:
        assert new == text, "fix_text changed the text but reported no fix"
        return
    assert new != text
    parse(new)  # raises SourceError if a fix broke the file
    again, applied2, _ = fix_text(new, "gen.py", STATIC_CODES, OPTS, True, newline)
    assert applied2 == 0 and again == new, "a second fix pass changed the text again"
    if newline == "\r\n" and "\n" not in text.replace("\r\n", ""):
        assert "\n" not in new.replace("\r\n", ""), "a fix wrote a bare LF into a CRLF file"
    if newline == "\n" and "\r" not in text:
        assert "\r" not in new, "a fix wrote CR into an LF file"
    if newline == "\r" and "\n" not in text:
        assert "\n" not in new, "a fix wrote LF into a CR file"


def test_prefilter_text_lets_every_rule_run():
    """The generated programs below are only worth anything if every rule parses and runs on them."""
    from trainlint import engine

    matching = getattr(engine, "_rules_matching", None)
    if matching is None:
        pytest.skip("no engine._rules_matching to ask")
    try:
        rules = matching(PREFILTER, STATIC_CODES, OPTS)
    except TypeError:
        rules = matching(PREFILTER, STATIC_CODES)
    assert sorted(r.CODE for r in rules) == sorted(STATIC_CODES)
    gated, cpython = engine.gate_rules(PREFILTER, "train.py", rules, OPTS)
    assert cpython and sorted(r.CODE for r in gated) == sorted(STATIC_CODES)
    result = engine.lint_text(PREFILTER, "train.py", STATIC_CODES, OPTS)
    assert result.parsed and result.diagnostics == []  # the text adds no finding of its own


# -- generated programs: hypothesmith --------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
@hsettings(ci=60, slow=3000)
@given(hypothesmith.from_grammar(), st.booleans())
@example("for x in loader:\n    loss.backward()\n    opt.step()\n", True)
def test_grammar_programs_never_crash_lint_or_fix(source, head):
    text = PREFILTER + source if head else source + "\n" + PREFILTER
    check_source(text)


@pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
@hsettings(ci=20, slow=1000)
@given(hypothesmith.from_node())
def test_node_programs_never_crash_lint_or_fix(source):
    check_source(PREFILTER + source)


# -- generated programs: training-loop shaped code, so that the rules and the fixes really run ------

OPT = st.sampled_from(["optimizer", "opt", "self.optimizer", "opt_g", "optim"])

SIMPLE = [
    "loss.backward()",
    "{opt}.step()",
    "{opt}.zero_grad()",
    "{opt}.zero_grad(set_to_none=True)",
    "model.zero_grad()",
    "scaler.scale(loss).backward()",
    "scaler.step({opt})",
    "scaler.update()",
    "loss = criterion(model(x), y)",
    "loss = criterion(out, y) / batch_size",
    "loss = F.mse_loss(out, y).mean() / x.size(0)",
    "loss = F.cross_entropy(out, y) / len(x)",
    "loss /= bs",
    "loss = loss * (1 / batch_size)",
    "loss = (out - y).pow(2).sum()",
    "{opt} = torch.optim.Adam(model.parameters(), lr=1e-3)",
    "{opt} = torch.optim.AdamW(model.parameters(), 1e-3, (0.9, 0.99), 1e-8)",
    "{opt} = optim.RMSprop(params=model.parameters(), eps=1e-10,)",
    "{opt} = Adam([p for p in model.parameters() if p.requires_grad])",
    "{opt} = torch.optim.Adagrad(\n    model.parameters(),\n    lr=0.01,  # comment\n)",
    "{opt} = torch.optim.SGD(model.parameters(), lr=0.1)",
    "model = Net().half()",
    "model.half()",
    "model = model.to(torch.float16)",
    "model = model.to(dtype=torch.bfloat16)",
    "torch.set_default_dtype(torch.float16)",
    "loader = DataLoader(ds, batch_size=32, shuffle=True)",
    "train_loader = DataLoader(ds,\n    batch_size=batch_size,\n    shuffle=True,\n)",
    "loader = torch.utils.data.DataLoader(ds, 64, True, drop_last=False)",
    "loader = DataLoader(ds, batch_size=bs, **kwargs)",
    "dice = 1 - (2 * inter + smooth) / (union + smooth)",
    "iou = (inter + self.eps) / (a.sum() + b.sum() + self.eps)",
    "score = (2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)",
    "inter = (p * t).sum()",
    "x = model(x)",
    "out = model(x); loss = criterion(out, y)",
    "loss.backward(); {opt}.step()",
    "{opt}.step()  # noqa: TL001",
    "{opt}.step()  # noqa",
    "loss = a + \\\n    b / batch_size",
    "s = '# noqa: TL001'",
    "pass",
    "continue",
    "break",
    "return loss",
    "del loss",
    "print(loss.item())",
    "yield loss",
    "global step",
    "lam = lambda o: o.step()",
    "f = [o.step() for o in opts]",
    "x = 'caf\u00e9 \U0001f600'; {opt}.step()",
]

HEADERS = [
    "for x, y in loader:",
    "for x, y in train_loader:",
    "for epoch in range(epochs):",
    "for i, batch in enumerate(loader):",
    "async for batch in aloader:",
    "while step < total:",
    "while True:",
    "with torch.autocast('cuda'):",
    "with torch.no_grad(), ctx() as c:",
    "def train(model, loader, optimizer):",
    "def forward(self, p, t):",
    "async def run():",
    "@torch.no_grad()\ndef evaluate(model, loader):",
    "class Trainer:",
    "class DiceLoss(nn.Module):",
    "if __name__ == '__main__':",
]

IMPORTS = [
    "import torch",
    "import torch.nn as nn",
    "import torch.nn.functional as F",
    "from torch import optim",
    "from torch.optim import Adam",
    "from torch.optim import *",
    "from torch.utils.data import DataLoader",
    "# trainlint: noqa: TL002",
]


@st.composite
def _block(draw, depth: int = 0):
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 3)) if depth < 3 else 0
        if kind == 0:
            lines.extend(draw(st.sampled_from(SIMPLE)).format(opt=draw(OPT)).split("\n"))
            if draw(st.integers(0, 6)) == 0:
                lines.append(draw(st.sampled_from(["", "# a comment", "    # odd comment"])))
        elif kind == 1:
            lines.append(draw(st.sampled_from(["if use_amp:", "if i % accum == 0:", "if (", "try:"])))
            if lines[-1] == "if (":
                lines[-1:] = ["if (", "    i % 2", "):"]
            lines.extend(_indent(draw(_block(depth + 1))))
            if lines[-1] and lines[0] and draw(st.booleans()):
                if "try:" in lines:
                    lines.append("except Exception:")
                else:
                    lines.append(draw(st.sampled_from(["else:", "elif other:"])))
                lines.extend(_indent(draw(_block(depth + 1))))
            if "try:" in lines and not any(l.startswith(("except", "finally")) for l in lines):
                lines.append("finally:")
                lines.extend(_indent(["pass"]))
        else:
            lines.extend(draw(st.sampled_from(HEADERS)).split("\n"))
            lines.extend(_indent(draw(_block(depth + 1))))
    return lines


def _indent(lines):
    return ["\t" + l if l else l for l in lines]


@st.composite
def training_programs(draw):
    """(text, newline): a syntactically valid training-like module, indented with tabs or spaces, with
    LF, CRLF or CR line endings."""
    head = draw(st.lists(st.sampled_from(IMPORTS), max_size=4))
    body = draw(_block())
    indent = draw(st.sampled_from(["    ", "  ", "\t"]))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    lines = [l.replace("\t", indent) for l in head + body]
    text = newline.join(lines) + draw(st.sampled_from([newline, "", newline * 2]))
    return text, newline


def _is_valid(text: str) -> bool:
    try:
        compile(text, "gen.py", "exec", dont_inherit=True, flags=0x400)  # PyCF_ONLY_AST
        return True
    except SyntaxError:
        return False


@hsettings(ci=120, slow=5000)
@given(training_programs())
@example((BOTH, "\n"))
@example((BOTH.replace("\n", "\r\n"), "\r\n"))
@example((BOTH.replace("\n", "\r"), "\r"))
def test_training_programs_never_crash_lint_or_fix(program):
    text, newline = program
    valid = _is_valid(text)
    check_source(text, newline, valid=valid)


# -- decoding arbitrary bytes ------------------------------------------------------------------------

def _codec_names():
    import encodings
    import encodings.aliases
    import pkgutil

    names = set(encodings.aliases.aliases.values()) | {m.name for m in pkgutil.iter_modules(encodings.__path__)}
    return sorted(n for n in names if n not in ("aliases", "mbcs", "oem", "cp65001") and not n.startswith("_"))


@pytest.mark.parametrize("codec", ["undefined", "punycode", "hex", "rot13", "utf-16", "klingon"])
def test_every_coding_cookie_is_a_source_error_not_a_crash(codec):
    data = b"# -*- coding: " + codec.encode() + b" -*-\nloss.backward(); opt.step()\n"
    try:
        decode(data)
    except SourceError:
        pass


@hsettings(ci=150, slow=5000)
@given(st.sampled_from(_codec_names()), st.binary(max_size=200), st.booleans())
def test_decode_arbitrary_bytes_raises_only_source_error(codec, payload, bom):
    data = (b"\xef\xbb\xbf" if bom else b"") + b"# -*- coding: " + codec.encode() + b" -*-\n" + payload
    for blob in (data, payload):
        try:
            src = decode(blob)
        except SourceError:
            continue
        lint_text(src.text + "\n" + PREFILTER, "b.py", STATIC_CODES, OPTS)


# -- the command line on awkward files --------------------------------------------------------------

def cli(*args, input=None):
    """Run the CLI in-process; fail with the traceback if it raised anything but SystemExit."""
    r = CliRunner().invoke(main, list(args), input=input, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        pytest.fail("trainlint raised:\n" + "".join(traceback.format_exception(*r.exc_info)))
    assert "Traceback" not in r.output, r.output
    return r


def run_cli(args, cwd, timeout=120, **kw):
    """Run `python -m trainlint` in a subprocess; fail on a crash, a hang or a traceback."""
    try:
        r = subprocess.run([sys.executable, "-m", "trainlint", *args], cwd=cwd, capture_output=True,
                           timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"trainlint {' '.join(args)} did not finish within {timeout}s")
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode in (0, 1, 2), f"trainlint crashed (exit status {r.returncode}):\n{out[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
    r.out = out
    return r


def _mixed(text: str) -> str:
    return "".join(l + ("\r\n" if i % 2 else "\n") for i, l in enumerate(text.split("\n")[:-1]))


# name -> (bytes, expected exit status, text the output must contain)
CASES = {
    "nul": (b"loss.backward()\x00\nopt.step()\n", 1, "NUL"),
    "nul_late": (BAD.encode() + b"\x00", 1, "NUL"),
    "invalid_utf8": (b"x = '\xff\xfe'\n" + BAD.encode(), 1, "not valid utf-8"),
    "invalid_utf8_skipped": (b"x = '\xff\xfe'\n", 1, "not valid utf-8"),
    "surrogate_utf8": (b"x = '\xed\xa0\x80'\n" + BAD.encode(), 1, "TL000"),
    "unknown_cookie": (b"# -*- coding: klingon -*-\n" + BAD.encode(), 1, "encoding"),
    "wrong_cookie": (b"# -*- coding: ascii -*-\nx = '\xc3\xa9'\n" + BAD.encode(), 1, "not valid ascii"),
    "undefined_cookie": (b"# -*- coding: undefined -*-\n" + BAD.encode(), 1, "TL000"),
    "punycode_cookie": (b"# vim: set fileencoding=punycode :\n" + BAD.encode(), 1, "TL000"),
    "latin1_cookie": (b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + BAD.encode(), 1, "10:9: TL001"),
    "bom": (b"\xef\xbb\xbf" + BAD.encode(), 1, "8:9: TL001"),
    "bom_only": (b"\xef\xbb\xbf", 0, ""),
    "crlf": (BAD.replace("\n", "\r\n").encode(), 1, "8:9: TL001"),
    "cr": (BAD.replace("\n", "\r").encode(), 1, "8:9: TL001"),
    "mixed_eol": (_mixed(BAD).encode(), 1, "8:9: TL001"),
    "tabs": (BAD.replace("    ", "\t").encode(), 1, "8:3: TL001"),
    "tabs_and_spaces": (b"for x in loader:\n\tloss.backward()\n        opt.step()\n", None, ""),
    "form_feed": (b"\x0c" + BAD.encode(), 1, "TL001"),
    "empty": (b"", 0, ""),
    "blank_lines": (b"\n\n\r\n  \n", 0, ""),
    "only_prefilter_words": (PREFILTER.encode(), 0, ""),
    "no_final_newline": (BAD.rstrip("\n").encode(), 1, "8:9: TL001"),
    "backslash_at_eof": (b"loss.backward(); opt.step() \\", 1, "TL000"),
    "unterminated_string": (b'"""\nloss.backward(); opt.step()\n', 1, "TL000"),
    "syntax_error": (b"for x in loader:\n    loss.backward(\n    opt.step()\n", 1, "TL000 syntax error"),
    "python2": (b"print 'loss.backward() opt.step()'\nexec 'x'\n", 1, "TL000"),
    "emoji_before_finding": (BAD.replace("optimizer.step()", "e = '\U0001f600'; optimizer.step()").encode(), 1, "TL001"),
    "long_line": (b"# " + b"x" * 1_000_000 + b"\n" + BAD.encode(), 1, "TL001"),
    # CPython refuses more than 200 nested parentheses: a TL001 or a TL000 are both fine, a crash is not.
    "deep_parens_1000": ((PREFILTER + "x = " + "(" * 1000 + "1" + ")" * 1000 + "\n" + BAD).encode(), 1,
                         "case_deep_parens_1000.py:"),
    "nested_ifs_100": ((PREFILTER + "".join("    " * i + "if x:\n" for i in range(100)) + "    " * 100 + "pass\n").encode(), 1, "TL000"),
    "nested_ifs_99": ((PREFILTER + "".join(" " * i + "if x:\n" for i in range(99)) + " " * 99 + "pass\n").encode(), 0, ""),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_awkward_file_through_cli_runner(tmp_path, monkeypatch, name):
    data, code, needle = CASES[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"case_{name}.py").write_bytes(data)
    r = cli("--no-cache", "--output-format", "concise", f"case_{name}.py")
    if code is not None:
        assert r.exit_code == code, r.output
    else:
        assert r.exit_code in (0, 1), r.output
    assert needle in r.output
    # The fixer on the same file: no crash, and the file still decodes the same way.
    r = cli("--no-cache", "--fix", "--unsafe-fixes", "--output-format", "concise", f"case_{name}.py")
    assert r.exit_code in (0, 1), r.output


def test_awkward_files_through_subprocess(tmp_path):
    d = tmp_path / "tree"
    d.mkdir()
    for name, (data, _, _) in CASES.items():
        (d / f"case_{name}.py").write_bytes(data)
    r = run_cli(["--no-cache", "--output-format", "concise", "tree"], cwd=tmp_path)
    assert r.returncode == 1
    for name, (_, code, needle) in CASES.items():
        if code == 1:
            assert f"case_{name}.py:" in r.out, name
    r = run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "tree"], cwd=tmp_path)
    assert r.returncode == 1


def test_awkward_stdin(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name, (data, code, _) in CASES.items():
        if name == "long_line":
            continue
        r = cli("--no-cache", "--stdin-filename", f"case_{name}.py", "-", input=data)
        assert r.exit_code in (0, 1, 2), (name, r.output)
        r = cli("--fix", "--unsafe-fixes", "--stdin-filename", f"case_{name}.py", "-", input=data)
        assert r.exit_code in (0, 1, 2), (name, r.output)


def _notebook(source) -> bytes:
    return json.dumps({"cells": [{"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
                                  "execution_count": None}], "metadata": {}, "nbformat": 4,
                       "nbformat_minor": 5}).encode()


# Notebooks are discovered and linted too: name -> (bytes, expected exit status or None for 0/1)
NOTEBOOKS = {
    "good": (_notebook(BAD), 1),
    "invalid_json": (b"{", 1),
    "empty": (b"", 1),
    "list": (b"[]", 1),
    "cells_not_list": (b'{"cells": 3}', 1),
    "cell_not_dict": (b'{"cells": [3]}', None),
    "source_int": (b'{"cells": [{"cell_type": "code", "source": 3}]}', None),
    "source_list_of_ints": (b'{"cells": [{"cell_type": "code", "source": [1, 2]}]}', None),
    "source_null": (b'{"cells": [{"cell_type": "code", "source": null}]}', None),
    "deep_json": (b"[" * 100_000 + b"]" * 100_000, 1),
    "huge_int": (b'{"cells": [], "nbformat": ' + b"9" * 5000 + b"}", 1),
    "not_utf8": (b"\xff\xfe{}", 1),
    "bom": (b"\xef\xbb\xbf" + _notebook(BAD), 1),
    "magics": (_notebook("%matplotlib inline\n!pip install x\n" + BAD), 1),
    "syntax_error_cell": (_notebook("for x in loader:\n    loss.backward(\n    opt.step()\n"), 1),
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_awkward_notebook(tmp_path, monkeypatch, name):
    data, code = NOTEBOOKS[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"case_{name}.ipynb").write_bytes(data)
    (tmp_path / "case_train.py").write_text(BAD)
    for args in (["--no-cache"], ["--no-cache", "--fix", "--unsafe-fixes"], ["--no-cache", "--diff", "--unsafe-fixes"]):
        (tmp_path / "case_train.py").write_text(BAD)
        r = cli(*args, "--output-format", "concise", ".")
        assert r.exit_code in (0, 1, 2), r.output
        if args == ["--no-cache"]:
            assert r.exit_code == 1 and "case_train.py:8:9: TL001" in r.output
            if code == 1:
                assert f"case_{name}.ipynb:" in r.output


def test_big_file_5mb(tmp_path):
    """5 MB: a training loop, then megabytes of comments and strings (parsed: the prefilter words are there)."""
    chunk = "# " + "padding " * 12 + "\n" + "s = '" + "x" * 900 + "'\n"
    text = BAD + chunk * (5_000_000 // len(chunk) + 1)
    assert len(text) >= 5_000_000
    (tmp_path / "case_big.py").write_text(text)
    (tmp_path / "case_big_skipped.py").write_text("x = 1\n" * 900_000)  # no prefilter word: not parsed
    r = run_cli(["--no-cache", "--output-format", "concise", "case_big.py", "case_big_skipped.py"], cwd=tmp_path)
    assert r.returncode == 1 and "case_big.py:8:9: TL001" in r.out
    r = run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "case_big.py"], cwd=tmp_path)
    assert r.returncode == 0, r.out
    data = (tmp_path / "case_big.py").read_text()
    assert data.endswith(chunk) and "optimizer.zero_grad()" in data


@pytest.mark.skipif(not SLOW, reason="opt-in: TRAINLINT_SLOW=1")
def test_big_generated_code_file_5mb_slow(tmp_path):
    """5 MB of real code (thousands of training functions) within ten minutes."""
    fn = BAD.split("\n", 2)[2].replace("def train(", "def train_{i}(") + "\n"
    parts, size, i = ["import torch\n"], 0, 0
    while size < 5_000_000:
        parts.append(fn.format(i=i))
        size += len(parts[-1])
        i += 1
    (tmp_path / "case_big_code.py").write_text("".join(parts))
    r = run_cli(["--no-cache", "--statistics", "case_big_code.py"], cwd=tmp_path, timeout=600)
    assert r.returncode == 1 and f"{i}\tTL001" in r.out


def _gen_optimizers(n: int) -> str:
    fn = "def train_{i}(model, loader):\n    opt = torch.optim.Adam(model.parameters(), lr=0.1)\n" \
         "    for x, y in loader:\n        opt.zero_grad()\n        model(x).mean().backward()\n        opt.step()\n\n"
    return "import torch\n" + "".join(fn.format(i=i) for i in range(n))


def test_work_is_not_quadratic_in_the_number_of_optimizers(monkeypatch):
    """A big file must not take hours: 8x the optimizers may cost ~8x the work, not ~64x. Counted in
    calls of the hot helpers (not timed: timings belong in benchmarks/)."""
    import trainlint.analysis.index as index_mod
    import trainlint.analysis.precision as precision

    counts = {"cast_of": 0, "qualify": 0}
    real_cast_of, real_qualify = precision.cast_of, index_mod.Imports.qualify

    def cast_of(*a, **k):
        counts["cast_of"] += 1
        return real_cast_of(*a, **k)

    def qualify(self, *a, **k):
        counts["qualify"] += 1
        return real_qualify(self, *a, **k)

    monkeypatch.setattr(precision, "cast_of", cast_of)
    monkeypatch.setattr(index_mod.Imports, "qualify", qualify)

    def work(n):
        for k in counts:
            counts[k] = 0
        lint_text(_gen_optimizers(n), "gen.py", STATIC_CODES, OPTS)
        return dict(counts)

    small, big = work(50), work(400)
    for k in counts:
        assert big[k] <= 10 * max(small[k], 1), (k, small, big)


# -- nesting that overflows the parser's stack --------------------------------------------------------

DEEP = {
    "parens_5000": "x = " + "(" * 5000 + "1" + ")" * 5000 + "\n",
    "lists_3000": "x = " + "[" * 3000 + "]" * 3000 + "\n",
    "not_20000": "x = " + "not " * 20000 + "a\n",
    "lambdas_10000": "x = " + "lambda: " * 10000 + "a\n",
}
if SLOW:  # LibCST takes ~50 s before it overflows on these; CPython refuses them at once
    DEEP.update({
        "call_chain_8000": "x = f" + "()" * 8000 + "\n",
        "power_chain_8000": "x = " + "a ** " * 8000 + "a\n",
        "attribute_chain_20000": "x = a" + ".b" * 20000 + "\n",
        "subscript_chain_20000": "x = a" + "[0]" * 20000 + "\n",
        # CPython refuses these at once (RecursionError); LibCST needs many minutes.
        "sum_chain_20000": "x = " + "+".join(["a"] * 20000) + "\n",
        "bitor_chain_20000": "x = " + " | ".join(["a"] * 20000) + "\n",
    })


# Nesting with something between the openers: CPython refuses more than 200 nested brackets (or runs out
# of its parser's stack) at once; LibCST's native parser overflows the C stack and kills the process.
NESTED = {
    "call_args_5000": "x = " + "f(a, " * 5000 + "1" + ")" * 5000,
    "dicts_5000": "x = " + "{'k': " * 5000 + "1" + "}" * 5000,
    "tuples_5000": "x = " + "(a, " * 5000 + "1" + ")" * 5000,
    "subscripts_5000": "x = " + "a[" * 5000 + "1" + "]" * 5000,
    "comprehensions_3000": "x = " + "[y for y in " * 3000 + "z" + "]" * 3000,
    "sums_in_parens_5000": "x = " + "(a + " * 5000 + "1" + ")" * 5000,
    "negated_parens_5000": "x = " + "-(" * 5000 + "1" + ")" * 5000,
    "not_parens_5000": "x = " + "not (" * 5000 + "a" + ")" * 5000,
    "ternaries_5000": "x = " + "(a if b else " * 5000 + "c" + ")" * 5000,
    "lambdas_with_args_10000": "x = " + "lambda x: " * 10000 + "a",
    "starred_5000": "x = " + "[*" * 5000 + "a" + "]" * 5000,
    "elif_chain_10000": "if a:\n    pass\n" + "elif a:\n    pass\n" * 10000,
}
# Valid Python (CPython compiles it) that LibCST's parser overflows on: linted, or a TL000, never a crash.
NESTED_VALID = {
    "and_chain_10000": "x = " + " and ".join(["a"] * 10000),
    "or_chain_10000": "x = " + " or ".join(["a"] * 10000),
}

_LINT_ONE = """
import sys
from trainlint.codes import STATIC_CODES
from trainlint.config import Settings
from trainlint.engine import lint_text
r = lint_text(open(sys.argv[1], encoding="utf-8").read(), sys.argv[1], STATIC_CODES, Settings().rule_options())
print(" | ".join(d.code + " " + d.message for d in r.diagnostics))
"""


@pytest.mark.parametrize("name", sorted(NESTED))
def test_nested_shapes_are_tl000_not_a_crash(tmp_path, name):
    """lint_text in a child process (a crash would take pytest down with it): a TL000, not a SIGSEGV."""
    path = tmp_path / f"case_{name}.py"
    path.write_text(PREFILTER + NESTED[name] + "\n")
    r = subprocess.run([sys.executable, "-c", _LINT_ONE, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"lint_text crashed (exit status {r.returncode}) on {name}: {r.stderr[-2000:]}"
    assert "TL000" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", sorted(NESTED_VALID))
def test_long_valid_chains_do_not_crash(tmp_path, name):
    path = tmp_path / f"case_{name}.py"
    path.write_text(PREFILTER + NESTED_VALID[name] + "\n")
    compile(path.read_text(), str(path), "exec")  # CPython takes it
    r = subprocess.run([sys.executable, "-c", _LINT_ONE, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"lint_text crashed (exit status {r.returncode}) on {name}: {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_nesting_is_a_tl000_not_a_crash(tmp_path, name):
    """Run in a subprocess: LibCST's native parser overflows its stack (SIGSEGV) on these."""
    (tmp_path / f"case_{name}.py").write_text(PREFILTER + DEEP[name])
    (tmp_path / "case_train.py").write_text(BAD)
    r = run_cli(["--no-cache", "--output-format", "concise", "."], cwd=tmp_path, timeout=300)
    assert r.returncode == 1
    assert f"case_{name}.py:" in r.out and "TL000" in r.out
    assert "case_train.py:8:9: TL001" in r.out


# -- paths: permissions, symlinks, special files, files that vanish ------------------------------

@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "case_a.py").write_text(BAD)
    (tmp_path / "case_b.py").write_text(DICE)
    return tmp_path


def test_directory_without_permission(tree):
    locked = tree / "locked"
    locked.mkdir()
    (locked / "case_hidden.py").write_text(BAD)
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK | os.X_OK):
            pytest.skip("running as root: chmod does not lock the directory")
        r = cli("--no-cache", "--output-format", "concise", ".")
        assert r.exit_code in (1, 2)
        assert "locked" in r.output and "case_a.py:8:9: TL001" in r.output
        r = run_cli(["--no-cache", "--output-format", "concise", "."], cwd=tree)
        assert "locked" in r.out and "case_a.py:8:9: TL001" in r.out
    finally:
        os.chmod(locked, 0o755)


def test_unreadable_directory_simulated(tree, monkeypatch):
    """Permission denied on a directory, also when running as root (os.scandir raises)."""
    locked = tree / "locked"
    locked.mkdir()
    (locked / "case_hidden.py").write_text(BAD)
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r = cli("--no-cache", "--output-format", "concise", ".")
    assert "locked" in r.output and "Permission denied" in r.output
    assert "case_a.py:8:9: TL001" in r.output and "case_b.py:3:16: TL002" in r.output
    assert r.exit_code in (1, 2)


def test_unreadable_file_simulated(tree, monkeypatch):
    import builtins

    import trainlint.source

    real = builtins.open

    def fake_open(path, *a, **kw):
        if os.path.basename(os.fspath(path)) == "case_a.py":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(trainlint.source, "open", fake_open, raising=False)
    r = cli("--no-cache", "--output-format", "concise", ".")
    assert r.exit_code == 1
    assert "case_a.py:1:1: TL000 cannot read file: Permission denied" in r.output
    assert "case_b.py:3:16: TL002" in r.output


def test_unreadable_file_real_chmod(tree):
    os.chmod(tree / "case_a.py", 0)
    if os.access(tree / "case_a.py", os.R_OK):
        pytest.skip("running as root: chmod does not make the file unreadable")
    r = run_cli(["--no-cache", "--output-format", "concise", "."], cwd=tree)
    assert r.returncode == 1 and "case_a.py:1:1: TL000" in r.out and "case_b.py:3:16: TL002" in r.out


def test_symlink_loops(tree):
    os.symlink("case_loop2.py", tree / "case_loop1.py")
    os.symlink("case_loop1.py", tree / "case_loop2.py")
    os.symlink("nowhere.py", tree / "case_dangling.py")
    (tree / "sub").mkdir()
    os.symlink("..", tree / "sub" / "up")  # a directory loop
    os.symlink(".", tree / "sub" / "self")
    for run in (lambda *a: cli(*a), lambda *a: run_cli(list(a), cwd=tree)):
        r = run("--no-cache", "--output-format", "concise", ".")
        out = r.output if hasattr(r, "output") else r.out
        assert (r.exit_code if hasattr(r, "exit_code") else r.returncode) == 1
        assert out.count("case_a.py:8:9: TL001") == 1 and "case_b.py:3:16: TL002" in out
        assert "case_loop1.py" in out and "case_dangling.py" in out
        r = run("--no-cache", "--output-format", "concise", "case_loop1.py", "sub/up", "case_a.py")
        out = r.output if hasattr(r, "output") else r.out
        assert (r.exit_code if hasattr(r, "exit_code") else r.returncode) == 2
        assert "case_loop1.py" in out and "TL001" in out


def test_file_vanishes_between_discovery_and_linting(tree, monkeypatch):
    import trainlint.files

    real = trainlint.files.discover

    def discover(*a, **kw):
        found = real(*a, **kw)
        os.unlink(tree / "case_a.py")  # deleted after the walk, before it is read
        (tree / "case_b.py").unlink()
        (tree / "case_b.py").mkdir()  # replaced by a directory
        return found

    (tree / "case_c.py").write_text(BAD)
    monkeypatch.setattr(trainlint.files, "discover", discover)
    r = cli("--output-format", "concise", ".")  # with the cache: its key cannot be computed either
    assert r.exit_code == 1
    assert "case_a.py:1:1: TL000 cannot read file" in r.output
    assert "case_b.py:1:1: TL000 cannot read file" in r.output
    assert "case_c.py:8:9: TL001" in r.output


def test_folder_vanishes_before_fix_is_written(tree, monkeypatch):
    """The file is read and fixed, then its folder is deleted: TL000 `cannot write`, the others are fixed."""
    import trainlint.source

    (tree / "sub").mkdir()
    (tree / "sub" / "case_gone.py").write_text(BAD)
    real = trainlint.source.read_source

    def read_source(path):
        src = real(path)
        if path.endswith("case_gone.py"):
            shutil.rmtree(tree / "sub")
        return src

    monkeypatch.setattr(trainlint.source, "read_source", read_source)
    r = cli("--no-cache", "--fix", "--unsafe-fixes", "--output-format", "concise", ".")
    assert r.exit_code == 1
    assert "case_gone.py:1:1: TL000 cannot write fixed file" in r.output
    assert not (tree / "sub").exists()
    assert "optimizer.zero_grad()" in (tree / "case_a.py").read_text()
    assert "(2 * inter) / (" in (tree / "case_b.py").read_text()


def test_files_vanish_while_a_real_run_is_going(tmp_path):
    """A subprocess lints (and fixes) a tree while files are deleted, replaced by folders or by dangling
    symlinks under it: whatever it meets, no traceback and no crash."""
    for mode in (["--no-cache"], [], ["--no-cache", "--fix", "--unsafe-fixes"]):
        tree = tmp_path / f"tree{len(mode)}"
        tree.mkdir()
        files = []
        for i in range(200):
            f = tree / f"case_{i:03d}.py"
            f.write_text(BAD)
            files.append(f)
        proc = subprocess.Popen([sys.executable, "-m", "trainlint", *mode, "-j", "2", "--cache-dir",
                                 str(tmp_path / "cache"), "--output-format", "concise", tree.name],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        i = 0
        while proc.poll() is None and i < len(files):
            f = files[-1 - i]
            f.unlink()
            if i % 3 == 1:
                f.mkdir()
            elif i % 3 == 2:
                os.symlink("nowhere.py", f)
            i += 1
            time.sleep(0.002)
        out, err = proc.communicate(timeout=120)
        text = (out + err).decode("utf-8", "replace")
        assert proc.returncode in (0, 1, 2), text[-3000:]
        assert "Traceback" not in text, text[-3000:]


def test_dangling_symlink_named_on_command_line(tree):
    os.symlink("nowhere.py", tree / "case_dangling.py")
    r = run_cli(["--no-cache", "case_dangling.py", "case_a.py"], cwd=tree)
    assert r.returncode == 2 and "case_dangling.py" in r.out and "TL001" in r.out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_in_tree_does_not_hang(tree):
    os.mkfifo(tree / "case_fifo.py")
    r = run_cli(["--no-cache", "--output-format", "concise", "."], cwd=tree, timeout=10)
    assert "case_a.py:8:9: TL001" in r.out


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.skipif(not os.path.exists("/dev/zero") or resource is None, reason="needs /dev/zero")
def test_symlink_to_endless_device_in_tree(tree):
    os.symlink("/dev/zero", tree / "case_zero.py")
    r = run_cli(["--no-cache", "--output-format", "concise", "."], cwd=tree, timeout=60,
                preexec_fn=_limit_memory)
    assert "case_a.py:8:9: TL001" in r.out


# -- an internal error in one rule is a TL000 for that file, nothing more ----------------------------

def _boom(ctx):
    raise RuntimeError("boom in TL002")


def test_rule_crash_is_tl000_and_hides_nothing(tree, monkeypatch):
    import trainlint.rules.tl002_dice_smooth_numerator as tl002

    monkeypatch.setattr(tl002, "check", _boom)
    (tree / "case_both.py").write_text(BOTH)
    for args in (["--no-cache"], [], ["--no-cache", "--fix", "--unsafe-fixes"], ["--no-cache", "-j", "1"]):
        (tree / "case_both.py").write_text(BOTH)
        (tree / "case_a.py").write_text(BAD)
        r = cli(*args, "--output-format", "concise", ".")
        assert r.exit_code == 1, r.output
        assert "case_both.py:1:1: TL000 internal error in TL002: RuntimeError: boom in TL002" in r.output
        assert "case_b.py:1:1: TL000 internal error in TL002" in r.output
        if "--fix" in args:
            assert "optimizer.zero_grad()" in (tree / "case_both.py").read_text()
            assert "optimizer.zero_grad()" in (tree / "case_a.py").read_text()
        else:
            assert "case_both.py:8:9: TL001" in r.output and "case_a.py:8:9: TL001" in r.output
    r = cli("--no-cache", "--output-format", "json", "--stdin-filename", "x.py", "-", input=BOTH)
    codes = sorted(d["code"] for d in json.loads(r.stdout))
    assert codes == ["TL000", "TL001"], codes


def test_rule_crash_in_every_rule(tree, monkeypatch):
    import trainlint.rules as rules
    import importlib

    for code, mod in rules.RULE_MODULES.items():
        monkeypatch.setattr(importlib.import_module(mod), "check", _boom)
    (tree / "case_all.py").write_text("".join(open(path, encoding="utf-8").read() for path in EXAMPLES))
    r = cli("--no-cache", "--output-format", "json", "case_all.py")
    diags = json.loads(r.stdout)
    assert r.exit_code == 1
    assert sorted(d["message"].split(":")[0] for d in diags) == [f"internal error in {c}" for c in sorted(rules.RULE_MODULES)]


def test_recursion_in_a_rule_is_tl000(tree, monkeypatch):
    import trainlint.rules.tl001_missing_zero_grad as tl001

    def recurse(ctx):
        return recurse(ctx)

    monkeypatch.setattr(tl001, "check", recurse)
    r = cli("--no-cache", "--output-format", "concise", ".")
    assert r.exit_code == 1
    assert "case_a.py:1:1: TL000 internal error in TL001: RecursionError" in r.output
    assert "case_b.py:3:16: TL002" in r.output


def test_shared_analysis_crash_is_tl000(tree, monkeypatch):
    """A bug in the index every rule shares: a TL000 for the file, files and stdin alike."""
    import trainlint.analysis.index as index

    def broken(self, *a, **kw):
        raise ValueError("index bug")

    monkeypatch.setattr(index.ModuleIndex, "__init__", broken)
    r = cli("--no-cache", "--output-format", "concise", ".")
    assert r.exit_code == 1 and "case_a.py:1:1: TL000" in r.output and "case_b.py:1:1: TL000" in r.output
    r = cli("--no-cache", "--output-format", "concise", "--stdin-filename", "x.py", "-", input=BAD)
    assert r.exit_code in (1, 2) and "TL000" in r.output


# -- concurrency and the cache ----------------------------------------------------------------------

def _findings(stdout: str):
    return sorted((d["filename"], d["location"]["row"], d["location"]["column"], d["code"], d["message"])
                  for d in json.loads(stdout))


def test_concurrent_runs_share_a_cache(tmp_path):
    src = open(os.path.join(REPO, "examples", "train.py")).read()
    for i in range(40):
        (tmp_path / f"case_{i:03d}.py").write_text(src if i % 2 else BOTH.replace("smooth", f"smooth{i}"))
    cache = tmp_path / "shared_cache"
    args = [sys.executable, "-m", "trainlint", "--output-format", "json", "--cache-dir", str(cache), "-j", "2", "."]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    ref = run_cli(["--no-cache", "--output-format", "json", "."], cwd=tmp_path)
    expected = _findings(ref.stdout)
    assert len(expected) > 40
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 1 and b"Traceback" not in err, err.decode()[-3000:]
        assert _findings(out) == expected
    third = run_cli(["--output-format", "json", "--cache-dir", str(cache), "."], cwd=tmp_path)
    assert _findings(third.stdout) == expected
    for root, _, files in os.walk(cache):
        for f in files:
            if f in (".gitignore", "CACHEDIR.TAG"):
                continue
            assert not f.startswith(".tmp"), "a temporary cache file was left behind"
            with open(os.path.join(root, f)) as fh:
                json.load(fh)


@pytest.mark.parametrize("garbage", [b"", b"{", b"[]", b"null", b'{"diagnostics": [1]}', b'{"diagnostics": null}',
                                     b'{"diagnostics": [{"code": "TL001"}]}', b"\xff\xfe", b'"text"', b"{}"])
def test_corrupt_cache_entries_are_ignored(tree, garbage):
    first = cli("--output-format", "json", ".")
    entries = [os.path.join(r, f) for r, _, fs in os.walk(tree / ".trainlint_cache") for f in fs
               if f not in (".gitignore", "CACHEDIR.TAG")]
    assert entries
    for e in entries:
        with open(e, "wb") as fh:
            fh.write(garbage)
    again = cli("--output-format", "json", ".")
    assert _findings(again.stdout) == _findings(first.stdout)
    assert again.exit_code == 1


def test_unwritable_cache_dir_is_not_fatal(tree):
    (tree / "not_a_dir").write_text("")
    r = cli("--cache-dir", "not_a_dir/cache", "--output-format", "concise", ".")
    assert r.exit_code == 1 and "case_a.py:8:9: TL001" in r.output


# -- static mode never imports or runs the linted code ----------------------------------------------

def _sentinel_tree(root, sentinel):
    payload = f"open({str(sentinel)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("train.py", "conftest.py", "setup.py", "noxfile.py", "__init__.py", "sitecustomize.py",
                 "usercustomize.py", "__main__.py", "trainlint_plugin.py", "case_model.py"):
        (root / name).write_text(payload + BAD)
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(payload + BOTH)
    (root / "backend.py").write_text(payload + "def build_wheel(*a): pass\n")
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]

        [tool.trainlint]
        select = ["TL0"]

        [tool.trainlint.per-file-ignores]
        "setup.py" = ["TL002"]
    """))


@pytest.mark.parametrize("mode", [[], ["--fix", "--unsafe-fixes"], ["--diff", "--unsafe-fixes"], ["-j", "2"]])
def test_static_mode_never_runs_linted_code_subprocess(tmp_path, mode):
    sentinel = tmp_path.parent / f"SENTINEL_{tmp_path.name}"
    _sentinel_tree(tmp_path, sentinel)
    for i in range(30 if mode == ["-j", "2"] else 0):  # enough files for the process pool
        (tmp_path / f"case_{i}.py").write_text(BAD)
    r = run_cli(["--no-cache", *mode, "."], cwd=tmp_path)
    assert r.returncode in (0, 1), r.out
    assert not sentinel.exists(), sentinel.read_text()
    exe = shutil.which("trainlint", path=os.path.dirname(sys.executable))
    if exe:
        subprocess.run([exe, "--no-cache", *mode, "."], cwd=tmp_path, capture_output=True, timeout=120)
        assert not sentinel.exists(), sentinel.read_text()


def test_static_mode_never_runs_linted_code_in_process(tmp_path, monkeypatch):
    sentinel = tmp_path.parent / f"SENTINEL_{tmp_path.name}"
    _sentinel_tree(tmp_path, sentinel)
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    for mode in ([], ["--fix", "--unsafe-fixes"]):
        cli("--no-cache", *mode, ".")
        cli("--no-cache", *mode, "--stdin-filename", "conftest.py", "-", input=BAD)
    assert not sentinel.exists()
    new = set(sys.modules) - before
    assert not {m for m in new if m.split(".")[0] in ("train", "conftest", "setup", "noxfile", "pkg", "backend")}


def test_python_dash_m_does_not_import_modules_of_the_linted_project(tmp_path):
    """`python -m trainlint` puts the working directory first on sys.path: a project file named like a
    module trainlint imports (click.py, difflib.py, tokenize.py, ...) must still not be run."""
    sentinel = tmp_path.parent / f"SENTINEL_{tmp_path.name}"
    payload = f"open({str(sentinel)!r}, 'a').write(__name__ + '\\n')\n"
    for mod in ("click", "libcst", "difflib", "tokenize", "json", "hashlib", "tomllib", "fnmatch",
                "concurrent", "tempfile"):
        (tmp_path / f"{mod}.py").write_text(payload)
    (tmp_path / "train.py").write_text(BAD)
    subprocess.run([sys.executable, "-m", "trainlint", "--no-cache", "--fix", "--unsafe-fixes", "."],
                   cwd=tmp_path, capture_output=True, timeout=120)
    assert not sentinel.exists(), "imported from the linted project: " + sentinel.read_text().replace("\n", " ")


# -- configuration errors: exit 2, naming the file and the key, no traceback ----------------------

def _config_case(tmp_path, monkeypatch, toml: str, args=()):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "case_a.py").write_text(BAD)
    (tmp_path / "pyproject.toml").write_text(toml)
    return cli("--no-cache", *args, "case_a.py")


def test_malformed_toml_names_file_line_and_column(tmp_path, monkeypatch):
    r = _config_case(tmp_path, monkeypatch, '[tool.trainlint]\nselect = ["TL001",\nignore = 3\n')
    assert r.exit_code == 2
    assert str(tmp_path / "pyproject.toml") in r.output
    assert "line 3" in r.output and "column" in r.output
    r = run_cli(["--no-cache", "case_a.py"], cwd=tmp_path)
    assert r.returncode == 2 and "pyproject.toml" in r.out and "line 3" in r.out


def test_malformed_toml_in_working_directory_when_linting_elsewhere(tmp_path, monkeypatch):
    """The linted file has no config of its own, the working directory has a broken one."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "case_a.py").write_text(BAD)
    (tmp_path / "proj" / "pyproject.toml").write_text('[tool.trainlint]\nselect = ["TL001"\n')
    monkeypatch.chdir(tmp_path / "proj")
    r = cli("--output-format", "concise", str(tmp_path / "elsewhere" / "case_a.py"))
    assert r.exit_code in (1, 2)
    r = run_cli(["--output-format", "concise", str(tmp_path / "elsewhere" / "case_a.py")], cwd=tmp_path / "proj")
    assert r.returncode in (1, 2)


BAD_CONFIGS = {
    "select_not_list": ('[tool.trainlint]\nselect = "TL001"\n', "select"),
    "select_ints": ("[tool.trainlint]\nselect = [1]\n", "select"),
    "ignore_unknown_code": ('[tool.trainlint]\nignore = ["TL999"]\n', "TL999"),
    "select_unknown_code": ('[tool.trainlint]\nselect = ["XYZ1"]\n', "XYZ1"),
    "extend_select_unknown": ('[tool.trainlint]\nextend-select = ["TL9"]\n', "TL9"),
    "unknown_key": ('[tool.trainlint]\nselcet = ["TL001"]\n', "selcet"),
    "unsafe_fixes_string": ('[tool.trainlint]\nunsafe-fixes = "yes"\n', "unsafe-fixes"),
    "exclude_string": ('[tool.trainlint]\nexclude = "build"\n', "exclude"),
    "cache_dir_int": ("[tool.trainlint]\ncache-dir = 3\n", "cache-dir"),
    "per_file_ignores_list": ('[tool.trainlint]\nper-file-ignores = ["TL001"]\n', "per-file-ignores"),
    "per_file_ignores_unknown_code": ('[tool.trainlint.per-file-ignores]\n"tests/*" = ["TL777"]\n', "TL777"),
    "per_file_ignores_not_list": ('[tool.trainlint.per-file-ignores]\n"tests/*" = "TL001"\n', "per-file-ignores"),
    "rules_unknown_code": ("[tool.trainlint.rules.TL999]\nx = 1\n", "TL999"),
    "rules_not_table": ("[tool.trainlint]\nrules = 3\n", "rules"),
    "rules_unknown_option": ("[tool.trainlint.rules.TL003]\nbatch-size = 3\n", "batch-size"),
    "rules_wrong_type": ('[tool.trainlint.rules.TL005]\nrequire-explicit-eps = "yes"\n', "require-explicit-eps"),
    "rules_list_of_ints": ("[tool.trainlint.rules.TL003]\nbatch-size-names = [1, 2]\n", "batch-size-names"),
    "rules_option_of_rule_without_options": ("[tool.trainlint.rules.TL001]\nfoo = true\n", "foo"),
    "runtime_unknown": ("[tool.trainlint.runtime]\neveryy = 3\n", "everyy"),
    "runtime_string": ('[tool.trainlint.runtime]\nevery = "3"\n', "every"),
    "table_not_table": ("[tool]\ntrainlint = 3\n# tool.trainlint\n", "trainlint"),
    "not_utf8": ('[tool.trainlint]\nselect = ["TL001"]\n# \xff\n', "UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_exit_2_naming_the_key(tmp_path, monkeypatch, name):
    toml, key = BAD_CONFIGS[name]
    if name == "not_utf8":
        monkeypatch.chdir(tmp_path)
        (tmp_path / "case_a.py").write_text(BAD)
        (tmp_path / "pyproject.toml").write_bytes(toml.encode("latin-1"))
        r = cli("--no-cache", "case_a.py")
    else:
        r = _config_case(tmp_path, monkeypatch, toml)
    assert r.exit_code == 2, r.output
    assert key in r.output and "pyproject.toml" in r.output, r.output


def test_bad_config_via_config_flag_and_subprocess(tmp_path):
    (tmp_path / "case_a.py").write_text(BAD)
    (tmp_path / "other.toml").write_text('select = ["TL001", 3]\n')
    r = run_cli(["--no-cache", "--config", "other.toml", "case_a.py"], cwd=tmp_path)
    assert r.returncode == 2 and "select" in r.out
    r = run_cli(["--no-cache", "--config", "missing.toml", "case_a.py"], cwd=tmp_path)
    assert r.returncode == 2 and "missing.toml" in r.out
    r = run_cli(["--no-cache", "--config", ".", "case_a.py"], cwd=tmp_path)
    assert r.returncode == 2
    r = run_cli(["--no-cache", "--select", "TL001,NOPE", "case_a.py"], cwd=tmp_path)
    assert r.returncode == 2 and "NOPE" in r.out


def test_bad_nested_config_stops_with_exit_2(tmp_path, monkeypatch):
    """A broken pyproject.toml in a sub-folder is found while walking: exit 2, not a traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "case_a.py").write_text(BAD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "case_b.py").write_text(BAD)
    (tmp_path / "sub" / "pyproject.toml").write_text("[tool.trainlint]\nselect = [\n")
    r = cli("--no-cache", ".")
    assert r.exit_code == 2 and "sub" in r.output and "pyproject.toml" in r.output


# -- odd file names in every output format ------------------------------------------------------------

ODD_NAMES = (b"case_\xff\xfe.py", b"case_new\nline.py", b"case_%0A,::x.py", b"case_ \xc3\xa9 space.py",
             b"case_tab\t.py", b"-case_dash.py")


@pytest.fixture
def odd_tree(tmp_path):
    if sys.platform != "linux":
        pytest.skip("needs a file system that takes any bytes in names")
    d = tmp_path / "tree"
    d.mkdir()
    for name in ODD_NAMES:
        with open(os.path.join(os.fsencode(d), name), "wb") as fh:
            fh.write(BAD.encode())
    return tmp_path


@pytest.mark.parametrize("fmt", ["full", "concise", "json", "json-lines", "github", "sarif"])
def test_odd_file_names_in_every_output_format(odd_tree, fmt):
    """Names that are not UTF-8 (a Linux file name is any bytes), with a newline, `%`, `:`, `,`.
    PYTHONIOENCODING=utf-8:strict is what Python uses with a UTF-8 locale such as en_US.UTF-8."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    r = run_cli(["--no-cache", "--output-format", fmt, "tree"], cwd=odd_tree, env=env)
    assert r.returncode == 1, r.out[-2000:]
    text = r.stdout.decode("utf-8")  # machine-readable output must be valid UTF-8
    if fmt in ("json", "sarif"):
        json.loads(text)
    if fmt == "json-lines":
        assert len([json.loads(l) for l in text.splitlines() if l.strip()]) == len(ODD_NAMES)
    if fmt == "github":
        lines = text.splitlines()
        assert len([l for l in lines if l.startswith("::error ")]) == len(ODD_NAMES)
        assert all(l.startswith("::error ") for l in lines if l.strip()), lines


def test_odd_file_names_fix_and_cli_runner(odd_tree, monkeypatch):
    monkeypatch.chdir(odd_tree)
    for fmt in ("full", "json", "github"):
        r = cli("--no-cache", "--output-format", fmt, "tree")
        assert r.exit_code == 1
    r = cli("--no-cache", "--fix", "--unsafe-fixes", "--show-fixes", "tree")
    assert r.exit_code == 0
    for name in ODD_NAMES:
        with open(os.path.join(os.fsencode(odd_tree / "tree"), name), "rb") as fh:
            assert b"optimizer.zero_grad()" in fh.read()


def test_parse_without_node_validation_builds_the_same_tree():
    """engine.parse skips LibCST's per-node validation while the parser builds the tree: the tree must be
    the one LibCST builds with it, and validation must be back on afterwards."""
    import libcst

    from trainlint import engine

    for path in EXAMPLES + [os.path.join(REPO, "src", "trainlint", "engine.py")]:
        text = open(path, encoding="utf-8").read()
        fast = engine.parse(text)
        assert fast.deep_equals(libcst.parse_module(text)) and fast.code == text
    with pytest.raises(libcst.CSTValidationError):
        libcst.Name("not a name")  # validation is back on
