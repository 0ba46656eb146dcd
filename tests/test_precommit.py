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


def _readme_yaml_blocks():
    import re

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    section = readme.split("## pre-commit", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_readme_pre_commit_snippets_name_this_repositorys_hooks():
    remote, local = _readme_yaml_blocks()
    assert "rev: v0.1.0" not in remote
    rev = remote.split("rev:", 1)[1].split()[0]
    assert len(rev) == 40  # a full commit hash: pre-commit needs a tag or a full hash
    if shutil.which("git") and os.path.isdir(os.path.join(REPO, ".git")):
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO,
                                 capture_output=True, text=True).stdout.strip()
        if shallow == "false":  # a shallow clone may not have the commit
            r = subprocess.run(["git", "cat-file", "-e", rev + "^{commit}"], cwd=REPO, capture_output=True)
            assert r.returncode == 0, f"README's pre-commit rev {rev} is not a commit of this repository"
    h = hooks()["trainlint"]
    assert f"entry: {h['entry']}" in local and "repo: local" in local


@pytest.mark.skipif(not os.environ.get("TRAINLINT_PRECOMMIT"), reason="opt-in: TRAINLINT_PRECOMMIT=1 (needs pre-commit)")
def test_readme_pre_commit_snippets_work(tmp_path):
    """README's snippets: the remote one is a valid config, the local one runs the installed trainlint."""
    pre_commit = shutil.which("pre-commit")
    if pre_commit is None:
        pytest.skip("pre-commit is not installed")
    remote, local = _readme_yaml_blocks()
    (tmp_path / "remote.yaml").write_text(remote)
    r = subprocess.run([pre_commit, "validate-config", "remote.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".pre-commit-config.yaml").write_text(local)
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "good.py").write_text(GOOD)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))

    def run(*files):
        return subprocess.run([pre_commit, "run", "trainlint", "--files", *files], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    r = run("bad.py")
    assert r.returncode == 1 and "bad.py:5:5: TL001" in r.stdout, r.stdout
    assert run("good.py").returncode == 0
