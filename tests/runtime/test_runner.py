"""`trainlint run` end to end, through the installed `trainlint` command (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from conftest import HERE, SCENARIOS, json_findings, run_trainlint  # noqa: E402


def test_json_output_and_exit_status_with_findings():
    r = run_trainlint(["run", "--output-format", "json", str(SCENARIOS), "no_zero_grad"])
    assert r.returncode == 1, r.stderr
    diags = json_findings(r.stdout)
    assert [d["code"] for d in diags] == ["TL103"]
    d = diags[0]
    for key in ("code", "name", "message", "severity", "filename", "cell", "location", "end_location",
                "fix", "url", "step", "epoch", "evidence", "confirms"):
        assert key in d
    assert d["confirms"] == "TL001" and d["fix"] is None and d["step"] == 1
    assert d["filename"] == "runtime_scenarios.py"  # relative to the working directory


def test_module_mode_sees_argv_main_and_path():
    r = run_trainlint(["run", "-m", "runtime_scenarios", "show_main", "--flag", "x"], cwd=HERE)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.splitlines()[0])
    assert seen["name"] == "__main__"
    assert seen["argv"][1:] == ["show_main", "--flag", "x"]
    assert seen["argv"][0].endswith("runtime_scenarios.py")
    assert seen["path0"] == str(HERE)


def test_script_mode_sees_what_python_would(tmp_path):
    r = run_trainlint(["run", "-q", "runtime_scenarios.py", "show_main", "a b"], cwd=HERE)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.splitlines()[0])
    # what `python SCENARIOS show_main "a b"` sees
    assert seen == {"argv": ["runtime_scenarios.py", "show_main", "a b"], "name": "__main__", "path0": str(HERE),
                    "file": "runtime_scenarios.py"}


def test_uncaught_exception_keeps_traceback_status_and_findings():
    r = run_trainlint(["run", "--output-format", "concise", str(SCENARIOS), "fail_after_no_zero_grad"])
    assert r.returncode == 1
    assert "Traceback (most recent call last):" in r.stderr
    assert "ValueError: boom from the training script" in r.stderr
    assert "runner.py" not in r.stderr and "runpy" not in r.stderr  # only the script's frames
    assert "TL103" in r.stdout


def test_sys_exit_code_is_kept_with_findings():
    r = run_trainlint(["run", "--output-format", "json", str(SCENARIOS), "exit_3"])
    assert r.returncode == 3
    assert [d["code"] for d in json_findings(r.stdout)] == ["TL103"]


def test_keyboard_interrupt_prints_what_was_found():
    r = run_trainlint(["run", "--output-format", "json-lines", str(SCENARIOS), "interrupt"])
    assert r.returncode == 130
    assert "KeyboardInterrupt" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["code"] == "TL103"


def test_report_and_config_thresholds(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.trainlint.runtime]\nevery = 7\nspike-factor = 1.5\n")
    report = tmp_path / "run.html"
    r = run_trainlint(["run", "--report", str(report), "--select", "TL104", str(SCENARIOS),
                       "short_batch_double_division"], cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "TL104" in r.stdout
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and 'class="short"' in text


def test_bad_config_and_usage_errors_exit_2(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.trainlint.runtime]\nexplode-factor = -1\n")
    r = run_trainlint(["run", str(SCENARIOS), "healthy"], cwd=tmp_path)
    assert r.returncode == 2 and "explode-factor" in r.stderr
    r = run_trainlint(["run", "--select", "TL999", str(SCENARIOS), "healthy"])
    assert r.returncode == 2 and "TL999" in r.stderr
    r = run_trainlint(["run", str(tmp_path / "missing.py")])
    assert r.returncode == 2 and "missing.py" in r.stderr


def test_loss_trace_is_identical_with_and_without_trainlint(tmp_path):
    """A seeded healthy run: same numbers bit for bit, exit status 0, and it says what it watched."""
    plain, watched = tmp_path / "plain.json", tmp_path / "watched.json"
    subprocess.run([sys.executable, str(SCENARIOS), "healthy", "--trace", str(plain)], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    r = run_trainlint(["run", str(SCENARIOS), "healthy", "--trace", str(watched)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "All checks passed!" in r.stdout and "44 optimizer steps, 4 epochs" in r.stdout
    a, b = json.loads(plain.read_text()), json.loads(watched.read_text())
    assert len(a) == 44 and a == b


# ------------------------------------------------------------------ issue 16: tool-readable output, item 7
TRAIN_PRINTING = """
import sys
sys.path.insert(0, {here!r})
import runtime_scenarios as S
print("hello from the script")
S.no_zero_grad(steps=5)
"""


def _printing_script(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_PRINTING.format(here=str(HERE)))
    return script


def test_output_file_holds_the_findings_and_stdout_the_scripts_output(tmp_path):
    script = _printing_script(tmp_path)
    out = tmp_path / "findings.json"
    r = run_trainlint(["run", "-o", str(out), "--output-format", "json", str(script)], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stdout == "hello from the script\n"
    assert [d["code"] for d in json.loads(out.read_text())] == ["TL103"]
    assert "findings written to" in r.stderr


def test_machine_format_without_output_file_keeps_stdout_clean(tmp_path):
    script = _printing_script(tmp_path)
    r = run_trainlint(["run", "--output-format", "json", str(script)], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert [d["code"] for d in json.loads(r.stdout)] == ["TL103"]  # nothing but the findings
    assert "hello from the script" in r.stderr


def test_sarif_for_run(tmp_path):
    r = run_trainlint(["run", "--output-format", "sarif", str(SCENARIOS), "no_zero_grad"])
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    results = doc["runs"][0]["results"]
    assert [res["ruleId"] for res in results] == ["TL103"]
    assert results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("runtime_scenarios.py")


def test_nothing_checked_is_said_and_keeps_the_scripts_status():
    r = run_trainlint(["run", str(SCENARIOS), "no_training"])
    assert r.returncode == 0, r.stderr
    assert "All checks passed" not in r.stdout
    assert "Nothing was checked" in r.stdout and "0 optimizer steps" in r.stdout


def test_a_run_without_an_optimizer_says_which_checks_ran():
    r = run_trainlint(["run", str(SCENARIOS), "manual_sgd"])
    assert r.returncode == 0, r.stderr
    assert "All checks passed! (runtime checks, 30 losses, no optimizer step, 3 epochs watched)" in r.stdout
    assert "only the loss and data checks ran" in r.stdout and "TL103" in r.stdout


def test_unwritable_report_or_output_is_refused_before_the_script_runs(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "train.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    for opt in ("--report", "-o"):
        r = run_trainlint(["run", opt, str(tmp_path / "no" / "such" / "dir" / "x.out"), str(script)], cwd=tmp_path)
        assert r.returncode == 2 and "cannot write" in r.stderr, (opt, r.stderr)
        assert not marker.exists()
    r = run_trainlint(["run", "--report", str(tmp_path), str(script)], cwd=tmp_path)  # a directory
    assert r.returncode == 2 and not marker.exists()


def test_without_torch_a_clear_error_and_exit_2(tmp_path):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    r = run_trainlint(["run", str(SCENARIOS), "healthy"],
                      env_extra={"PYTHONPATH": str(tmp_path / "fake")})
    assert r.returncode == 2
    assert "needs torch" in r.stderr and "Traceback" not in r.stderr
