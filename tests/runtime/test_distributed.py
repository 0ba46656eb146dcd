"""torchrun: TL114 replicas-diverged and the merged report, on real 2-process gloo runs on the CPU
(`python -m torch.distributed.run --standalone --nproc_per_node 2 -m trainlint run ...`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from conftest import HERE, SCENARIOS, json_findings  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


def torchrun_trainlint(*args, timeout=120):
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("FORCE_COLOR", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trainlint", "run", *args]
    return subprocess.run(cmd, cwd=str(HERE), env=env, capture_output=True, text=True, timeout=timeout)


def test_ranks_that_train_apart_are_reported_once_by_rank_0():
    r = torchrun_trainlint("--output-format", "json", str(SCENARIOS), "ranks_diverge")
    assert r.returncode == 1, r.stderr[-3000:]
    diags = json_findings(r.stdout)  # one JSON array on stdout: rank 0's merged report only
    by_code = {d["code"]: d for d in diags}
    assert sorted(by_code) == ["TL111", "TL114"], [(d["code"], d["message"]) for d in diags]
    d = by_code["TL114"]
    ev = d["evidence"]
    assert ev["ranks"] == [0, 1] and ev["world_size"] == 2 and ev["last_equal_step"] == 0
    assert d["step"] == 50 and ev["replicated_parameters"] == 4 and ev["diverged_parameters"] == 4
    assert "`0.weight`" in d["message"] and "identical at step 0" in d["message"]
    assert d["filename"] == "runtime_scenarios.py"
    # a finding of one rank only names that rank
    d = by_code["TL111"]
    assert d["message"].startswith("rank 1: input feature 5") and d["evidence"]["ranks"] == [1]
    assert "trainlint: rank 1: 1 finding, reported by rank 0" in r.stderr


def test_a_healthy_ddp_run_is_silent():
    r = torchrun_trainlint(str(SCENARIOS), "ranks_ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("All checks passed! (runtime checks, 60 optimizer steps, 1 epoch watched)") == 1, r.stdout
    assert "TL1" not in r.stdout
    assert "trainlint: rank 1: 0 findings, reported by rank 0" in r.stderr


def test_merge_names_ranks_and_reports_a_shared_finding_once():
    from trainlint.diagnostics import Diagnostic, Location
    from trainlint.runtime.ranks import merge

    def diag(code, msg, step, evidence):
        return Diagnostic(code=code, name="x", message=msg, filename="t.py", location=Location(3, 1),
                          end_location=Location(3, 9),
                          runtime={"step": step, "epoch": 1, "evidence": evidence, "confirms": None})

    own = [diag("TL105", "norm 1e3", 7, {"grad_norm": 1e3}), diag("TL114", "differ", 50, {"ranks": [0, 1]})]
    others = {1: [diag("TL105", "norm 1e3", 7, {"grad_norm": 1e3}).to_json(),
                  diag("TL101", "loss is NaN", 9, {}).to_json()],
              2: [diag("TL105", "norm 1e3", 7, {"grad_norm": 1e3}).to_json()]}
    out = merge(own, 0, others)
    assert [(d.code, d.message) for d in out] == [
        ("TL105", "ranks 0, 1, 2: norm 1e3"), ("TL101", "rank 1: loss is NaN"), ("TL114", "differ")]
    assert out[0].runtime["evidence"] == {"grad_norm": 1e3, "ranks": [0, 1, 2]}
    assert out[1].to_json()["step"] == 9


def test_a_single_process_run_has_no_ranks():
    from trainlint.runtime import watch

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(config=False, every=2) as w:
        for _ in range(4):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
    assert not w.monitor.ranks.active and w.monitor.ranks.rank is None
    assert w.findings == []
