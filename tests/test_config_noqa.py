"""Configuration discovery and validation, per-file-ignores, excludes, and noqa."""

import json

import pytest
from click.testing import CliRunner

from trainlint.cli import main

BAD = "import torch\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\nfor x in loader:\n    m(x).sum().backward()\n    opt.step()\n"


def run(*args):
    return CliRunner().invoke(main, ["--no-cache", "--output-format", "json", *args], catch_exceptions=False)


def codes(result):
    return [(d["filename"].replace("\\", "/"), d["location"]["row"], d["code"]) for d in json.loads(result.stdout)]


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_nearest_pyproject_applies_per_directory(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nselect = ['TL001']\n")
    (proj / "a.py").write_text(BAD)
    sub = proj / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[tool.trainlint]\nignore = ['TL001']\n")
    (sub / "b.py").write_text(BAD)
    r = run(".")
    assert codes(r) == [("./a.py", 5, "TL001")] or codes(r) == [("a.py", 5, "TL001")]


def test_pyproject_without_table_is_skipped(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nignore = ['TL001']\n")
    sub = proj / "pkg"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (sub / "b.py").write_text(BAD)
    assert codes(run("pkg/b.py")) == []


def test_config_flag_overrides_discovery(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nignore = ['TL001']\n")
    (proj / "other.toml").write_text("")
    (proj / "a.py").write_text(BAD)
    assert codes(run("a.py")) == []
    cfg = proj / "cfg"
    cfg.mkdir()
    (cfg / "pyproject.toml").write_text("[tool.trainlint]\nselect = ['TL0']\n")
    assert len(codes(run("--config", "cfg/pyproject.toml", "a.py"))) == 1


@pytest.mark.parametrize(
    "toml, needle",
    [
        ("[tool.trainlint]\nselekt = ['TL001']\n", "selekt"),
        ("[tool.trainlint]\nselect = ['TL999']\n", "TL999"),
        ("[tool.trainlint]\nselect = 'TL001'\n", "select"),
        ("[tool.trainlint.rules.TL005]\nrequire-explicit = true\n", "require-explicit"),
        ("[tool.trainlint.rules.TL005]\nrequire-explicit-eps = 'yes'\n", "require-explicit-eps"),
        ("[tool.trainlint.rules.TL042]\n", "TL042"),
        ("[tool.trainlint.per-file-ignores]\n'tests/*' = ['XX1']\n", "XX1"),
        ("[tool.trainlint.runtime]\nspike = 2\n", "spike"),
        ("[tool.trainlint\nselect = [\n", "line 1"),
    ],
)
def test_invalid_config_is_exit_2_naming_the_key(proj, toml, needle):
    (proj / "pyproject.toml").write_text(toml)
    (proj / "a.py").write_text(BAD)
    r = CliRunner().invoke(main, ["--no-cache", "a.py"], catch_exceptions=False)
    assert r.exit_code == 2
    assert needle in r.output and "pyproject.toml" in r.output
    assert "Traceback" not in r.output


def test_per_file_ignores(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint.per-file-ignores]\n'scripts/*' = ['TL001']\n")
    (proj / "scripts").mkdir()
    (proj / "scripts" / "a.py").write_text(BAD)
    (proj / "b.py").write_text(BAD)
    assert [c[0] for c in codes(run("."))] == ["./b.py"] or [c[0] for c in codes(run("."))] == ["b.py"]


def test_exclude_and_extend_exclude(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nextend-exclude = ['legacy', 'gen/*.py']\n")
    for d in ("legacy", "gen", "src"):
        (proj / d).mkdir()
        (proj / d / "a.py").write_text(BAD)
    files = {c[0].lstrip("./") for c in codes(run("."))}
    assert files == {"src/a.py"}
    # an explicitly named file is linted unless --force-exclude
    assert codes(run("legacy/a.py"))
    assert not codes(run("--force-exclude", "legacy/a.py"))
    assert not codes(run("--extend-exclude", "src", "--force-exclude", "src/a.py"))


def test_unsafe_fixes_from_config(proj):
    (proj / "pyproject.toml").write_text("[tool.trainlint]\nunsafe-fixes = true\n")
    (proj / "a.py").write_text(BAD)
    r = CliRunner().invoke(main, ["--no-cache", "--fix", "a.py"], catch_exceptions=False)
    assert r.exit_code == 0 and "opt.zero_grad()" in (proj / "a.py").read_text()


def test_noqa_line(proj):
    (proj / "a.py").write_text(BAD.replace("opt.step()", "opt.step()  # noqa: TL001"))
    (proj / "b.py").write_text(BAD.replace("opt.step()", "opt.step()  # noqa"))
    (proj / "c.py").write_text(BAD.replace("opt.step()", "opt.step()  # noqa: TL002"))
    (proj / "d.py").write_text(BAD.replace("opt.step()", "opt.step()  # NOQA:TL002,TL001"))
    assert [c[0].lstrip("./") for c in codes(run("."))] == ["c.py"]


def test_noqa_inside_string_does_not_count(proj):
    (proj / "a.py").write_text(BAD.replace("opt.step()", "opt.step(); s = '# noqa'"))
    assert len(codes(run("a.py"))) == 1


def test_file_level_noqa(proj):
    (proj / "a.py").write_text("# trainlint: noqa\n" + BAD)
    (proj / "b.py").write_text("# trainlint: noqa: TL001\n" + BAD)
    (proj / "c.py").write_text("# trainlint: noqa: TL002\n" + BAD)
    (proj / "d.py").write_text("x = 1  # trainlint: noqa\n" + BAD)  # not on its own line
    assert sorted(c[0].lstrip("./") for c in codes(run("."))) == ["c.py", "d.py"]
