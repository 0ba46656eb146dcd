"""Corpus runs (issue 6) through benchmarks/corpus_check.py: lint, `--fix --unsafe-fixes`, fix again.

CI: the snippets of the tests themselves and examples/ (LF, and CRLF with a BOM). Opt-in with
TRAINLINT_SLOW=1: every .py file of the installed torch, libcst, click, pytest and hypothesis.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from test_reliability import SLOW

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "corpus_check.py")
MUST_BE_ZERO = [
    "tracebacks", "crashes", "failed_to_parse_after_fix", "changed_without_reported_fix",
    "reported_fix_but_unchanged", "encoding_or_bom_changed", "new_line_endings", "mode_changed",
    "changed_files_that_did_not_parse_before", "second_run_changes", "second_run_fixes",
]


def _eval(node, env):
    """The value of a module-level string expression of a test file (no code is run)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = _eval(node.left, env), _eval(node.right, env)
        return a + b if isinstance(a, str) and isinstance(b, str) else None
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            key, val = _eval(k, env) if k is not None else None, _eval(v, env)
            if isinstance(key, str) and isinstance(val, str):
                out[key] = val
        return out
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace"
            and len(node.args) == 2 and not node.keywords):
        s, a, b = _eval(node.func.value, env), _eval(node.args[0], env), _eval(node.args[1], env)
        if all(isinstance(x, str) for x in (s, a, b)):
            return s.replace(a, b)
    return None


def snippets():
    """Every code snippet the tests define at module level (BAD/GOOD cases, sources)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "rules", "*.py")) + [os.path.join(REPO, "tests", "test_cli.py")]):
        tree = ast.parse(open(path, encoding="utf-8").read())
        env = {}
        stem = os.path.splitext(os.path.basename(path))[0]
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                val = _eval(node.value, env)
                if val is None:
                    continue
                env[name] = val
                items = val.items() if isinstance(val, dict) else [("", val)]
                for key, code in items:
                    if "\n" in code:
                        out[f"{stem}_{name}_{key}".rstrip("_")] = textwrap.dedent(code).lstrip("\n")
    return out


def build_corpus(root):
    os.makedirs(root)
    n = 0
    for name, code in snippets().items():
        safe = "".join(c if c.isalnum() else "_" for c in name)
        with open(os.path.join(root, f"{safe}.py"), "wb") as fh:
            fh.write(code.encode())
        with open(os.path.join(root, f"{safe}_crlf_bom.py"), "wb") as fh:
            fh.write(b"\xef\xbb\xbf" + code.replace("\n", "\r\n").encode())
        n += 1
    shutil.copytree(os.path.join(REPO, "examples"), os.path.join(root, "examples"))
    return n


def corpus_check(args, timeout):
    r = subprocess.run([sys.executable, SCRIPT, "--json", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode in (0, 1), r.stderr[-4000:]
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    return json.loads(r.stdout)


def _assert_clean(result):
    bad = {k: result[k] for k in MUST_BE_ZERO if result[k]}
    assert not bad, json.dumps({"counts": bad, "examples": result.get("examples"), "runs": result.get("runs")}, indent=1)
    assert result["ok"]


def test_snippet_corpus(tmp_path):
    root = str(tmp_path / "snippets")
    n = build_corpus(root)
    assert n >= 50, n
    result = corpus_check(["--force-parse", root], timeout=300)
    _assert_clean(result)
    examples = sum(1 for _, _, files in os.walk(os.path.join(REPO, "examples")) for f in files if f.endswith(".py"))
    assert result["files"] == 2 * n + examples
    assert result["parsed"] >= result["files"] - result["tl000_per_reason"].get("syntax error", 0)
    assert set(result["findings_per_code"]) >= {"TL001", "TL002", "TL003", "TL004", "TL005"}
    assert result["fixes_applied"] >= 20 and result["files_fixed"] >= 20
    assert "internal error" not in " ".join(result["tl000_per_reason"])


def test_corpus_check_names_a_package(tmp_path):
    """The script finds an installed package's files itself (click: small and always installed)."""
    result = corpus_check(["click", "--work", str(tmp_path / "work")], timeout=300)
    _assert_clean(result)
    assert result["files"] >= 10 and result["parsed"] >= 1


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="opt-in: TRAINLINT_SLOW=1")
@pytest.mark.parametrize("package", ["torch", "libcst", "click", "pytest", "hypothesis"])
def test_installed_package_corpus(package):
    """Every file parsed and every rule run on it (--force-parse), fixed, fixed again."""
    result = corpus_check(["--force-parse", package], timeout=3 * 3600)
    _assert_clean(result)
    assert result["files"] > 0 and result["parsed"] > 0.9 * result["files"]
