"""Shared helpers for the runtime tests (torch-free at import: the tests importorskip torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "runtime_scenarios.py"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and steadier (no spinning threads on a busy box)."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trainlint_command():
    exe = Path(sys.executable).with_name("trainlint")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "trainlint"]


def run_trainlint(args, cwd=HERE, timeout=120, env_extra=None):
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("FORCE_COLOR", None)
    env.update(env_extra or {})
    return subprocess.run(trainlint_command() + list(args), cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout)


def json_findings(stdout: str):
    """The JSON array trainlint prints last (the script may print before it)."""
    start = stdout.rfind("\n[")
    start = 0 if stdout.startswith("[") and start < 0 else start + 1
    return json.loads(stdout[start:])


def codes(diags):
    return sorted({d.code for d in diags})
