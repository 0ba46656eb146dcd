"""The command line, through click's runner and through the installed entry point."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from trainlint.cli import main

BAD = """\
import torch

def train(model, loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        loss = model(x).sub(y).pow(2).mean()
        loss.backward()
        optimizer.step()
"""
GOOD = BAD.replace("    for x, y in loader:\n", "    for x, y in loader:\n        optimizer.zero_grad()\n")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def invoke(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(BAD)
    (tmp_path / "ok.py").write_text(GOOD)
    return tmp_path


def test_finding_exit_1_and_full_output(proj):
    r = invoke("--no-cache", "train.py")
    assert r.exit_code == 1
    assert "train.py:8:9: TL001" in r.output
    assert "^^^^^^^^^^^^^^^^ TL001" in r.output
    assert "|+" in r.output  # the fix is shown as a diff
    assert "Found 1 error." in r.output


def test_clean_file_exit_0(proj):
    r = invoke("--no-cache", "ok.py")
    assert r.exit_code == 0 and "All checks passed!" in r.output


def test_check_subcommand_and_default_path(proj):
    assert invoke("check", "--no-cache").exit_code == 1
    assert invoke("--no-cache").exit_code == 1


def test_concise_output(proj):
    r = invoke("--no-cache", "--output-format", "concise", "train.py")
    assert r.output.splitlines()[0].startswith("train.py:8:9: TL001 ")
    assert "Found 1 error." in r.output


def test_json_output_shape(proj):
    r = invoke("--no-cache", "--output-format", "json", "train.py")
    data = json.loads(r.output)
    assert len(data) == 1
    d = data[0]
    assert set(d) == {"code", "name", "message", "severity", "filename", "cell", "location",
                      "end_location", "fix", "url"}
    assert d["location"] == {"row": 8, "column": 9} and d["end_location"] == {"row": 8, "column": 25}
    assert d["fix"]["applicability"] == "unsafe" and d["fix"]["edits"][0]["content"].startswith("optimizer.zero_grad()")
    assert d["url"].endswith("TL001-missing-zero-grad.md")


def test_json_lines_and_github(proj):
    r = invoke("--no-cache", "--output-format", "json-lines", "train.py")
    assert json.loads(r.output.splitlines()[0])["code"] == "TL001"
    r = invoke("--no-cache", "--output-format", "github", "train.py")
    assert r.output.startswith("::error file=train.py,line=8,endLine=8,col=9,endColumn=25,title=trainlint (TL001)::TL001 ")


def test_exit_zero(proj):
    assert invoke("--no-cache", "--exit-zero", "train.py").exit_code == 0


def test_select_ignore(proj):
    assert invoke("--no-cache", "--ignore", "TL001", "train.py").exit_code == 0
    assert invoke("--no-cache", "--select", "TL002", "train.py").exit_code == 0
    assert invoke("--no-cache", "--select", "TL00", "train.py").exit_code == 1
    assert invoke("--no-cache", "--select", "TL002", "--extend-select", "TL001", "train.py").exit_code == 1


def test_unknown_code_is_usage_error(proj):
    r = invoke("--no-cache", "--select", "XY123", "train.py")
    assert r.exit_code == 2 and "XY123" in r.output


def test_fix_requires_unsafe_for_unsafe_fix(proj):
    r = invoke("--no-cache", "--fix", "train.py")
    assert r.exit_code == 1
    assert (proj / "train.py").read_text() == BAD
    r = invoke("--no-cache", "--fix", "--unsafe-fixes", "train.py")
    assert r.exit_code == 0, r.output
    assert "optimizer.zero_grad()" in (proj / "train.py").read_text()
    r = invoke("--no-cache", "--fix", "--unsafe-fixes", "train.py")
    assert r.exit_code == 0 and "All checks passed!" in r.output


def test_exit_non_zero_on_fix(proj):
    r = invoke("--no-cache", "--fix", "--unsafe-fixes", "--exit-non-zero-on-fix", "train.py")
    assert r.exit_code == 1


def test_diff_writes_nothing(proj):
    r = invoke("--no-cache", "--diff", "--unsafe-fixes", "train.py")
    assert r.exit_code == 1
    assert "+        optimizer.zero_grad()" in r.output
    assert (proj / "train.py").read_text() == BAD


def test_fix_keeps_crlf_bom_and_mode(proj):
    p = proj / "train.py"
    p.write_bytes(b"\xef\xbb\xbf" + BAD.replace("\n", "\r\n").encode())
    os.chmod(p, 0o751)
    assert invoke("--no-cache", "--fix", "--unsafe-fixes", "train.py").exit_code == 0
    data = p.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert b"optimizer.zero_grad()\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o751


def test_fix_keeps_latin1_encoding(proj):
    p = proj / "train.py"
    text = "# -*- coding: latin-1 -*-\n# caf\xe9\n" + BAD
    p.write_bytes(text.encode("latin-1"))
    assert invoke("--no-cache", "--fix", "--unsafe-fixes", "train.py").exit_code == 0
    out = p.read_bytes().decode("latin-1")
    assert "caf\xe9" in out and "optimizer.zero_grad()" in out


def test_missing_path_is_an_error_but_others_are_linted(proj):
    r = invoke("--no-cache", "nope.py", "train.py")
    assert r.exit_code == 2
    assert "nope.py: no such file or directory" in r.output
    assert "TL001" in r.output


def test_syntax_error_reported_and_run_goes_on(proj):
    (proj / "broken.py").write_text("for x in loader:\n    loss.backward(\n    opt.step()\n")
    r = invoke("--no-cache", "--output-format", "concise", ".")
    assert r.exit_code == 1
    assert "broken.py:" in r.output and "TL000 syntax error" in r.output
    assert "train.py:8:9: TL001" in r.output
    assert "Traceback" not in r.output


def test_not_utf8_reported(proj):
    (proj / "bad_enc.py").write_bytes(b"x = '\xff\xfe'\nloss.backward(); opt.step()\n")
    r = invoke("--no-cache", "--output-format", "concise", "bad_enc.py")
    assert r.exit_code == 1 and "TL000 file is not valid utf-8" in r.output


def test_wrong_coding_cookie_reported(proj):
    (proj / "cookie.py").write_bytes(b"# -*- coding: klingon -*-\nx = 1\n")
    r = invoke("--no-cache", "--output-format", "concise", "cookie.py")
    assert r.exit_code == 1 and "TL000" in r.output and "encoding" in r.output


def test_empty_file_and_empty_directory(proj):
    (proj / "empty.py").write_text("")
    assert invoke("--no-cache", "empty.py").exit_code == 0
    (proj / "nothing").mkdir()
    r = invoke("--no-cache", "nothing")
    assert r.exit_code == 0 and "no Python files" in r.output


def test_default_excludes(proj):
    for d in (".venv", "build", "site-packages", "node_modules", "__pycache__"):
        (proj / d).mkdir()
        (proj / d / "train.py").write_text(BAD)
    r = invoke("--no-cache", "--output-format", "concise", ".")
    assert r.output.count("TL001") == 1


def test_quiet(proj):
    r = invoke("--no-cache", "-q", "train.py")
    assert r.exit_code == 1 and "Found" not in r.output and "TL001" in r.output


def test_statistics(proj):
    r = invoke("--no-cache", "--statistics", "train.py")
    assert "1\tTL001" in r.output and "missing-zero-grad" in r.output


def test_stdin(proj):
    r = invoke("--no-cache", "--output-format", "concise", "--stdin-filename", "x.py", "-", input=BAD)
    assert r.exit_code == 1 and "x.py:8:9: TL001" in r.output
    r = invoke("--fix", "--unsafe-fixes", "--stdin-filename", "x.py", "-", input=BAD)
    assert "optimizer.zero_grad()" in r.stdout


def test_help_reads_well():
    r = invoke("--help")
    assert r.exit_code == 0 and "trainlint run" in r.output and "Exit status" in r.output
    r = invoke("check", "--help")
    assert "--unsafe-fixes" in r.output and "--output-format" in r.output


def test_version():
    from trainlint import __version__

    assert __version__ in invoke("--version").output


def test_cache_hit_returns_same_findings(proj):
    first = invoke("--output-format", "json", "train.py").output
    assert os.path.isfile(proj / ".trainlint_cache" / "CACHEDIR.TAG")
    assert (proj / ".trainlint_cache" / ".gitignore").read_text().strip().endswith("*")
    second = invoke("--output-format", "json", "train.py").output
    assert first == second
    (proj / "train.py").write_text(GOOD)
    assert json.loads(invoke("--output-format", "json", "train.py").output) == []


# -- the real entry point ------------------------------------------------------------------------

def _exe():
    exe = shutil.which("trainlint", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("trainlint entry point not installed in this environment")
    return exe


def test_entry_point_subprocess(proj):
    r = subprocess.run([_exe(), "--no-cache", "train.py"], capture_output=True, text=True)
    assert r.returncode == 1 and "TL001" in r.stdout


def test_python_dash_m(proj):
    r = subprocess.run([sys.executable, "-m", "trainlint", "--no-cache", "train.py"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "TL001" in r.stdout


def test_example_shows_findings():
    r = subprocess.run([_exe(), "--no-cache", "examples/"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1
    from trainlint.codes import STATIC_CODES

    assert [c for c in STATIC_CODES if c not in r.stdout] == []  # README: the examples show every rule


def test_static_mode_never_imports_linted_code(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    code = f"open({str(sentinel)!r}, 'w').write('ran')\n" + BAD
    for name in ("train.py", "conftest.py", "setup.py"):
        (tmp_path / name).write_text(code)
    (tmp_path / "pyproject.toml").write_text("[tool.trainlint]\nselect = ['TL001']\n")
    r = subprocess.run([_exe(), "--no-cache", "--fix", "--unsafe-fixes", "."], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not sentinel.exists()


def test_no_torch_import_for_static_mode(proj):
    code = "import sys, trainlint.cli\nfrom trainlint.checker import CheckOptions, run_check\n" \
           "run_check(CheckOptions(paths=['train.py'], no_cache=True, quiet=True))\n" \
           "print('torch' in sys.modules, 'trainlint.runtime.runner' in sys.modules)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=proj)
    assert r.stdout.strip().endswith("False False"), r.stdout + r.stderr


def test_progress_only_on_a_terminal(monkeypatch, capsys):
    from trainlint import checker

    opts = checker.CheckOptions(paths=["."])
    monkeypatch.setattr(checker.sys.stderr, "isatty", lambda: False, raising=False)
    assert checker._progress(500, opts) is None
    monkeypatch.setattr(checker.sys.stderr, "isatty", lambda: True, raising=False)
    p = checker._progress(500, opts)
    assert p is not None
    p.update(250)
    p.finish()
    assert "250/500 files (50%)" in capsys.readouterr().err
    assert checker._progress(500, checker.CheckOptions(paths=["."], quiet=True)) is None
    assert checker._progress(3, opts) is None  # a few files: no progress line


def test_show_fixes(proj):
    (proj / "half.py").write_text("import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters())\n")
    r = invoke("--no-cache", "--fix", "--show-fixes", "half.py")
    assert r.exit_code == 0 and "Fixed 1 in half.py" in r.output


def test_long_dash_banner_is_not_a_nesting_error(proj):
    (proj / "banner.py").write_text("# " + "-" * 120 + "\n" + BAD)
    r = invoke("--no-cache", "--output-format", "concise", "banner.py")
    assert "TL000" not in r.output and "TL001" in r.output
