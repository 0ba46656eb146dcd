"""Fix safety (issue 6): `--fix --unsafe-fixes` keeps every file parsing, is idempotent, leaves files
without fixes untouched, keeps encoding, BOM, line endings and mode, and a killed fix run leaves every
file either old or new, never half written."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_reliability import BAD, OPTS, SLOW, cli, run_cli, training_programs
from trainlint.codes import STATIC_CODES
from trainlint.engine import Job, parse, process
from trainlint.fixer import fix_text
from trainlint.source import decode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = open(os.path.join(REPO, "examples", "train.py"), encoding="utf-8").read()
GOOD = BAD.replace("    for x, y in loader:\n", "    for x, y in loader:\n        optimizer.zero_grad()\n")
EOL = re.compile(rb"\r\n|\r|\n")


def _mixed(text: str) -> str:
    return "".join(l + ("\r\n" if i % 3 == 0 else "\n") for i, l in enumerate(text.split("\n")[:-1]))


def _expected(data: bytes) -> bytes:
    """What a correct fix run writes: fix_text on the decoded text, encoded back the same way."""
    src = decode(data)
    new, applied, _ = fix_text(src.text, "x.py", STATIC_CODES, OPTS, True, src.newline)
    return src.encode(new) if applied else data


# name -> (bytes, mode)
VARIANTS = {
    "lf": (EXAMPLE.encode(), 0o644),
    "crlf": (EXAMPLE.replace("\n", "\r\n").encode(), 0o644),
    "cr": (EXAMPLE.replace("\n", "\r").encode(), 0o644),
    "mixed_eol": (_mixed(EXAMPLE).encode(), 0o644),
    "bom": (b"\xef\xbb\xbf" + EXAMPLE.encode(), 0o644),
    "bom_crlf": (b"\xef\xbb\xbf" + EXAMPLE.replace("\n", "\r\n").encode(), 0o600),
    "latin1": (("# -*- coding: latin-1 -*-\n# r\xe9sum\xe9 \xb5\n" + EXAMPLE).encode("latin-1"), 0o644),
    "cp1252_crlf": (("# coding=cp1252\r\n# \u20ac\r\n" + EXAMPLE.replace("\n", "\r\n")).encode("cp1252"), 0o644),
    "utf8_cookie": (("# -*- coding: utf-8 -*-\n# \u00e9\u00e8 \U0001f600\n" + EXAMPLE).encode(), 0o644),
    "tabs": (EXAMPLE.replace("    ", "\t").encode(), 0o644),
    "executable": (("#!/usr/bin/env python\n" + EXAMPLE).encode(), 0o755),
    "read_only": (EXAMPLE.encode(), 0o444),
    "no_final_newline": (EXAMPLE.rstrip("\n").encode(), 0o640),
    "form_feed": (EXAMPLE.replace("\n\n\ndef make_model", "\n\n\x0c\ndef make_model").encode(), 0o644),
    "trailing_whitespace": (EXAMPLE.replace("\n", "  \n").encode(), 0o644),
    "good": (GOOD.encode(), 0o644),
    "good_crlf_bom": (b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode(), 0o644),
    "syntax_error": (EXAMPLE.replace("def main(", "def main((").encode(), 0o644),
    "not_utf8": (b"# \xff\n" + EXAMPLE.encode(), 0o644),
}


@pytest.fixture
def variants(tmp_path):
    d = tmp_path / "tree"
    d.mkdir()
    for name, (data, mode) in VARIANTS.items():
        p = d / f"case_{name}.py"
        p.write_bytes(data)
        os.chmod(p, mode)
    return d


def _snapshot(d):
    out = {}
    for p in sorted(d.iterdir()):
        st_ = os.lstat(p)
        out[p.name] = (p.read_bytes(), stat.S_IMODE(st_.st_mode), st_.st_ino)
    return out


def test_fix_keeps_encoding_bom_eol_and_mode(variants, tmp_path):
    before = _snapshot(variants)
    r = run_cli(["--no-cache", "--fix", "--unsafe-fixes", "--output-format", "concise", "tree"], cwd=tmp_path)
    assert r.returncode == 1  # the syntax error and the undecodable file remain
    after = _snapshot(variants)
    changed = {n for n in before if before[n][0] != after[n][0]}
    assert changed, "nothing was fixed"
    for name, (old, mode, ino) in before.items():
        new, new_mode, new_ino = after[name]
        assert new_mode == mode, f"{name}: mode {oct(mode)} became {oct(new_mode)}"
        assert new == _expected(old) if name not in ("case_syntax_error.py", "case_not_utf8.py") else new == old, name
        if name not in changed:
            assert new_ino == ino, f"{name}: rewritten although nothing was fixed"
            continue
        src_old, src_new = decode(old), decode(new)
        assert (src_new.encoding, src_new.bom) == (src_old.encoding, src_old.bom), name
        parse(src_new.text)
        assert set(EOL.findall(new)) <= set(EOL.findall(old)), f"{name}: a new kind of line ending"
        if len(set(EOL.findall(old))) == 1:
            assert set(EOL.findall(new)) == set(EOL.findall(old)), name
        assert new.startswith(b"\xef\xbb\xbf") == old.startswith(b"\xef\xbb\xbf"), name
        assert new.endswith((b"\n", b"\r")) == old.endswith((b"\n", b"\r")), f"{name}: final newline changed"
    assert {f"case_{n}.py" for n in ("lf", "crlf", "cr", "bom", "latin1", "tabs", "read_only")} <= changed
    assert "case_good.py" not in changed and "case_good_crlf_bom.py" not in changed
    # A second run changes nothing and rewrites nothing.
    run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "tree"], cwd=tmp_path)
    assert _snapshot(variants) == after


def test_fix_keeps_line_endings_exactly_outside_the_fix(variants, tmp_path):
    """Every untouched line keeps its own line ending, also in a file with mixed endings."""
    old = (variants / "case_mixed_eol.py").read_bytes()
    cli_r = run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "tree/case_mixed_eol.py"], cwd=tmp_path)
    assert cli_r.returncode == 0
    new = (variants / "case_mixed_eol.py").read_bytes()
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    kept = [l for l in old_lines if l in new_lines]
    assert len(kept) >= len(old_lines) - 5  # the 4 lines fixed (TL001 inserts, the others edit in place)


def test_diff_and_check_write_nothing(variants, tmp_path):
    before = _snapshot(variants)
    r = run_cli(["--no-cache", "--diff", "--unsafe-fixes", "tree"], cwd=tmp_path)
    assert r.returncode in (1, 2)
    r = run_cli(["--no-cache", "tree"], cwd=tmp_path)
    assert r.returncode == 1
    assert _snapshot(variants) == before


def test_fix_through_symlink_keeps_the_link(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "case_target.py").write_text(BAD)
    (tmp_path / "tree").mkdir()
    os.symlink("../real/case_target.py", tmp_path / "tree" / "case_link.py")
    r = cli("--no-cache", "--fix", "--unsafe-fixes", "tree")
    assert r.exit_code == 0, r.output
    assert os.path.islink(tmp_path / "tree" / "case_link.py")
    assert "optimizer.zero_grad()" in (tmp_path / "real" / "case_target.py").read_text()


def test_fix_leaves_no_temporary_files(variants, tmp_path):
    run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "tree"], cwd=tmp_path)
    assert not [p.name for p in variants.iterdir() if not p.name.startswith("case_")]


# -- fixing through the file layer, generated programs -----------------------------------------------

ENCODINGS = [
    ("utf-8", b"", ""),
    ("utf-8", b"\xef\xbb\xbf", ""),
    ("latin-1", b"", "# -*- coding: latin-1 -*-\n# caf\xe9\n"),
    ("utf-8", b"", "# \u00e9 \U0001f600\n"),
]


@settings(max_examples=50 if not SLOW else 2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(training_programs(), st.sampled_from(ENCODINGS), st.sampled_from([0o644, 0o755, 0o600]))
def test_fix_files_of_generated_programs(tmp_path, program, enc, mode):
    text, newline = program
    encoding, bom, head = enc
    data = bom + (head.replace("\n", newline) + text).encode(encoding, errors="replace")
    p = tmp_path / "case_gen.py"
    p.write_bytes(data)
    os.chmod(p, mode)
    result = process(Job(str(p), list(STATIC_CODES), OPTS, fix=True, write=True, unsafe=True))
    assert not [d.message for d in result.diagnostics if "internal error" in d.message]
    new = p.read_bytes()
    assert stat.S_IMODE(os.stat(p).st_mode) == mode
    if not result.fixed:
        assert new == data
        return
    assert new == _expected(data)
    src = decode(new)
    assert (src.encoding, src.bom) == (decode(data).encoding, bool(bom))
    parse(src.text)
    assert set(EOL.findall(new)) <= set(EOL.findall(data)) | {newline.encode()}
    again = process(Job(str(p), list(STATIC_CODES), OPTS, fix=True, write=True, unsafe=True))
    assert again.fixed == 0 and p.read_bytes() == new


# -- a fix run killed in the middle -----------------------------------------------------------------

KILL_SOURCE = BAD + "\n\ndef make(model):\n    model = model.half()\n    return torch.optim.Adam(model.parameters())\n"


def test_sigkill_during_fix_leaves_old_or_new_content(tmp_path):
    original = KILL_SOURCE.encode()
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "case_ref.py").write_bytes(original)
    run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "ref"], cwd=tmp_path)
    fixed = (ref / "case_ref.py").read_bytes()
    assert fixed != original and b"zero_grad" in fixed and b"eps=1e-4" in fixed

    tree = tmp_path / "tree"
    n = 300
    for i in range(n):
        sub = tree / f"d{i // 50}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"case_{i:03d}.py").write_bytes(original)
    files = sorted(tree.rglob("*.py"))
    proc = subprocess.Popen([sys.executable, "-m", "trainlint", "--no-cache", "--fix", "--unsafe-fixes", "-q",
                             "-j", "2", "tree"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(f.read_bytes() != original for f in files[::3]) >= 10:  # ~30 of 300 written
                break
            time.sleep(0.005)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
        except ProcessLookupError:
            pass
        proc.wait()
    time.sleep(0.2)
    states = {"old": 0, "new": 0}
    for f in files:
        data = f.read_bytes()
        assert data in (original, fixed), f"{f} is neither the old nor the fixed content: {data[:200]!r}"
        states["old" if data == original else "new"] += 1
    if proc.returncode is not None and proc.returncode < 0:
        assert states["new"] >= 1 and states["old"] >= 1, states  # killed in the middle
    for f in files:  # every file is still fixable, and a finished run gives the same bytes
        assert decode(f.read_bytes())
    r = run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "tree"], cwd=tmp_path, timeout=300)
    assert r.returncode == 0
    assert all(f.read_bytes() == fixed for f in files)


def test_many_fixes_at_one_point_are_all_applied_in_one_run(tmp_path):
    """README: fixing repeats until nothing changes, so a second --fix is a no-op. Here 12 optimizers
    stepped in one loop get 12 insertions at the same point (one per fixer pass)."""
    n = 12
    text = "def train(loader):\n    for x in loader:\n        loss = f(x)\n        loss.backward()\n" + "".join(
        f"        opt{i}.step()\n" for i in range(n))
    (tmp_path / "case_many.py").write_text(text)
    r = run_cli(["--no-cache", "--fix", "--unsafe-fixes", "--output-format", "concise", "case_many.py"], cwd=tmp_path)
    once = (tmp_path / "case_many.py").read_text()
    assert once.count("zero_grad()") == n, r.out
    assert r.returncode == 0, r.out
    run_cli(["--no-cache", "--fix", "--unsafe-fixes", "-q", "case_many.py"], cwd=tmp_path)
    assert (tmp_path / "case_many.py").read_text() == once


def test_two_fix_runs_at_once(tmp_path):
    """Two `--fix` runs on the same tree at the same time: every file ends fully fixed, never mixed."""
    original = KILL_SOURCE.encode()
    ref = tmp_path / "case_ref.py"
    ref.write_bytes(original)
    expected = _expected(original)
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"case_{i:02d}.py").write_bytes(original)
    cmd = [sys.executable, "-m", "trainlint", "--no-cache", "--fix", "--unsafe-fixes", "-q", "tree"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode in (0, 1) and b"Traceback" not in err, err.decode()[-2000:]
    for f in sorted(tree.iterdir()):
        assert f.read_bytes() == expected, f


RUNNABLE = '''\
class Optimizer:
    def step(self):
        pass

    def zero_grad(self):
        pass


class Loss:
    def backward(self):
        pass


def run(n):
    for i in range(n):
        Loss().backward()
        optimizer = Optimizer()
        optimizer.step()


run(3)
'''


def test_fixed_program_still_runs_when_optimizer_is_created_in_the_loop():
    """Seen in torch/_inductor/fx_passes/numeric_utils.py: the optimizer is created inside the loop, after
    backward(). Inserting `optimizer.zero_grad()` at the top of the loop body uses it before it exists."""
    exec(compile(RUNNABLE, "original.py", "exec"), {})
    fixed, applied, _ = fix_text(RUNNABLE, "x.py", STATIC_CODES, OPTS, True)
    try:
        exec(compile(fixed, "fixed.py", "exec"), {})
    except NameError as exc:  # UnboundLocalError is a NameError
        pytest.fail(f"the fixed program fails: {type(exc).__name__}: {exc}\n{fixed}")
