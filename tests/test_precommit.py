"""The pre-commit hook definitions, run the way pre-commit runs them: entry + args + file names."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = "import torch\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\nfor x in loader:\n    m(x).sum().backward()\n    opt.step()\n"
HALF = "import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters())\n"
GOOD = "import torch\nfor x in loader:\n    opt.zero_grad()\n    m(x).sum().backward()\n    opt.step()\n"


def hooks():
    """A small reader for the flat list-of-mappings YAML of .pre-commit-hooks.yaml."""
    out, cur = [], None
    with open(os.path.join(REPO, ".pre-commit-hooks.yaml"), encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("- "):
                cur = {}
                out.append(cur)
                line = "  " + line[2:]
            key, _, value = line.strip().partition(":")
            value = value.strip()
            if value.startswith("[") and value.endswith("]"):
                value = [v.strip() for v in value[1:-1].split(",") if v.strip()]
            elif value.startswith('"') and value.endswith('"'):
                value = value[1:-1]
            elif value in ("true", "false"):
                value = value == "true"
            cur[key] = value
    return {h["id"]: h for h in out}


def run_hook(hook, files, cwd):
    exe_dir = os.path.dirname(sys.executable)
    if not shutil.which("trainlint", path=exe_dir):
        pytest.skip("trainlint entry point not installed")
    env = dict(os.environ, PATH=exe_dir + os.pathsep + os.environ.get("PATH", ""))
    cmd = shlex.split(hook["entry"]) + list(hook.get("args") or []) + list(files)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def test_hook_definitions():
    h = hooks()
    assert set(h) == {"trainlint", "trainlint-fix"}
    for hook in h.values():
        assert hook["language"] == "python"
        assert hook["require_serial"] is True
        assert set(hook["types_or"]) >= {"python", "pyi"}
    assert "--fix" in h["trainlint-fix"]["entry"] and "--fix" not in h["trainlint"]["entry"]


def test_check_hook_fails_on_finding_and_passes_clean(tmp_path):
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "good.py").write_text(GOOD)
    h = hooks()["trainlint"]
    r = run_hook(h, ["bad.py", "good.py"], tmp_path)
    assert r.returncode == 1 and "bad.py:5:5: TL001" in r.stdout
    assert run_hook(h, ["good.py"], tmp_path).returncode == 0


def test_fix_hook_modifies_and_fails(tmp_path):
    (tmp_path / "half.py").write_text(HALF)
    h = hooks()["trainlint-fix"]
    r = run_hook(h, ["half.py"], tmp_path)
    assert r.returncode == 1, r.stdout
    assert "eps=1e-4" in (tmp_path / "half.py").read_text()
    assert run_hook(h, ["half.py"], tmp_path).returncode == 0


def test_hook_respects_excludes_with_force_exclude(tmp_path):
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "bad.py").write_text(BAD)
    r = run_hook(hooks()["trainlint"], ["build/bad.py"], tmp_path)
    assert r.returncode == 0


@pytest.mark.skipif(not os.environ.get("TRAINLINT_PRECOMMIT"), reason="opt-in: TRAINLINT_PRECOMMIT=1 (needs pre-commit and network)")
def test_pre_commit_try_repo(tmp_path):
    """`pre-commit try-repo` installs the hook from this repository, as a user would."""
    pre_commit = shutil.which("pre-commit")
    if pre_commit is None:
        pytest.skip("pre-commit is not installed")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "half.py").write_text(HALF)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)

    def try_repo(hook, *files):
        return subprocess.run([pre_commit, "try-repo", REPO, hook, "--files", *files], cwd=tmp_path,
                              capture_output=True, text=True)

    assert try_repo("trainlint", "bad.py").returncode == 1
    assert try_repo("trainlint", "good.py").returncode == 0
    assert try_repo("trainlint-fix", "half.py").returncode == 1
    assert "eps=1e-4" in (tmp_path / "half.py").read_text()
