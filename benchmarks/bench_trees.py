#!/usr/bin/env python3
"""trainlint against Ruff on real trees, as ratios measured in one run (README's speed table).

    python benchmarks/bench_trees.py TREE [TREE ...] [--runs N] [--ruff PATH] [--warm TREE] [--json OUT]

Run it with the Python of the environment where trainlint is installed. The trees are paths: this
script fetches nothing. README ("Speed") says how to get the trees of its table (the installed torch
package, and Git snapshots of MONAI, kornia, nnUNet and yolov5).

Measured, each `--runs` times (best and median reported; the ratio uses the best of each, the run least
disturbed by other work on the machine):
  1. trainlint cold: `python -m trainlint --no-cache -q --exit-zero TREE` (all rules, both cores);
  2. Ruff cold: `ruff check --select ALL --no-cache --exit-zero -q TREE` (found on PATH, or --ruff);
  3. peak memory of trainlint, sampled every 0.1 s over its process tree (pool workers included): the
     summed proportional set size (PSS: pages the forked workers share with their parent counted once),
     the summed RSS (shared pages counted in every process), and the largest single process;
  4. warm (nothing changed) on `--warm TREE` (default: the first tree): a fresh cache filled once;
  5. one file, the pre-commit case: `trainlint --no-cache examples/train.py`, and a file no rule can
     fire on (this script itself), against `python -c pass`.
The machine's load average is printed with every measurement: the ratios are only as good as the quiet.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable


def _bench_static():
    spec = importlib.util.spec_from_file_location("bench_static", os.path.join(HERE, "bench_static.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_static"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


BS = _bench_static()


def runs(cmd: List[str], n: int, ok=(0,), cwd: Optional[str] = None) -> List[object]:
    out = []
    for _ in range(n):
        out.append(BS.run_procs([cmd], cwd=cwd, ok_rc=ok))
    return out


def summary(rs) -> Dict[str, float]:
    walls = [r.wall for r in rs]
    cpus = [r.cpu for r in rs]
    trees = [r.rss_tree_mb for r in rs if r.rss_tree_mb is not None]
    pss = [r.pss_tree_mb for r in rs if r.pss_tree_mb is not None]
    loads = [r.load for r in rs if r.load is not None]
    return {"best_wall": min(walls), "median_wall": statistics.median(walls), "best_cpu": min(cpus),
            "peak_mb": max(trees) if trees else max(r.rss_max_mb for r in rs),
            "peak_pss_mb": max(pss) if pss else None, "largest_process_mb": max(r.rss_max_mb for r in rs),
            "load": max(loads) if loads else None}


def count_py(tree: str):
    files = lines = 0
    for root, dirs, names in os.walk(tree):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.endswith(".py"):
                files += 1
                try:
                    with open(os.path.join(root, name), "rb") as fh:
                        lines += fh.read().count(b"\n")
                except OSError:
                    pass
    return files, lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ruff", default=shutil.which("ruff"), help="the ruff executable [on PATH]")
    ap.add_argument("--warm", default=None, help="the tree of the warm measurement [the first]")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    trainlint = [PY, "-m", "trainlint"]
    version = subprocess.run(trainlint + ["--version"], capture_output=True, text=True).stdout.strip()
    ruff_version = subprocess.run([args.ruff, "--version"], capture_output=True, text=True).stdout.strip() \
        if args.ruff else None
    info = {"date": __import__("datetime").date.today().isoformat(), "cores": os.cpu_count(),
            "python": platform.python_version(), "trainlint": version, "ruff": ruff_version}
    print(f"# {info}", flush=True)
    rows = []
    for tree in args.trees:
        files, lines = count_py(tree)
        tl = summary(runs(trainlint + ["--no-cache", "-q", "--exit-zero", tree], args.runs, ok=(0, 1)))
        rf = summary(runs([args.ruff, "check", "--select", "ALL", "--no-cache", "--exit-zero", "-q", tree],
                          args.runs, ok=(0, 1, 2))) if args.ruff else None
        row = {"tree": os.path.basename(os.path.normpath(tree)), "files": files, "lines": lines,
               "trainlint": tl, "ruff": rf,
               "ratio_wall": tl["best_wall"] / rf["best_wall"] if rf else None,
               "ratio_cpu": tl["best_cpu"] / rf["best_cpu"] if rf else None}
        rows.append(row)
        print(f"{row['tree']}: {files} files; trainlint {tl['best_wall']:.2f} s (median {tl['median_wall']:.2f}, "
              f"CPU {tl['best_cpu']:.1f} s, peak {tl['peak_mb']:.0f} MB RSS summed, {tl['peak_pss_mb'] or 0:.0f} MB "
              f"PSS summed, {tl['largest_process_mb']:.0f} MB largest process)"
              + (f"; Ruff {rf['best_wall']:.2f} s (CPU {rf['best_cpu']:.1f} s); ratio {row['ratio_wall']:.1f}x wall, "
                 f"{row['ratio_cpu']:.1f}x CPU" if rf else "") + f"; load {tl['load']}", flush=True)
    warm_tree = args.warm or args.trees[0]
    cache = tempfile.mkdtemp(prefix="trainlint-bench-cache-")
    try:
        BS.run_procs([trainlint + ["--cache-dir", cache, "-q", "--exit-zero", warm_tree]], ok_rc=(0, 1))
        warm = summary(runs(trainlint + ["--cache-dir", cache, "-q", "--exit-zero", warm_tree], max(args.runs, 3),
                            ok=(0, 1)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"warm ({os.path.basename(os.path.normpath(warm_tree))}, nothing changed): {warm['best_wall']:.2f} s "
          f"(median {warm['median_wall']:.2f})", flush=True)
    n = max(args.runs, 5)
    one = summary(runs(trainlint + ["--no-cache", os.path.join(REPO, "examples", "train.py")], n, ok=(0, 1)))
    quiet = summary(runs(trainlint + ["--no-cache", os.path.abspath(__file__)], n, ok=(0, 1)))
    bare = summary(runs([PY, "-c", "pass"], n))
    print(f"one file: examples/train.py {one['best_wall']:.3f} s (median {one['median_wall']:.3f}); a file no rule "
          f"can fire on {quiet['best_wall']:.3f} s; `python -c pass` {bare['best_wall']:.3f} s", flush=True)
    print()
    print("| tree | .py files | trainlint s | Ruff s | ratio | trainlint CPU s | Ruff CPU s | trainlint peak MB "
          "(all processes, PSS) | largest process MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rf = r["ruff"] or {}
        print(f"| {r['tree']} | {r['files']:,} | {r['trainlint']['best_wall']:.2f} | {rf.get('best_wall', 0):.2f} | "
              f"{(r['ratio_wall'] or 0):.1f}x | {r['trainlint']['best_cpu']:.1f} | {rf.get('best_cpu', 0):.1f} | "
              f"{r['trainlint']['peak_pss_mb'] or r['trainlint']['peak_mb']:.0f} | "
              f"{r['trainlint']['largest_process_mb']:.0f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"info": info, "trees": rows, "warm": warm, "one_file": one, "no_rule_file": quiet,
                       "python_startup": bare}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
