"""What a new user trips over (issue 14): locations, one-line messages, Ruff's conventions."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from trainlint.cli import main
from trainlint.diagnostics import one_line
from trainlint.engine import lint_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = "import torch\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\nfor x in loader:\n    m(x).sum().backward()\n    opt.step()\n"
GOOD = "import torch\nfor x in loader:\n    opt.zero_grad()\n    m(x).sum().backward()\n    opt.step()\n"


def invoke(*args, env=None):
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(BAD)
    (tmp_path / "ok.py").write_text(GOOD)
    return tmp_path


# -- 1: syntax errors where CPython puts them, with CPython's message ------------------------------------

SYNTAX = {
    "missing colon": "import torch\nopt = make()\nfor x in loader\n    loss.backward()\n    opt.step()\n",
    "unclosed paren": "import torch\nx = 1\ny = f(\nloss.backward()\nopt.step()\n",
    "bad dedent": "import torch\nif x:\n        loss.backward()\n        opt.step()\n    y = 2\n",
    "unclosed string": "loss.backward()\nopt.step()\ns = 'abc\n",
    "stray token": "loss.backward()\nopt.step() )\n",
}


@pytest.mark.parametrize("name", list(SYNTAX))
def test_syntax_error_at_cpythons_location_with_its_message(name):
    text = SYNTAX[name]
    with pytest.raises(SyntaxError) as info:
        ast.parse(text)
    (d,) = lint_text(text, "t.py", ["TL001"], {}).diagnostics
    assert d.code == "TL000"
    assert (d.location.row, d.location.column) == (info.value.lineno, info.value.offset)
    assert d.message == f"syntax error: {info.value.msg}"


def test_syntax_error_examples_of_the_issue():
    def where(text):
        (d,) = lint_text(text, "t.py", ["TL001"], {}).diagnostics
        return d.location.row, d.location.column, d.message

    assert where(SYNTAX["missing colon"]) == (3, 16, "syntax error: expected ':'")
    assert where(SYNTAX["unclosed paren"])[:2] == (3, 6)
    assert where(SYNTAX["bad dedent"])[0] == 5


def test_syntax_error_in_a_notebook_names_the_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# t"]},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["import torch\n", "for x in loader\n", "    loss.backward()\n", "    opt.step()\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "t.ipynb").write_text(json.dumps(nb))
    r = invoke("--no-cache", "--output-format", "concise", "t.ipynb")
    assert "t.ipynb:cell 2:2:16: TL000 syntax error: expected ':'" in r.stdout


# -- 3: one line per finding ------------------------------------------------------------------------------

def test_one_line_collapses_quoted_multiline_code():
    assert one_line("`opt.step(\n)` runs in a loop") == "`opt.step()` runs in a loop"
    assert one_line("`criterion(\n    model(x),\n    y,\n) / x.size(0)` is") == "`criterion(model(x), y) / x.size(0)` is"
    assert one_line("`a +\n    b`") == "`a + b`"
    assert one_line("`f(a,  # why\n  b)`") == "`f(a, b)`"
    long = one_line("`" + "x" * 200 + "` is long")
    assert long.endswith("...` is long") and len(long) < 80
    assert one_line("plain message") == "plain message"


def test_finding_on_multiline_code_is_one_line(proj):
    (proj / "multi.py").write_text(
        "import torch\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\nfor x in loader:\n"
        "    m(x).sum().backward()\n    opt.step(\n    )\n")
    r = invoke("--no-cache", "-q", "multi.py")
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and re.match(r"multi\.py:5:5: TL001 .*`opt\.step\(\)`", lines[0]), r.stdout
    d = json.loads(invoke("--no-cache", "--output-format", "json", "multi.py").stdout)[0]
    assert "\n" not in d["message"] and "\n" not in d["fix"]["message"]


# -- 4 and 10: missing paths and mistyped commands ---------------------------------------------------

def test_missing_path_alone_is_only_an_error(proj):
    r = invoke("--no-cache", "nope.py")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "nope.py: no such file or directory" in r.stderr
    assert "All checks passed" not in r.output


def test_missing_path_with_a_clean_file_does_not_claim_success(proj):
    r = invoke("--no-cache", "nope.py", "ok.py")
    assert r.exit_code == 2
    assert "nope.py: no such file or directory" in r.stderr
    assert "All checks passed" not in r.output


def test_mistyped_subcommand_is_not_taken_as_a_path(proj):
    r = invoke("chek", ".")
    assert r.exit_code == 2
    assert "did you mean `check`?" in r.output
    assert "TL001" not in r.output  # `.` was not linted
    assert "did you mean `rule`?" in invoke("rul", "TL001").output


def test_an_existing_path_that_looks_like_a_command_is_a_path(proj):
    (proj / "chek").mkdir()
    (proj / "chek" / "t.py").write_text(BAD)
    r = invoke("--no-cache", "--output-format", "concise", "chek")
    assert r.exit_code == 1 and "TL001" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--select", "TL0001"], "did you mean `TL001`?"),
    (["--ignore", "missing-zero-grad"], "did you mean `TL001`?"),
])
def test_unknown_code_did_you_mean(proj, args, needle):
    r = invoke("--no-cache", *args, "train.py")
    assert r.exit_code == 2 and needle in r.stderr


@pytest.mark.parametrize("toml, needle", [
    ("[tool.trainlint]\nselct = ['TL001']\n", "did you mean `select`?"),
    ("[tool.trainlint]\nextend_exclude = []\n", "did you mean `extend-exclude`?"),
    ("[tool.trainlint]\nselect = ['TL0001']\n", "did you mean `TL001`?"),
    ("[tool.trainlint.rules.TL003]\nbatch-size-name = ['n']\n", "did you mean `batch-size-names`?"),
])
def test_unknown_config_key_did_you_mean(proj, toml, needle):
    (proj / "pyproject.toml").write_text(toml)
    r = invoke("--no-cache", "train.py")
    assert r.exit_code == 2 and needle in r.stderr


def test_unknown_rule_page_did_you_mean():
    r = invoke("rule", "TL0001")
    assert r.exit_code == 2 and "did you mean `TL001`?" in r.stderr


# -- 6: selectors and noqa codes that do nothing are warned about ----------------------------------------

def test_runtime_code_in_select_warns(proj):
    r = invoke("--no-cache", "--select", "TL101", "train.py")
    assert "TL101" in r.stderr and "runtime" in r.stderr and "warning" in r.stderr
    r = invoke("--no-cache", "--select", "TL001", "train.py")
    assert "warning" not in r.stderr


def test_runtime_code_in_config_select_warns(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nselect = ['TL10']\n")
    r = invoke("--no-cache", "train.py")
    assert "TL10" in r.stderr and "runtime" in r.stderr


def test_noqa_with_a_prefix_or_unknown_code_warns(proj):
    (proj / "p.py").write_text(BAD.replace("opt.step()", "opt.step()  # noqa: TL00"))
    r = invoke("--no-cache", "--output-format", "concise", "p.py")
    assert r.exit_code == 1 and "p.py:5:5: TL001" in r.stdout  # a prefix suppresses nothing...
    assert "invalid rule code provided to `# noqa` at p.py:5: TL00" in r.stderr  # ...and says so
    (proj / "q.py").write_text(BAD.replace("opt.step()", "opt.step()  # noqa: E501, TL0001"))
    r = invoke("--no-cache", "--output-format", "concise", "q.py")
    assert "q.py:5: TL0001" in r.stderr and "E501" not in r.stderr  # other linters' codes are theirs


# -- 7: -o/--output-file --------------------------------------------------------------------------------

def test_output_file(proj):
    r = invoke("--no-cache", "--output-format", "json", "-o", "out.json", "train.py")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert json.loads((proj / "out.json").read_text())[0]["code"] == "TL001"
    r = invoke("--no-cache", "--output-file", "out.txt", "train.py")
    text = (proj / "out.txt").read_text()
    assert "train.py:5:5: TL001" in text and "\x1b[" not in text


def test_output_file_in_a_missing_folder_is_an_error(proj):
    r = invoke("--no-cache", "-o", "no/such/dir/out.txt", "train.py")
    assert r.exit_code == 2 and "cannot write" in r.stderr


# -- 8: notebooks: cells counted as Ruff and Jupyter count them, code frame and diff -------------------

def test_notebook_full_output_has_code_frame_and_diff(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Training\n"]},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": BAD.splitlines(keepends=True)}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "t.ipynb").write_text(json.dumps(nb))
    out = invoke("--no-cache", "--unsafe-fixes", "t.ipynb").stdout
    assert "t.ipynb:cell 2:5:5: TL001" in out  # the markdown cell counts: cell 2, as Jupyter shows it
    assert "5 |     opt.step()" in out and "^^^^^^^^^^ TL001" in out
    assert "|+     opt.zero_grad()" in out


# -- 9: .gitignore ----------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gitignored_files_are_skipped_unless_told_otherwise(proj):
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    (proj / ".gitignore").write_text("generated/\nscratch_*.py\n")
    (proj / "generated").mkdir()
    (proj / "generated" / "g.py").write_text(BAD)
    (proj / "scratch_1.py").write_text(BAD)

    def linted(*args):
        r = invoke("--no-cache", "--output-format", "json", *args)
        return sorted({os.path.normpath(d["filename"]) for d in json.loads(r.stdout)})

    assert linted(".") == ["train.py"]
    assert linted("--no-respect-gitignore", ".") == [os.path.join("generated", "g.py"), "scratch_1.py", "train.py"]
    assert linted("scratch_1.py") == ["scratch_1.py"]  # a file named on the command line is linted
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nrespect-gitignore = false\n")
    assert len(linted(".")) == 3


def test_gitignore_outside_a_repository_is_not_read(proj):
    (proj / ".gitignore").write_text("train.py\n")
    env = {"GIT_CEILING_DIRECTORIES": str(proj.parent)}
    r = invoke("--no-cache", "--output-format", "concise", ".", env=env)
    assert "train.py:5:5: TL001" in r.stdout


# -- 11: colour in --diff on a terminal only; `= help:` under the gutter ----------------------------------

def test_diff_colour_only_on_a_terminal(proj):
    plain = invoke("--no-cache", "--diff", "--unsafe-fixes", "train.py", env={"NO_COLOR": None, "FORCE_COLOR": None})
    assert "+    opt.zero_grad()" in plain.stdout and "\x1b[" not in plain.stdout  # piped: no colour
    colour = invoke("--no-cache", "--diff", "--unsafe-fixes", "train.py", env={"NO_COLOR": None, "FORCE_COLOR": "1"})
    assert "\x1b[32m+    opt.zero_grad()\x1b[0m" in colour.stdout
    assert "\x1b[1m--- train.py\x1b[0m" in colour.stdout
    assert colour.stdout.count("\n") == plain.stdout.count("\n")
    no = invoke("--no-cache", "--diff", "--unsafe-fixes", "train.py", env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert "\x1b[" not in no.stdout


def test_help_line_is_aligned_with_the_gutter(proj):
    out = invoke("--no-cache", "train.py", env={"NO_COLOR": "1"}).stdout
    lines = out.splitlines()
    frame = next(line for line in lines if line.endswith("TL001") and "^" in line)
    helpline = next(line for line in lines if "= help:" in line)
    assert helpline.index("=") == frame.index("|")
    big = "\n" * 120 + BAD
    (proj / "big.py").write_text(big)
    lines = invoke("--no-cache", "big.py", env={"NO_COLOR": "1"}).stdout.splitlines()
    frame = next(line for line in lines if line.endswith("TL001") and "^" in line)
    helpline = next(line for line in lines if "= help:" in line)
    assert helpline.index("=") == frame.index("|") == 4


# -- 12: the flake8 plugin reads trainlint's configuration ---------------------------------------------

def test_flake8_plugin_honours_trainlint_config(proj):
    from trainlint.flake8_plugin import Plugin

    lines = BAD.splitlines(keepends=True)

    def codes(filename):
        return [msg.split()[0] for _, _, msg, _ in Plugin(None, filename, lines).run()]

    assert codes("train.py") == ["TL001"]
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nignore = ['TL001']\n")
    assert codes("train.py") == []
    (proj / "pyproject.toml").write_text("[tool.trainlint.per-file-ignores]\n'tests/*' = ['TL001']\n")
    assert codes("train.py") == ["TL001"] and codes("tests/t.py") == []
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nbogus = 1\n")
    assert codes("train.py") == ["TL000"]  # a broken config is reported, not ignored


# -- 13: trainlint.toml / .trainlint.toml --------------------------------------------------------------

@pytest.mark.parametrize("name", ["trainlint.toml", ".trainlint.toml"])
def test_trainlint_toml_is_discovered_and_accepted_by_config(proj, name):
    (proj / "sub").mkdir()
    (proj / "sub" / "t.py").write_text(BAD)
    (proj / "sub" / name).write_text("ignore = ['TL001']\n")
    assert invoke("--no-cache", "sub").exit_code == 0
    assert invoke("--no-cache", "train.py").exit_code == 1
    assert invoke("--no-cache", "--config", os.path.join("sub", name), "train.py").exit_code == 0
    (proj / "sub" / name).write_text("[tool.trainlint]\nignore = ['TL001']\n")
    r = invoke("--no-cache", "sub")
    assert r.exit_code == 2 and "unknown key `tool`" in r.stderr


def test_trainlint_toml_wins_over_pyproject(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nselect = ['TL005']\n")
    (proj / "trainlint.toml").write_text("select = ['TL001']\n")
    assert invoke("--no-cache", "train.py").exit_code == 1


# -- 15, 16: links and documents that exist ------------------------------------------------------------

def _links(path):
    with open(path, encoding="utf-8") as fh:
        return re.findall(r"\]\(([^)\s]+)\)", fh.read())


def test_rule_pages_link_only_to_what_exists():
    pages = os.path.join(REPO, "rules")
    for name in sorted(os.listdir(pages)):
        for link in _links(os.path.join(pages, name)):
            assert link.startswith(("https://", "http://", "#")) or os.path.exists(
                os.path.join(pages, link.split("#")[0])), f"{name}: {link}"
            assert "shared/seeds" not in link, f"{name}: {link}"


def test_readme_and_docs_link_only_to_what_exists():
    for doc in ["README.md", os.path.join("docs", "architecture.md")]:
        path = os.path.join(REPO, doc)
        for link in _links(path):
            if link.startswith(("https://", "http://", "#")):
                continue
            assert os.path.exists(os.path.join(os.path.dirname(path), link.split("#")[0])), f"{doc}: {link}"
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert "DESIGN.md" not in readme and "docs/architecture.md" in readme


def test_architecture_names_only_modules_that_exist():
    with open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8") as fh:
        text = fh.read()
    names = set(re.findall(r"\b([a-z_0-9]+\.py)\b", text))
    assert {"cli.py", "engine.py", "checker.py"} <= names
    for name in names:
        assert any(name in files for top in ("src", "tests", "benchmarks") for _, _, files in os.walk(os.path.join(REPO, top))), name


# -- 17, 18: install and CI as README says -------------------------------------------------------------

def test_readme_points_at_no_release_that_does_not_exist():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert "pip install trainlint\n" not in readme and "pip install trainlint`" not in readme
    assert "rev: v0.1.0" not in readme
    assert "git+https://github.com/trainlint/trainlint" in readme


def test_ci_builds_its_venv_elsewhere_with_readmes_commands():
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert "rm -rf .venv" not in ci and "mktemp -d" in ci
    setup = re.search(r"Set up \(two commands.*?```sh\n(.*?)```", readme, re.S).group(1).splitlines()
    assert setup[0] == "python3 -m venv .venv" and setup[1].startswith(".venv/bin/pip install ")
    assert 'python3 -m venv "$VENV"' in ci
    assert '"$VENV"/bin/pip install ' + setup[1][len(".venv/bin/pip install "):] in ci
    assert '"$VENV"/bin/python -m pytest -q' in ci and ".venv/bin/python -m pytest -q" in readme
    with open(os.path.join(REPO, ".gitignore"), encoding="utf-8") as fh:
        assert "run.html" in fh.read().split()
