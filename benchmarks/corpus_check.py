#!/usr/bin/env python3
"""Lint and fix a corpus of real Python files, and check that trainlint never breaks anything.

    python benchmarks/corpus_check.py [TARGET ...] [--jobs N] [--json] [--keep] [--work DIR]
                                      [--limit N] [--timeout S] [--timing]

TARGET is an installed distribution or importable package (every .py file it installed: `pytest`
includes `_pytest`, `torch` includes `torchgen` and `functorch`) or a folder or file. Default: torch,
libcst, click, pytest, hypothesis, and numpy, sympy, networkx, jinja2 and pygments when installed.
Run it with the Python of the environment where trainlint is installed.

The files are copied (with their modes) to a temporary folder, then, each time in a fresh
`python -m trainlint` process started in an empty folder (so nothing of the corpus can shadow a
module), with a config that excludes nothing:
  1. lint: findings per code, TL000 per reason;
  2. `--fix --unsafe-fixes`: fixes applied; every changed file must still decode with the same
     encoding and BOM, parse, use no line ending it did not use before, keep its mode, and have been
     reported as fixed; every file that was not reported as fixed must be byte-identical;
  3. the same fix run again: it must change nothing.
"parsed" counts the files that the prefilter let through and that LibCST parsed. Every run is checked
for a traceback in its output and for an exit status other than 0, 1 or 2 (a crash).
With --timing, every file is also linted in this process, one at a time, to list the slowest files.
With --force-parse, a comment holding every rule's prefilter words is appended to each copy and the
structural gate is off (TRAINLINT_NO_GATE=1), so that every file is parsed and every rule runs on it (the
prefilter and the gate otherwise skip most files unparsed).

Exit status: 0 when every must-be-zero count is zero, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

DEFAULT_TARGETS = ["torch", "libcst", "click", "pytest", "hypothesis"]
OPTIONAL_TARGETS = ["numpy", "sympy", "networkx", "jinja2", "pygments"]
MUST_BE_ZERO = [
    "tracebacks", "crashes", "failed_to_parse_after_fix", "changed_without_reported_fix",
    "reported_fix_but_unchanged", "encoding_or_bom_changed", "new_line_endings", "mode_changed",
    "changed_files_that_did_not_parse_before", "second_run_changes", "second_run_fixes",
]
_EOL = re.compile(rb"\r\n|\r|\n")
_FIXED = re.compile(r"^Fixed (\d+) in (.*)$")
# Every rule's prefilter words, in a comment (ASCII: fits every ASCII-compatible encoding).
FORCE_COMMENT = ("# corpus_check: loss.backward() opt.step() optimizer_step() zero_grad() DataLoader Adam "
                 "RMSprop smooth dice inter eps Loss loss.mean() reduce_mean x.size(0) len( batch_size / * (1")


# -- collecting the corpus ----------------------------------------------------------------------------

def _distribution_files(name: str) -> Optional[List[str]]:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    out = []
    for f in dist.files or []:
        if str(f).endswith(".py"):
            p = os.path.realpath(str(f.locate()))
            if os.path.isfile(p):
                out.append(p)
    return out or None


def _package_files(name: str) -> Optional[List[str]]:
    try:
        spec = importlib.util.find_spec(name)  # a top-level name: finds it without importing it
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots:
        return [spec.origin] if spec.origin and spec.origin.endswith(".py") else None
    return [p for r in roots for p in _walk(r)]


def _walk(root: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if f.endswith(".py") and os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def collect(target: str) -> Tuple[str, List[str]]:
    """(root the relative paths start from, files) of a target."""
    if os.path.isdir(target):
        root = os.path.abspath(target)
        return root, _walk(root)
    if os.path.isfile(target):
        p = os.path.abspath(target)
        return os.path.dirname(p), [p]
    files = _distribution_files(target) or _package_files(target)
    if not files:
        raise SystemExit(f"corpus_check: {target!r} is neither a folder nor an installed package")
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    return root, sorted(set(files))


# -- running trainlint ------------------------------------------------------------------------------

class Runner:
    def __init__(self, work: str, jobs: int, timeout: int):
        self.cwd = os.path.join(work, "cwd")  # empty: nothing to shadow a module with `python -m`
        os.makedirs(self.cwd, exist_ok=True)
        self.config = os.path.join(work, "trainlint.toml")
        with open(self.config, "w") as fh:
            fh.write("exclude = []\n")  # lint everything, also folders named build/, dist/, ...
        self.jobs = jobs
        self.timeout = timeout
        self.runs: List[dict] = []

    def __call__(self, label: str, args: List[str]) -> Tuple[str, str, int]:
        cmd = [sys.executable, "-m", "trainlint", "--no-cache", "--config", self.config,
               "-j", str(self.jobs), *args]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=self.cwd, capture_output=True, timeout=self.timeout)
            rc, out, err = p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as exc:
            rc, out, err = -999, (exc.stdout or b"").decode("utf-8", "replace"), (exc.stderr or b"").decode("utf-8", "replace")
        wall = time.monotonic() - t0
        tb = (out + err).count("Traceback (most recent call last)")
        self.runs.append({"run": label, "exit": rc, "seconds": round(wall, 1), "tracebacks": tb,
                          "crashed": rc not in (0, 1, 2)})
        if tb or rc not in (0, 1, 2):
            sys.stderr.write(f"corpus_check: {label}: exit {rc}, {tb} traceback(s):\n{err[-3000:]}\n")
        return out, err, rc


def _json(out: str) -> list:
    try:
        data = json.loads(out)
        return data if isinstance(data, list) else []
    except ValueError:
        return []


def tl000_reason(message: str) -> str:
    for prefix, reason in [
        ("syntax error", "syntax error"),
        ("file is not valid", "encoding: not decodable"),
        ("bad encoding declaration", "encoding: bad declaration"),
        ("unknown encoding", "encoding: unknown"),
        ("file contains a NUL byte", "NUL byte"),
        ("cannot read file", "cannot read"),
        ("cannot write fixed file", "cannot write"),
        ("code is nested too deeply", "nested too deeply"),
        ("cannot parse file", "parser failure"),
    ]:
        if message.startswith(prefix):
            return reason
    m = re.match(r"internal error( in TL\d+)?", message)
    if m:
        return "internal error" + (m.group(1) or "")
    return message[:50]


def _eols(data: bytes) -> set:
    return set(_EOL.findall(data))


# -- the check ----------------------------------------------------------------------------------------

def _force(data: bytes) -> bytes:
    eols = _EOL.findall(data[:65536])
    eol = collections.Counter(eols).most_common(1)[0][0] if eols else b"\n"
    if data and not data.endswith((b"\n", b"\r")):
        data += eol
    return data + FORCE_COMMENT.encode("ascii") + eol


def check(targets: List[str], work: str, jobs: int = 0, timeout: int = 7200, limit: int = 0,
          timing: bool = False, log=lambda s: None, force_parse: bool = False) -> dict:
    from trainlint.codes import STATIC_CODES
    from trainlint.engine import _rules_matching, parse
    from trainlint.source import SourceError, decode

    corpus = os.path.join(work, "corpus")
    originals: Dict[str, bytes] = {}
    per_target = {}
    for t in targets:
        root, files = collect(t)
        if limit:
            files = files[:limit]
        name = re.sub(r"[^\w.-]", "_", os.path.basename(os.path.normpath(t)) or "corpus")
        for f in files:
            dest = os.path.join(corpus, name, os.path.relpath(f, root))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(f, dest)
            os.chmod(dest, stat.S_IMODE(os.stat(f).st_mode) | stat.S_IWUSR | stat.S_IRUSR)
            with open(dest, "rb") as fh:
                originals[dest] = fh.read()
            if force_parse:
                os.environ["TRAINLINT_NO_GATE"] = "1"  # inherited by every trainlint run below
                originals[dest] = _force(originals[dest])
                with open(dest, "wb") as fh:
                    fh.write(originals[dest])
        per_target[t] = len(files)
        log(f"{t}: {len(files)} files from {root}")

    r = {"targets": per_target, "force_parse": force_parse, "files": len(originals), "lines": 0, "bytes": 0, "decoded": 0,
         "prefilter_candidates": 0, "parsed": 0, "findings": 0, "findings_per_code": {},
         "tl000_per_reason": {}, "fixes_applied": 0, "files_fixed": 0}
    for k in MUST_BE_ZERO:
        r[k] = 0
    examples = collections.defaultdict(list)
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in originals}
    decoded = {}
    for p, data in originals.items():
        r["bytes"] += len(data)
        r["lines"] += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        try:
            src = decode(data)
        except SourceError:
            continue
        r["decoded"] += 1
        decoded[p] = src
        if _rules_matching(src.text, STATIC_CODES):
            r["prefilter_candidates"] += 1

    run = Runner(work, jobs, timeout)

    # 1. lint
    log("lint ...")
    out, err, rc = run("lint", ["--output-format", "json", "--exit-zero", corpus])
    diags = _json(out)
    r["findings"] = len(diags)
    by_code = collections.Counter(d["code"] for d in diags)
    r["findings_per_code"] = dict(sorted(by_code.items()))
    reasons = collections.Counter()
    unparsed = set()
    for d in diags:
        if d["code"] == "TL000":
            reasons[tl000_reason(d["message"])] += 1
            unparsed.add(os.path.abspath(d["filename"]))
            if len(examples["tl000:" + tl000_reason(d["message"])]) < 3:
                examples["tl000:" + tl000_reason(d["message"])].append(
                    f"{d['filename']}:{d['location']['row']}: {d['message'][:160]}")
    r["tl000_per_reason"] = dict(reasons.most_common())
    r["parsed"] = sum(1 for p, s in decoded.items() if p not in unparsed and _rules_matching(s.text, STATIC_CODES))

    # 2. fix
    log("fix ...")
    out, err, rc = run("fix", ["--fix", "--unsafe-fixes", "--show-fixes", "--output-format", "json", "--exit-zero", corpus])
    reported: Dict[str, int] = {}
    for line in err.splitlines():
        m = _FIXED.match(line.strip())
        if m:
            reported[os.path.abspath(m.group(2))] = int(m.group(1))
    r["fixes_applied"] = sum(reported.values())
    after: Dict[str, bytes] = {}
    for p, old in originals.items():
        with open(p, "rb") as fh:
            new = fh.read()
        after[p] = new
        if new == old:
            if p in reported:
                r["reported_fix_but_unchanged"] += 1
            continue
        r["files_fixed"] += 1
        if len(examples["fixed"]) < 10:
            examples["fixed"].append(os.path.relpath(p, corpus))
        if p not in reported:
            r["changed_without_reported_fix"] += 1
            examples["changed_without_reported_fix"].append(p)
        if p in unparsed or p not in decoded:
            r["changed_files_that_did_not_parse_before"] += 1
        if stat.S_IMODE(os.stat(p).st_mode) != modes[p]:
            r["mode_changed"] += 1
        if not _eols(new) <= (_eols(old) or {b"\n"}):
            r["new_line_endings"] += 1
            examples["new_line_endings"].append(p)
        try:
            src = decode(new)
        except SourceError as exc:
            r["encoding_or_bom_changed"] += 1
            examples["encoding_or_bom_changed"].append(f"{p}: {exc.message}")
            continue
        before = decoded.get(p)
        if before is not None and (src.encoding, src.bom) != (before.encoding, before.bom):
            r["encoding_or_bom_changed"] += 1
            examples["encoding_or_bom_changed"].append(p)
        try:
            parse(src.text)
        except SourceError as exc:
            r["failed_to_parse_after_fix"] += 1
            examples["failed_to_parse_after_fix"].append(f"{p}: {exc.message}")

    # 3. fix again: nothing may change
    log("fix again ...")
    out, err, rc = run("fix again", ["--fix", "--unsafe-fixes", "--show-fixes", "--output-format", "json", "--exit-zero", corpus])
    r["second_run_fixes"] = sum(int(m.group(1)) for m in (_FIXED.match(l.strip()) for l in err.splitlines()) if m)
    for p, data in after.items():
        with open(p, "rb") as fh:
            if fh.read() != data:
                r["second_run_changes"] += 1
                examples["second_run_changes"].append(p)
    r["remaining_after_fix"] = len(_json(out))

    r["tracebacks"] = sum(x["tracebacks"] for x in run.runs)
    r["crashes"] = sum(1 for x in run.runs if x["crashed"])
    r["runs"] = run.runs

    if timing:
        log("timing every file in this process ...")
        from trainlint.config import Settings
        from trainlint.engine import lint_text

        opts = Settings().rule_options()
        times = []
        for p, s in decoded.items():
            t0 = time.perf_counter()
            lint_text(s.text, p, STATIC_CODES, opts)
            times.append((time.perf_counter() - t0, len(originals[p]), os.path.relpath(p, corpus)))
        times.sort(reverse=True)
        r["slowest_files"] = [f"{t:.2f}s {size // 1024} KiB {p}" for t, size, p in times[:10]]

    r["examples"] = {k: v[:10] for k, v in examples.items()}
    r["ok"] = all(r[k] == 0 for k in MUST_BE_ZERO)
    return r


def report(r: dict) -> str:
    lines = []
    add = lines.append
    add("targets: " + ", ".join(f"{t} ({n} files)" for t, n in r["targets"].items()))
    if r.get("force_parse"):
        add("--force-parse: every file got a comment with every rule's prefilter words")
    add(f"files                    {r['files']:>9}   ({r['bytes'] / 1e6:.1f} MB)")
    add(f"lines                    {r['lines']:>9}")
    add(f"decoded                  {r['decoded']:>9}")
    add(f"prefilter candidates     {r['prefilter_candidates']:>9}   (files a selected rule could match)")
    add(f"parsed                   {r['parsed']:>9}")
    add(f"findings                 {r['findings']:>9}")
    for c, n in r["findings_per_code"].items():
        add(f"  {c}                  {n:>9}")
    add("TL000 per reason:" + ("" if r["tl000_per_reason"] else " none"))
    for k, n in r["tl000_per_reason"].items():
        add(f"  {k:<23}{n:>9}")
    add(f"fixes applied            {r['fixes_applied']:>9}   in {r['files_fixed']} files")
    add(f"remaining after fix      {r.get('remaining_after_fix', 0):>9}")
    add("must be 0:")
    for k in MUST_BE_ZERO:
        add(f"  {k:<40}{r[k]:>6}{'' if r[k] == 0 else '   <-- FAIL'}")
    add("runs: " + "; ".join(f"{x['run']}: exit {x['exit']}, {x['seconds']}s" for x in r["runs"]))
    for k, v in r.get("examples", {}).items():
        add(f"{k}:")
        for e in v:
            add(f"  {e}")
    for s in r.get("slowest_files", []):
        add(f"slow: {s}")
    add("OK" if r["ok"] else "FAILED")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="installed packages or folders (default: %(default)s)")
    ap.add_argument("--jobs", "-j", type=int, default=0, help="trainlint -j (0: one per core)")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    ap.add_argument("--work", help="work folder (default: a new temporary one)")
    ap.add_argument("--limit", type=int, default=0, help="at most N files per target")
    ap.add_argument("--timeout", type=int, default=7200, help="seconds per trainlint run")
    ap.add_argument("--timing", action="store_true", help="also time every file, list the slowest")
    ap.add_argument("--force-parse", action="store_true",
                    help="append a comment with every prefilter word to each copy and turn the structural gate "
                         "off: parse every file, run every rule")
    a = ap.parse_args(argv)
    targets = a.targets or DEFAULT_TARGETS + [
        t for t in OPTIONAL_TARGETS if importlib.util.find_spec(t) is not None
    ]
    work = a.work or tempfile.mkdtemp(prefix="trainlint-corpus-")
    log = (lambda s: sys.stderr.write(f"corpus_check: {s}\n")) if not a.json else (lambda s: None)
    try:
        r = check(targets, work, a.jobs, a.timeout, a.limit, a.timing, log, a.force_parse)
    finally:
        if a.keep or a.work:
            sys.stderr.write(f"corpus_check: work folder kept: {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(r, indent=2) if a.json else report(r))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
