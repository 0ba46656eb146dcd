"""SARIF, GitHub annotations, flake8, `trainlint rule`."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from trainlint.cli import main
from trainlint.codes import CODES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(os.path.dirname(REPO), "shared", "data", "sarif-schema-2.1.0.json")
BAD = "import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters())\nfor x in loader:\n    model(x).sum().backward()\n    opt.step()\n"


def invoke(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(BAD)
    return tmp_path


def test_sarif_validates_against_schema(proj):
    jsonschema = pytest.importorskip("jsonschema")
    if not os.path.isfile(SCHEMA):
        pytest.skip("SARIF schema not found in ../shared/data")
    r = invoke("--no-cache", "--output-format", "sarif", "src")
    doc = json.loads(r.stdout)
    with open(SCHEMA, encoding="utf-8") as fh:
        jsonschema.validate(doc, json.load(fh))
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "trainlint" and driver["version"] and driver["informationUri"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert set(CODES) <= set(ids)
    tl001 = driver["rules"][ids.index("TL001")]
    assert "Why it is bad" in tl001["help"]["markdown"] and tl001["helpUri"].endswith(".md")
    assert tl001["defaultConfiguration"]["level"] == "error"
    results = run["results"]
    assert {res["ruleId"] for res in results} == {"TL001", "TL005"}
    for res in results:
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "src/train.py"
        assert set(loc["region"]) == {"startLine", "startColumn", "endLine", "endColumn"}
        assert res["fixes"][0]["artifactChanges"][0]["replacements"]


def test_github_escaping():
    import io

    from trainlint.diagnostics import Diagnostic, Location
    from trainlint.output import github

    d = Diagnostic("TL001", "missing-zero-grad", "50% done\nnext, line: x", "a,b:c.py",
                   Location(3, 2), Location(3, 9))
    buf = io.StringIO()
    github.render([d], buf)
    assert buf.getvalue() == (
        "::error file=a%2Cb%3Ac.py,line=3,endLine=3,col=2,endColumn=9,title=trainlint (TL001)::"
        "TL001 50%25 done%0Anext, line: x\n"
    )


def test_flake8_plugin_rows_and_columns(proj):
    from trainlint.flake8_plugin import Plugin

    lines = (proj / "src" / "train.py").read_text().splitlines(keepends=True)
    got = [(row, col, msg.split()[0]) for row, col, msg, _ in Plugin(None, "train.py", lines).run()]
    assert got == [(3, 6, "TL005"), (6, 4, "TL001")]


def test_flake8_select_tl(proj):
    pytest.importorskip("flake8")
    (proj / "src" / "noqa.py").write_text(BAD.replace("opt.step()", "opt.step()  # noqa: TL001"))
    r = subprocess.run([sys.executable, "-m", "flake8", "--select", "TL", "src"], capture_output=True, text=True)
    lines = sorted(r.stdout.splitlines())
    assert "src/train.py:6:5: TL001" in "\n".join(lines)
    assert "src/train.py:3:7: TL005" in "\n".join(lines)
    assert not any(line.startswith("src/noqa.py:6:") for line in lines)


def test_rule_page_and_list():
    r = invoke("rule", "TL001")
    assert r.exit_code == 0 and r.output.startswith("# TL001 missing-zero-grad")
    assert "## Known limits" in r.output
    r = invoke("rule", "missing-zero-grad")
    assert r.output.startswith("# TL001")
    data = json.loads(invoke("rule", "TL002", "--output-format", "json").stdout)
    assert data["code"] == "TL002" and "MONAI" in data["explanation"]
    r = invoke("rule", "--all")
    for code in CODES:
        assert code in r.output
    assert "fix (unsafe)" in r.output
    assert invoke("rule", "TL999").exit_code == 2


def test_every_rule_has_a_page_with_the_sections():
    for info in CODES.values():
        path = os.path.join(REPO, "rules", info.page)
        assert os.path.isfile(path), path
        text = open(path, encoding="utf-8").read()
        assert text.startswith(f"# {info.code} {info.name}")
        for section in ("What it finds", "Why it is bad", "Example", "Use instead", "Fix", "Options", "Known limits"):
            assert f"## {section}" in text, (info.code, section)


def test_rule_pages_ship_in_the_wheel(tmp_path):
    """A wheel installed outside the repo can show the pages."""
    pytest.importorskip("hatchling")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), REPO], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("could not build a wheel here: " + r.stderr[-300:])
    import zipfile

    (whl,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / whl).namelist()
    for info in CODES.values():
        assert f"trainlint/_rule_pages/{info.page}" in names


def test_every_static_code_has_a_rule_module_and_every_module_a_code():
    """Rule modules are discovered by file name: each must match a static code, and each static code
    must have its module (a code without a rule would silently check nothing)."""
    from trainlint.codes import STATIC_CODES
    from trainlint.rules import RULE_MODULES, load

    assert sorted(RULE_MODULES) == sorted(STATIC_CODES)
    for rule in load(list(RULE_MODULES)):
        assert rule.CODE in RULE_MODULES and RULE_MODULES[rule.CODE] == rule.__name__


def test_rule_list_columns_line_up():
    from trainlint.codes import CODES

    r = invoke("rule", "--all")
    lines = [line for line in r.output.splitlines() if line.startswith("TL")]
    assert len(lines) == len(CODES)
    kind_columns = {line.index(" static ") if " static " in line else line.index(" runtime ") for line in lines}
    assert len(kind_columns) == 1
