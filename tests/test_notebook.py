"""Notebooks: lint, fix and re-lint a small realistic training notebook."""

import json

import pytest
from click.testing import CliRunner

from trainlint.cli import main


def cell(src, outputs=None):
    return {"cell_type": "code", "execution_count": 1, "metadata": {"tags": ["x"]},
            "outputs": outputs or [], "source": src.splitlines(keepends=True)}


NB = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Segmentation training\n", "Dice + BCE."]},
        cell("%matplotlib inline\nimport torch\nimport torch.nn as nn\n!nvidia-smi\n"),
        cell("%%time\nprint('cell magic: not Python')\n"),
        cell("def dice_loss(p, t, smooth=1.0):\n    inter = (p * t).sum()\n"
             "    return 1 - (2 * inter + smooth) / (p.sum() + t.sum() + smooth)\n",
             outputs=[{"output_type": "stream", "name": "stdout", "text": ["ok\n"]}]),
        cell("model = nn.Conv2d(1, 1, 3)\noptimizer = torch.optim.Adam(model.parameters())\n"
             "for x, y in loader:\n    loss = dice_loss(model(x).sigmoid(), y)\n    loss.backward()\n"
             "    optimizer.step()\nmodel?"),
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def run(*args):
    return CliRunner().invoke(main, ["--no-cache", *args], catch_exceptions=False)


@pytest.fixture
def nb(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "train.ipynb"
    p.write_text(json.dumps(NB, indent=1, ensure_ascii=False) + "\n")
    return p


def test_findings_map_to_cells(nb):
    r = run("--output-format", "json", ".")
    found = sorted((d["code"], d["cell"], d["location"]["row"], d["location"]["column"]) for d in json.loads(r.stdout))
    # cells are numbered from 1 as Ruff and Jupyter number them: the markdown cell counts
    assert found == [("TL001", 5, 6, 5), ("TL002", 4, 3, 16)]
    r = run("--output-format", "concise", "train.ipynb")
    assert "train.ipynb:cell 5:6:5: TL001" in r.stdout


def test_fix_and_relint(nb):
    before = json.loads(nb.read_text())
    r = run("--fix", "--unsafe-fixes", "train.ipynb")
    assert r.exit_code == 0, r.output
    text = nb.read_text()
    after = json.loads(text)
    assert text.startswith('{\n "cells": [\n  {') and text.endswith("}\n")  # indent=1 kept
    src3 = "".join(after["cells"][3]["source"])
    src4 = "".join(after["cells"][4]["source"])
    assert "return 1 - (2 * inter) / (p.sum() + t.sum() + smooth)" in src3
    assert "for x, y in loader:\n    optimizer.zero_grad()\n    loss = " in src4
    assert src4.endswith("model?")  # help line restored verbatim
    assert after["cells"][1] == before["cells"][1]  # magics and shell lines untouched
    assert after["cells"][2] == before["cells"][2]
    assert after["cells"][3]["outputs"] == before["cells"][3]["outputs"]
    assert after["metadata"] == before["metadata"] and after["cells"][0] == before["cells"][0]
    assert run("train.ipynb").exit_code == 0
    again = nb.read_text()
    run("--fix", "--unsafe-fixes", "train.ipynb")
    assert nb.read_text() == again


def test_diff_shows_cell_hunks(nb):
    r = run("--diff", "--unsafe-fixes", "train.ipynb")
    assert r.exit_code == 1
    assert "--- train.ipynb:cell 5" in r.stdout and "+    optimizer.zero_grad()" in r.stdout
    assert "--- train.ipynb:cell 4" in r.stdout  # the same numbers as the findings
    assert json.loads(nb.read_text()) == NB


def test_invalid_notebook_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.ipynb").write_text('{"cells": [')
    r = run("--output-format", "concise", "broken.ipynb")
    assert r.exit_code == 1 and "TL000 notebook is not valid JSON" in r.stdout
    assert "Traceback" not in r.output
