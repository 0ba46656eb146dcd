#!/usr/bin/env python3
"""Where does trainlint's time go? Lints every file in ONE process through trainlint's own
`engine.process` (read, prefilter, parse, ModuleIndex, rules, noqa filter) with a timer wrapped around
each stage, and prints a breakdown, the prefilter's pass counts (overall and per rule), and the files
that cost most. Nothing in trainlint is changed: the timers are installed by patching module attributes
in this process only.

    python benchmarks/profile_static.py [CORPUS_DIR] [--limit N] [--subset-out DIR --subset N]

CORPUS_DIR defaults to the installed torch package. --subset-out writes N files that pass the prefilter
(evenly spaced) to DIR, for `python -m cProfile -s cumtime -m trainlint --no-cache -j 1 -q --exit-zero DIR`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_static import count_lines, even_sample, list_py, torch_source_dir  # noqa: E402

clock = time.process_time  # CPU time of this process: robust to other load on the machine


class Timers:
    def __init__(self) -> None:
        self.total: Dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.stack: List[List[float]] = []  # per active timer: [child time]

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            self.stack.append([0.0])
            t = clock()
            try:
                return fn(*a, **k)
            finally:
                dt = clock() - t
                child = self.stack.pop()[0]
                self.total[name] += dt - child  # exclusive time
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1][0] += dt

        return timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?")
    ap.add_argument("--limit", type=int, default=0, help="only the first N files")
    ap.add_argument("--top", type=int, default=10, help="most expensive files to list")
    ap.add_argument("--subset-out", metavar="DIR")
    ap.add_argument("--subset", type=int, default=200)
    ap.add_argument("--dump", metavar="OUT.json", help="write per-file CPU seconds, lines and parsed flag")
    a = ap.parse_args()
    root = os.path.abspath(a.corpus or torch_source_dir() or ".")
    files = list_py(root)
    if a.limit:
        files = files[: a.limit]

    import libcst
    import trainlint.analysis.index as index_mod
    import trainlint.positions as positions_mod
    import trainlint.engine as engine
    import trainlint.source as source_mod
    from trainlint.rules import RULE_MODULES, load

    T = Timers()
    codes = list(RULE_MODULES)
    rules = load(codes)

    # -- install the timers -------------------------------------------------------------------
    source_mod.read_source = T.wrap("read + decode", source_mod.read_source)
    engine._rules_matching = T.wrap("prefilter", engine._rules_matching)
    engine.parse = T.wrap("parse (libcst.parse_module)", engine.parse)
    engine.filter_suppressed = T.wrap("noqa filter + sort", engine.filter_suppressed)
    OrigIndex = index_mod.ModuleIndex
    index_mod.ModuleIndex = T.wrap("ModuleIndex build", OrigIndex)  # lint_text imports it by name each call

    positions_mod.compute_positions = T.wrap("positions (trainlint.positions)", positions_mod.compute_positions)
    for r in rules:
        r.check = T.wrap(f"rule {r.CODE} (analysis + reporting)", r.check)

    # -- run ----------------------------------------------------------------------------------
    per_file: Dict[str, float] = {}
    lines = {f: count_lines(f) for f in files}
    parsed: List[str] = []
    with_findings = 0
    diags: Counter = Counter()
    t_all = clock()
    for f in files:
        t = clock()
        res = engine.process(engine.Job(path=f, codes=codes, options={}))
        per_file[f] = clock() - t
        if res.parsed:
            parsed.append(f)
        if res.diagnostics:
            with_findings += 1
            diags.update(d.code for d in res.diagnostics)
    total = clock() - t_all

    # -- report -------------------------------------------------------------------------------
    n_lines = sum(lines.values())
    p_lines = sum(lines[f] for f in parsed)
    print(f"corpus {root}: {len(files)} .py files, {n_lines} lines; libcst {getattr(libcst, '__version__', '')}")
    print(f"parsed (result.parsed): {len(parsed)} files, {p_lines} lines ({100 * p_lines / max(1, n_lines):.0f}% "
          f"of the lines); files with findings: {with_findings}; findings: {dict(diags)}")
    print(f"total CPU, one process, engine.process over all files: {total:.2f} s "
          f"({1000 * total / max(1, n_lines):.3f} ms per line)\n")
    print(f"{'stage (exclusive CPU time)':52} {'s':>8} {'%':>6} {'calls':>7}")
    accounted = 0.0
    for name, s in sorted(T.total.items(), key=lambda kv: -kv[1]):
        accounted += s
        print(f"{name:52} {s:8.2f} {100 * s / total:6.1f} {T.calls[name]:7d}")
    rest = total - accounted
    print(f"{'other (engine glue, Job, LintResult, ...)':52} {rest:8.2f} {100 * rest / total:6.1f}")

    # -- prefilter ----------------------------------------------------------------------------
    print("\nprefilter: files each rule lets through (a file is parsed if any rule does)")
    texts = {}
    for f in files:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                texts[f] = fh.read()
        except OSError:
            texts[f] = ""
    only: Counter = Counter()
    from trainlint.config import Settings
    from trainlint.engine import _rules_matching

    options = Settings().rule_options()

    def passes(rule, text):
        return bool(_rules_matching(text, [rule.CODE], options))

    for r in rules:
        hit = [f for f in files if passes(r, texts[f])]
        print(f"  {r.CODE}: {len(hit):5d} files")
    for f in parsed:
        hits = [r.CODE for r in rules if passes(r, texts[f])]
        if len(hits) == 1:
            only[hits[0]] += 1
    print(f"  files let through by one rule only: {dict(only)}")

    # -- the costliest files ------------------------------------------------------------------
    print(f"\ncostliest {a.top} files (CPU s, lines):")
    for f in sorted(per_file, key=lambda f: -per_file[f])[: a.top]:
        print(f"  {per_file[f]:7.2f}  {lines[f]:6d}  {os.path.relpath(f, root)}")
    big = sorted(per_file.values(), reverse=True)
    print(f"  the 10 costliest files take {100 * sum(big[:10]) / total:.0f}% of the CPU time; the single costliest "
          f"{big[0]:.2f} s")

    if a.dump:
        import json

        with open(a.dump, "w", encoding="utf-8") as fh:
            json.dump({"root": root, "files": [[os.path.relpath(f, root), per_file[f], lines[f], f in set(parsed)]
                                               for f in files]}, fh)
    if a.subset_out:
        sub = even_sample(parsed, a.subset)
        if os.path.exists(a.subset_out):
            shutil.rmtree(a.subset_out)
        for f in sub:
            dst = os.path.join(a.subset_out, os.path.relpath(f, root))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(f, dst)
        print(f"\nwrote {len(sub)} parsed files ({sum(lines[f] for f in sub)} lines) to {a.subset_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
