#!/usr/bin/env python3
"""Does the structural gate lose findings? Lint each tree twice, with the gate and without it
(TRAINLINT_NO_GATE=1), and compare the findings one by one.

    python benchmarks/gate_check.py TREE [TREE ...] [--select CODES] [--jobs N]

Prints, per tree, the findings of each run and every finding that only one run has (with its message),
and exits 1 if any differ. Run it with the Python where trainlint is installed. The trees are paths
(extract real repositories first: see README, "Speed"). Every run is `--no-cache`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def lint(tree: str, gate: bool, select: str, jobs: int):
    env = dict(os.environ)
    if gate:
        env.pop("TRAINLINT_NO_GATE", None)
    else:
        env["TRAINLINT_NO_GATE"] = "1"
    cmd = [sys.executable, "-m", "trainlint", "--no-cache", "--exit-zero", "--output-format", "json", "-j", str(jobs)]
    if select:
        cmd += ["--select", select]
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [tree], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise SystemExit(f"trainlint failed on {tree}: {out.stderr.strip()[-500:]}")
    found = {(d["code"], os.path.relpath(d["filename"], tree), d["location"]["row"], d["location"]["column"],
              d["message"]) for d in json.loads(out.stdout or "[]")}
    return found, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--select", default="")
    ap.add_argument("--jobs", type=int, default=0)
    args = ap.parse_args()
    differ = 0
    total = [0, 0.0, 0.0]
    for tree in args.trees:
        gated, t_gated = lint(tree, True, args.select, args.jobs)
        plain, t_plain = lint(tree, False, args.select, args.jobs)
        total[0] += len(gated)
        total[1] += t_gated
        total[2] += t_plain
        status = "same" if gated == plain else "DIFFERENT"
        print(f"{tree}: {len(plain)} findings without the gate, {len(gated)} with it ({status}); "
              f"{t_plain:.1f} s -> {t_gated:.1f} s")
        for f in sorted(plain - gated):
            differ += 1
            print("   lost by the gate:", *f)
        for f in sorted(gated - plain):
            differ += 1
            print("   only with the gate:", *f)
    print(f"all trees: {total[0]} findings; {total[2]:.1f} s without the gate, {total[1]:.1f} s with it; "
          f"{differ} differences")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
