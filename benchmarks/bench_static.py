#!/usr/bin/env python3
"""How fast is trainlint's static linter? Wall time, CPU time and peak memory against a LibCST parse floor
and against peer linters (Ruff, TorchFix, Fixit).

    python benchmarks/bench_static.py [CORPUS_DIR] [--runs N] [--training-corpus DIR]
                                      [--peer-subset N] [--no-peers] [--json OUT]

Run it with the Python of the environment where trainlint is installed: every trainlint run is
`sys.executable -m trainlint` in a fresh process. CORPUS_DIR defaults to the installed torch package's
source tree (found without importing torch). Its .py files are copied to a temporary folder first, so
that every tool sees exactly the same files, no configuration file above the tree applies, and the
warm-cache test can edit a file without touching the original.

What is measured (each `--runs` times, the median reported):
  1. trainlint cold: `trainlint --no-cache -q --exit-zero CORPUS`.
  2. trainlint warm: a fresh --cache-dir filled once, then runs with nothing changed, then runs after
     editing one file (checking that exactly one file was linted again: one new cache entry).
  3. LibCST parse floor: libcst.parse_module on every file, in one process, and split over two
     processes (balanced by lines) for comparison with trainlint's process pool.
  4. Ruff (`ruff check --select ALL --no-cache --exit-zero -q`), TorchFix (`torchfix --select ALL`) and
     Fixit (`fixit lint`), each installed by this script into its own virtual environment under
     ~/.cache/trainlint-bench/venvs/ (skipped if that fails, or with --no-peers). TorchFix and Fixit
     take many minutes on a large tree: --peer-subset N runs them (and trainlint and Ruff again, for
     a like-for-like ratio) on N files spread evenly over the corpus.
  5. A corpus of training scripts that every rule's prefilter lets through (generated, or
     --training-corpus DIR): trainlint's CPU time against LibCST's parse time on the same files.
  6. One small file (the pre-commit case): `trainlint --no-cache examples/train.py`, against the
     interpreter's own start-up (`python -c pass`) and `import libcst`.

Peak memory: "largest process" is ru_maxrss of the biggest single process in the run (what
`/usr/bin/time -v` prints); "all processes" is the peak of the summed RSS of the process and its
children (sampled from /proc every 0.1 s, Linux only), which is what a process pool really costs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
TRAINLINT = [PY, "-m", "trainlint"]
RSS_SCALE = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere


def _gnu_time() -> Optional[str]:
    """GNU time, to read each command's own peak RSS: ru_maxrss from os.wait4 is not enough, because on
    Linux a child keeps the high-water mark of the (forked) parent across exec, so every command would
    seem to use at least as much memory as this script."""
    path = "/usr/bin/time"
    if not os.path.exists(path):
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "GNU" in (out.stdout + out.stderr) else None


TIME_BIN = _gnu_time()


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# -- running one command and measuring it ----------------------------------------------------------

class TreeRssSampler(threading.Thread):
    """Peak of the summed RSS of some processes and all their descendants, sampled from /proc."""

    def __init__(self, roots: Sequence[int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roots = set(roots)
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0  # proportional set size: pages shared by forked workers counted once
        self._stop_event = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    @staticmethod
    def available() -> bool:
        return os.path.exists("/proc/self/stat")

    def sample(self) -> None:
        children: Dict[int, List[int]] = {}
        rss: Dict[int, int] = {}
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    raw = fh.read()
            except OSError:
                continue
            rest = raw[raw.rfind(b")") + 2:].split()
            pid = int(name)
            children.setdefault(int(rest[1]), []).append(pid)
            rss[pid] = int(rest[21])
        total, pss, todo = 0, 0, list(self.roots)
        while todo:
            pid = todo.pop()
            total += rss.get(pid, 0)
            pss += self._pss(pid)
            todo.extend(children.get(pid, ()))
        self.peak = max(self.peak, total * self.page)
        self.peak_pss = max(self.peak_pss, pss)

    @staticmethod
    def _pss(pid: int) -> int:
        """Bytes of the process's proportional set size (Linux 4.14+), 0 if unreadable."""
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Pss:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def run(self) -> None:
        self.sample()
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Run:
    wall: float  # seconds, from start to the end of the last process
    cpu: float  # user + sys of the processes and their children
    rss_max_mb: float  # largest single process (ru_maxrss)
    rss_tree_mb: Optional[float]  # summed over the process tree (sampled)
    rc: int
    load: Optional[float] = None  # 1-minute load average when the run ended
    pss_tree_mb: Optional[float] = None  # proportional set size summed over the process tree (sampled)


class CommandFailed(Exception):
    pass


def run_procs(cmds: Sequence[Sequence[str]], cwd: Optional[str] = None, ok_rc: Sequence[int] = (0,),
              timeout: Optional[float] = None) -> Run:
    """Start `cmds` at once, wait for all; wall time, CPU time (os.wait4 rusage) and peak memory."""
    errs = [tempfile.TemporaryFile() for _ in cmds]
    rss_files: List[str] = []
    argvs = []
    for c in cmds:
        if TIME_BIN:
            fd, rf = tempfile.mkstemp(prefix="bench-rss-")
            os.close(fd)
            rss_files.append(rf)
            argvs.append([TIME_BIN, "-f", "%M", "-o", rf, *c])
        else:
            argvs.append(list(c))
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=e, stdin=subprocess.DEVNULL, cwd=cwd)
        for argv, e in zip(argvs, errs)
    ]
    sampler = TreeRssSampler([p.pid for p in procs]) if TreeRssSampler.available() else None
    if sampler:
        sampler.start()
    timer = None
    if timeout:
        def kill() -> None:
            for p in procs:
                try:
                    p.kill()
                except OSError:
                    pass
        timer = threading.Timer(timeout, kill)
        timer.start()
    cpu, rss, rcs = 0.0, 0, []
    try:
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            rcs.append(p.returncode)
            cpu += ru.ru_utime + ru.ru_stime
            rss = max(rss, ru.ru_maxrss)
    finally:
        if timer:
            timer.cancel()
    wall = time.perf_counter() - t0
    tree = sampler.stop() / 2**20 if sampler else None
    pss_tree = sampler.peak_pss / 2**20 if sampler and sampler.peak_pss else None
    if rss_files:  # GNU time's %M (KiB) replaces the inherited ru_maxrss
        rss = 0
        for rf in rss_files:
            try:
                with open(rf, encoding="utf-8") as fh:
                    rss = max(rss, int(fh.read().strip().splitlines()[-1]))
            except (OSError, ValueError, IndexError):
                pass
            os.unlink(rf)
        rss *= 1024 / RSS_SCALE
    for c, rc, e in zip(cmds, rcs, errs):
        e.seek(0)
        tail = e.read()[-2000:].decode("utf-8", "replace")
        e.close()
        if rc not in ok_rc:
            raise CommandFailed(f"{' '.join(map(str, c))} exited {rc}:\n{tail}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return Run(wall, cpu, rss / RSS_SCALE, tree, max(rcs, key=abs), load, pss_tree)


@dataclass
class Measure:
    key: str
    label: str
    files: int
    lines: int
    runs: List[Run] = field(default_factory=list)
    note: str = ""
    error: str = ""

    def med(self, attr: str) -> Optional[float]:
        vals = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None

    def peak(self, attr: str) -> Optional[float]:
        vals = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return max(vals) if vals else None

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.error


def measure(key: str, label: str, files: int, lines: int, runs: int, make: Callable[[int], Sequence[Sequence[str]]],
            note: str = "", ok_rc: Sequence[int] = (0,), cwd: Optional[str] = None,
            before: Optional[Callable[[int], None]] = None, timeout: Optional[float] = None) -> Measure:
    m = Measure(key, label, files, lines, note=note)
    for i in range(runs):
        if before:
            before(i)
        try:
            r = run_procs(make(i), cwd=cwd, ok_rc=ok_rc, timeout=timeout)
        except (CommandFailed, OSError) as exc:
            m.error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            log(f"{label}: FAILED: {exc}")
            break
        m.runs.append(r)
        log(f"{label}: run {i + 1}/{runs}: {r.wall:.2f} s wall, {r.cpu:.2f} s CPU, "
            f"{r.rss_max_mb:.0f} MB largest process" + (f", {r.rss_tree_mb:.0f} MB all" if r.rss_tree_mb else ""))
    return m


# -- corpus ----------------------------------------------------------------------------------------

def torch_source_dir() -> Optional[str]:
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")  # finds the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(spec.origin)


def list_py(root: str) -> List[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                p = os.path.join(d, f)
                if os.path.isfile(p):
                    out.append(p)
    return out


def count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        data = fh.read()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def copy_tree(files: Sequence[str], src_root: str, dst_root: str) -> List[str]:
    out = []
    for f in files:
        rel = os.path.relpath(f, src_root)
        dst = os.path.join(dst_root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(f, dst)
        out.append(dst)
    return out


def even_sample(items: Sequence[str], n: int) -> List[str]:
    if n <= 0 or n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def split_balanced(files: Sequence[str], lines: Dict[str, int], parts: int) -> List[List[str]]:
    """Largest-first greedy split into `parts` lists of about equal line counts."""
    bins: List[List[str]] = [[] for _ in range(parts)]
    load = [0] * parts
    for f in sorted(files, key=lambda f: -lines[f]):
        i = load.index(min(load))
        bins[i].append(f)
        load[i] += lines[f]
    return bins


def prefilter_pass(files: Sequence[str]) -> Optional[List[str]]:
    """Files that at least one default rule's prefilter lets through (so trainlint parses them)."""
    try:
        import tokenize

        from trainlint.engine import _rules_matching  # private: degrade gracefully if it changes
        from trainlint.rules import RULE_MODULES
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        return None
    codes = list(RULE_MODULES)
    out = []
    for f in files:
        try:
            with tokenize.open(f) as fh:
                text = fh.read()
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        if _rules_matching(text, codes):
            out.append(f)
    return out


# -- the parse floor (runs in a child: `bench_static.py --_parse-worker LIST OUT`) ------------------

def parse_worker(list_file: str, out_file: str) -> None:
    import tokenize

    import libcst

    with open(list_file, encoding="utf-8") as fh:
        files = [line for line in fh.read().split("\n") if line]
    times: Dict[str, float] = {}
    errors = 0
    clock = time.process_time  # CPU seconds: a busy machine does not inflate them
    for f in files:
        with tokenize.open(f) as fh:
            text = fh.read()
        t = clock()
        try:
            libcst.parse_module(text)
        except Exception:  # noqa: BLE001 - count and go on, as a linter would
            errors += 1
        times[f] = clock() - t
    with open(out_file, "w", encoding="utf-8") as fh:
        json.dump({"times": times, "errors": errors}, fh)


def parse_floor(key: str, label: str, files: Sequence[str], lines: Dict[str, int], runs: int, parts: int,
                work: str, note: str = "") -> Measure:
    chunks = split_balanced(files, lines, parts) if parts > 1 else [list(files)]
    lists, outs = [], []
    for i, chunk in enumerate(chunks):
        lf = os.path.join(work, f"{key}-list-{i}.txt")
        with open(lf, "w", encoding="utf-8") as fh:
            fh.write("\n".join(chunk))
        lists.append(lf)
        outs.append(os.path.join(work, f"{key}-out-{i}.json"))
    me = os.path.abspath(__file__)
    m = measure(key, label, len(files), sum(lines[f] for f in files), runs,
                lambda i: [[PY, me, "--_parse-worker", lf, of] for lf, of in zip(lists, outs)], note=note)
    if m.ok:  # per-file parse times of the last run
        per_file: Dict[str, float] = {}
        errors = 0
        for of in outs:
            with open(of, encoding="utf-8") as fh:
                data = json.load(fh)
            per_file.update(data["times"])
            errors += data["errors"]
        m.per_file = per_file  # type: ignore[attr-defined]
        m.parse_errors = errors  # type: ignore[attr-defined]
    return m


# -- peers -----------------------------------------------------------------------------------------

PEERS = {
    # name: (pip requirement, executable, version arguments)
    "ruff": ("ruff", "ruff", ["--version"]),
    "torchfix": ("torchfix", "torchfix", ["--version"]),
    "fixit": ("fixit", "fixit", ["--version"]),
}


def venv_bin(venv: str, exe: str) -> str:
    return os.path.join(venv, "Scripts" if os.name == "nt" else "bin", exe)


def ensure_peer(name: str, root: str) -> Tuple[Optional[str], str]:
    """Path to the peer's executable (installing it into ROOT/NAME if needed), and its version or why not."""
    req, exe, vargs = PEERS[name]
    venv = os.path.join(root, name)
    path = venv_bin(venv, exe)

    def version() -> Optional[str]:
        try:
            out = subprocess.run([path, *vargs], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None

    if os.path.exists(path):
        v = version()
        if v:
            return path, v
    log(f"installing {name} into {venv} ...")
    try:
        if os.path.exists(venv):
            shutil.rmtree(venv)
        subprocess.run([PY, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
        r = subprocess.run([venv_bin(venv, "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", req], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            return None, "pip install failed: " + ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1][:200]
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot create the environment: {exc}"
    v = version()
    return (path, v) if v else (None, "installed, but `--version` fails")


def peer_cmd(name: str, exe: str, target: str) -> List[str]:
    if name == "ruff":
        return [exe, "check", "--select", "ALL", "--no-cache", "--exit-zero", "-q", "--isolated", target]
    if name == "torchfix":
        return [exe, "--select", "ALL", target]
    if name == "fixit":
        return [exe, "lint", target]
    raise KeyError(name)


# -- cache helpers ---------------------------------------------------------------------------------

def cache_entries(cache_dir: str) -> int:
    n = 0
    for _d, _, files in os.walk(cache_dir):
        for f in files:
            if not f.startswith(".") and f != "CACHEDIR.TAG":
                n += 1
    return n


# -- report ----------------------------------------------------------------------------------------

def fmt(x: Optional[float], digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def per_kloc(m: Optional[Measure], attr: str = "wall") -> Optional[float]:
    if not m or not m.ok or not m.lines:
        return None
    v = m.med(attr)
    return None if v is None else v / m.lines * 1000


def render(results: Dict[str, Measure], info: Dict[str, object]) -> str:
    out: List[str] = []
    w = out.append
    w(f"# trainlint static benchmark — {info['date']}")
    w("")
    w(f"- machine: {info['cores']} cores (os.cpu_count()), {info['platform']}; "
      f"load average at start {info['load_start']}, at end {info['load_end']}")
    w(f"- python {info['python']}, libcst {info['libcst']}, trainlint {info['trainlint']}")
    w(f"- corpus: `{info['corpus']}`: {info['files']} .py files, {info['lines']} lines "
      f"(copied to a temporary folder); {info['prefilter']}")
    w(f"- runs per measurement: {info['runs']} (single-file: {info['single_runs']}); medians shown; "
      f"peak memory is the maximum over the runs")
    if info.get("peers"):
        w(f"- peers: {info['peers']}")
    if info.get("subset_note"):
        w(f"- {info['subset_note']}")
    w("")
    w("| measurement | files | lines | wall s (median) | wall min–max | CPU s (user+sys) | CPU/wall | "
      "peak MB, largest process | peak MB, all processes | s per 1000 lines | load | note |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for m in results.values():
        if not m.ok:
            w(f"| {m.label} | {m.files} | {m.lines} | skipped | | | | | | | | {m.error or m.note} |")
            continue
        walls = [r.wall for r in m.runs]
        wall, cpu = m.med("wall"), m.med("cpu")
        w(f"| {m.label} | {m.files} | {m.lines} | {fmt(wall)} | {fmt(min(walls))}–{fmt(max(walls))} | "
          f"{fmt(cpu)} | {fmt(cpu / wall if wall else None)} | {fmt(m.peak('rss_max_mb'), 0)} | "
          f"{fmt(m.peak('rss_tree_mb'), 0)} | {fmt(per_kloc(m), 3) if m.lines else ''} | "
          f"{fmt(m.med('load'), 1)} | {m.note} |")
    w("")

    g = results.get
    cold, warm, warm1, fill = g("tl_cold"), g("tl_warm"), g("tl_warm_edit"), g("tl_fill")
    ruff = g("ruff")
    tf_, fx = g("torchfix"), g("fixit")
    sub_tl, sub_ruff = g("sub_trainlint"), g("sub_ruff")
    f1, f2 = g("floor_1p"), g("floor_2p")
    tr_tl, tr_tl1, tr_floor = g("train_tl"), g("train_tl_j1"), g("train_floor")
    one, py_pass, py_cst = g("single"), g("py_pass"), g("py_libcst")

    def med(m: Optional[Measure], attr: str = "wall") -> Optional[float]:
        return m.med(attr) if m and m.ok else None

    rows = []
    rows.append(("trainlint cold / Ruff --select ALL (wall, whole corpus)", fmt_ratio(med(cold), med(ruff)),
                 f"{fmt(med(cold))} s vs {fmt(med(ruff))} s; CPU {fmt_ratio(med(cold, 'cpu'), med(ruff, 'cpu'))}"))
    if sub_tl is not None and sub_tl is not cold:
        rows.append(("trainlint cold / Ruff (wall, peer subset)", fmt_ratio(med(sub_tl), med(sub_ruff)),
                     f"{fmt(med(sub_tl))} s vs {fmt(med(sub_ruff))} s; "
                     f"CPU {fmt_ratio(med(sub_tl, 'cpu'), med(sub_ruff, 'cpu'))}"))
    ref = sub_tl if sub_tl is not None else cold
    where = "peer subset, same files" if sub_tl is not None else "whole corpus"
    for name, m in (("TorchFix", tf_), ("Fixit", fx)):
        if m is not None and m.ok:
            rows.append((f"{name} / trainlint cold (wall, {where})", fmt_ratio(med(m), med(ref)),
                         f"{fmt(per_kloc(m), 3)} vs {fmt(per_kloc(ref), 3)} s per 1000 lines; "
                         f"CPU {fmt_ratio(med(m, 'cpu'), med(ref, 'cpu'))}"))
        elif m is not None:
            rows.append((f"{name} / trainlint cold", "n/a", m.error or m.note))
    rows.append(("trainlint cold / LibCST parse floor, 1 process (wall)", fmt_ratio(med(cold), med(f1)),
                 f"{fmt(med(cold))} s vs {fmt(med(f1))} s"))
    rows.append(("trainlint cold / LibCST parse floor, 2 processes (wall)", fmt_ratio(med(cold), med(f2)),
                 f"{fmt(med(cold))} s vs {fmt(med(f2))} s; the floor's CPU/wall is "
                 f"{fmt(med(f2, 'cpu') / med(f2) if med(f2) else None)} (2.0 = both cores free)"))
    rows.append(("trainlint cold CPU / parse floor CPU (1 process)", fmt_ratio(med(cold, "cpu"), med(f1, "cpu")),
                 f"{fmt(med(cold, 'cpu'))} s vs {fmt(med(f1, 'cpu'))} s"))
    rows.append(("warm, nothing changed (wall)", f"{fmt(med(warm))} s",
                 f"{fmt_ratio(med(warm), med(cold))} of cold; cache fill run {fmt(med(fill))} s"))
    rows.append(("warm, one file edited (wall)", f"{fmt(med(warm1))} s", getattr(warm1, "note", "") if warm1 else ""))
    rows.append(("training corpus: trainlint CPU / LibCST parse CPU (same files)",
                 fmt_ratio(med(tr_tl, "cpu"), med(tr_floor, "cpu")),
                 f"{fmt(med(tr_tl, 'cpu'))} s vs {fmt(med(tr_floor, 'cpu'))} s (both include start-up)"))
    rows.append(("training corpus, -j 1: trainlint CPU / LibCST parse CPU",
                 fmt_ratio(med(tr_tl1, "cpu"), med(tr_floor, "cpu")),
                 f"{fmt(med(tr_tl1, 'cpu'))} s vs {fmt(med(tr_floor, 'cpu'))} s"))
    pure = getattr(tr_floor, "per_file", None) if tr_floor else None
    if pure and tr_tl1 and tr_tl1.ok and py_cst and py_cst.ok:
        ps = sum(pure.values())
        beyond = med(tr_tl1, "cpu") - med(py_cst, "cpu")
        rows.append(("training corpus, -j 1: (trainlint CPU − `import libcst` CPU) / pure parse time",
                     fmt_ratio(beyond, ps), f"{fmt(beyond)} s vs {fmt(ps)} s CPU of parse_module alone"))
    rows.append(("peak memory, trainlint cold (all processes / largest process)",
                 f"{fmt(cold.peak('rss_tree_mb') if cold and cold.ok else None, 0)} / "
                 f"{fmt(cold.peak('rss_max_mb') if cold and cold.ok else None, 0)} MB",
                 f"Ruff {fmt(ruff.peak('rss_tree_mb') if ruff and ruff.ok else None, 0)} MB"))
    rows.append(("single file (examples/train.py), trainlint --no-cache", f"{fmt(med(one), 3)} s",
                 f"python -c pass {fmt(med(py_pass), 3)} s; import libcst {fmt(med(py_cst), 3)} s"))
    w("| ratio / headline | value | detail |")
    w("|---|---:|---|")
    for a, b, c in rows:
        w(f"| {a} | {b} | {c} |")
    w("")
    for line in info.get("notes", []):
        w(f"- {line}")
    return "\n".join(out) + "\n"


# -- main ------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--_parse-worker":
        parse_worker(argv[1], argv[2])
        return 0

    ap = argparse.ArgumentParser(
        description="Benchmark trainlint's static linter against a LibCST parse floor and peer linters.")
    ap.add_argument("corpus", nargs="?", help="folder of Python files (default: the installed torch package)")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median reported) [3]")
    ap.add_argument("--single-runs", type=int, default=10, help="runs of the single-file measurements [10]")
    ap.add_argument("--training-corpus", metavar="DIR", help="training scripts to use instead of generating 200")
    ap.add_argument("--training-count", type=int, default=200, help="scripts to generate [200]")
    ap.add_argument("--no-peers", action="store_true", help="skip Ruff, TorchFix and Fixit")
    ap.add_argument("--peers", default="ruff,torchfix,fixit", help="which peers [ruff,torchfix,fixit]")
    ap.add_argument("--peer-subset", type=int, default=0, metavar="N",
                    help="run TorchFix and Fixit (and trainlint and Ruff again) on N files spread evenly over "
                         "the corpus instead of all of it [0: all]")
    ap.add_argument("--peer-runs", type=int, default=None, help="runs of TorchFix and Fixit [--runs]")
    ap.add_argument("--venv-root", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "trainlint-bench", "venvs"), help="where the peers' virtual environments live")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: cold,warm,floor,training,single")
    ap.add_argument("--json", metavar="OUT", help="also write the raw results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    runs = max(1, a.runs)
    peer_runs = max(1, a.peer_runs or runs)

    src_root = a.corpus or torch_source_dir()
    if not src_root or not os.path.isdir(src_root):
        ap.error("no corpus: pass CORPUS_DIR (torch is not installed here)")
    src_root = os.path.abspath(src_root)

    t_start = time.time()
    info: Dict[str, object] = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "runs": runs,
        "single_runs": a.single_runs,
        "corpus": src_root,
        "notes": [],
    }
    try:
        from importlib.metadata import version

        info["libcst"] = version("libcst")
        info["trainlint"] = version("trainlint")
    except Exception:  # noqa: BLE001
        info.setdefault("libcst", "?")
        info.setdefault("trainlint", "?")

    work = tempfile.mkdtemp(prefix="trainlint-bench-")
    results: Dict[str, Measure] = {}
    try:
        log(f"copying the .py files of {src_root} to {work}/corpus")
        corpus = os.path.join(work, "corpus", os.path.basename(src_root.rstrip(os.sep)) or "corpus")
        files = copy_tree(list_py(src_root), src_root, corpus)
        lines = {f: count_lines(f) for f in files}
        total_lines = sum(lines.values())
        info["files"], info["lines"] = len(files), total_lines
        passing = prefilter_pass(files)
        if passing is not None:
            pl = sum(lines[f] for f in passing)
            info["prefilter"] = (f"{len(passing)} files ({pl} lines, {100 * pl / max(1, total_lines):.0f}% of the "
                                 f"lines) pass trainlint's prefilter and are parsed")
        else:
            info["prefilter"] = "prefilter count unavailable"
        log(f"{len(files)} files, {total_lines} lines; {info['prefilter']}")
        N, L = len(files), total_lines

        # 6. single file first: short, and most sensitive to a busy machine
        example = os.path.join(REPO, "examples", "train.py")
        if "single" not in skip:
            sr = max(1, a.single_runs)
            results["py_pass"] = measure("py_pass", "python -c pass (interpreter floor)", 0, 0, sr,
                                         lambda i: [[PY, "-c", "pass"]])
            results["py_libcst"] = measure("py_libcst", "python -c 'import libcst'", 0, 0, sr,
                                           lambda i: [[PY, "-c", "import libcst"]])
            results["tl_version"] = measure("tl_version", "trainlint --version (CLI start-up)", 0, 0, sr,
                                            lambda i: [TRAINLINT + ["--version"]])
            if os.path.isfile(example):
                results["single"] = measure(
                    "single", "trainlint --no-cache examples/train.py", 1, count_lines(example), sr,
                    lambda i: [TRAINLINT + ["--no-cache", example]], ok_rc=(0, 1), cwd=REPO)

        # 1. cold
        if "cold" not in skip:
            results["tl_cold"] = measure("tl_cold", "trainlint cold (--no-cache)", N, L, runs,
                                         lambda i: [TRAINLINT + ["--no-cache", "-q", "--exit-zero", corpus]])

        # 2. warm
        if "warm" not in skip:
            cache = os.path.join(work, "cache")
            warm_cmd = TRAINLINT + ["--cache-dir", cache, "-q", "--exit-zero", corpus]
            results["tl_fill"] = measure("tl_fill", "trainlint, filling an empty cache", N, L, 1,
                                         lambda i: [warm_cmd])
            entries = cache_entries(cache)
            results["tl_warm"] = measure("tl_warm", "trainlint warm (nothing changed)", N, L, runs,
                                         lambda i: [warm_cmd], note=f"{entries} cache entries")
            target = sorted(passing or files, key=lambda f: lines[f])[len(passing or files) // 2]
            with open(target, "rb") as fh:
                original = fh.read()
            counts: List[int] = []

            def edit(i: int) -> None:
                counts.append(cache_entries(cache))
                with open(target, "ab") as fh:
                    fh.write(f"\n# trainlint-bench edit {i} {time.time()}\n".encode())

            m = measure("tl_warm_edit", "trainlint warm, one file edited", N, L, runs, lambda i: [warm_cmd],
                        before=edit)
            counts.append(cache_entries(cache))
            relinted = [b - a_ for a_, b in zip(counts, counts[1:])]
            m.note = (f"edited {os.path.relpath(target, corpus)} ({lines[target]} lines) before each run; new "
                      f"cache entries per run: {relinted} ({'OK: only that file re-linted' if relinted and all(x == 1 for x in relinted) else 'UNEXPECTED'})")
            results["tl_warm_edit"] = m
            with open(target, "wb") as fh:
                fh.write(original)

        # 3. parse floor
        if "floor" not in skip:
            f1 = parse_floor("floor_1p", "LibCST parse floor, 1 process", files, lines, runs, 1, work)
            results["floor_1p"] = f1
            results["floor_2p"] = parse_floor("floor_2p", "LibCST parse floor, 2 processes", files, lines, runs, 2,
                                              work, note="files split by lines, largest first")
            pf = getattr(f1, "per_file", None)
            if pf:
                allp = sum(pf.values())
                f1.note = f"parse_module alone: {allp:.1f} s CPU; {getattr(f1, 'parse_errors', 0)} files failed to parse"
                if passing is not None:
                    info["notes"].append(
                        f"parse_module time of the {len(passing)} files that pass the prefilter: "
                        f"{sum(pf[f] for f in passing):.1f} s of {allp:.1f} s for all files (1 process)")

        # 4. peers
        peer_paths: Dict[str, str] = {}
        if not a.no_peers:
            versions = []
            for name in [p.strip() for p in a.peers.split(",") if p.strip()]:
                if name not in PEERS:
                    log(f"unknown peer {name!r}, skipped")
                    continue
                path, v = ensure_peer(name, a.venv_root)
                if path:
                    peer_paths[name] = path
                    versions.append(f"{name} {v.split()[-1] if name != 'fixit' else v.split()[-1]}")
                else:
                    results[name] = Measure(name, name, 0, 0, error=f"skipped: {v}")
                    versions.append(f"{name}: {v}")
            info["peers"] = ", ".join(versions)
            if "ruff" in peer_paths:
                results["ruff"] = measure("ruff", "Ruff check --select ALL --no-cache", N, L, runs,
                                          lambda i: [peer_cmd("ruff", peer_paths["ruff"], corpus)])
            slow = [n for n in ("torchfix", "fixit") if n in peer_paths]
            if slow:
                if a.peer_subset and a.peer_subset < N:
                    sub_files = even_sample(files, a.peer_subset)
                    sub_root = os.path.join(work, "subset", os.path.basename(corpus))
                    copy_tree(sub_files, corpus, sub_root)
                    sn, sl = len(sub_files), sum(lines[f] for f in sub_files)
                    info["subset_note"] = (
                        f"TorchFix and Fixit ran on a subset: {sn} files ({sl} lines) taken evenly spaced from the "
                        f"sorted file list; trainlint and Ruff ran on the same subset for the ratios, and "
                        f"'s per 1000 lines' scales each to the corpus size")
                    results["sub_trainlint"] = measure(
                        "sub_trainlint", "trainlint cold (--no-cache), peer subset", sn, sl, runs,
                        lambda i: [TRAINLINT + ["--no-cache", "-q", "--exit-zero", sub_root]])
                    if "ruff" in peer_paths:
                        results["sub_ruff"] = measure(
                            "sub_ruff", "Ruff check --select ALL, peer subset", sn, sl, runs,
                            lambda i: [peer_cmd("ruff", peer_paths["ruff"], sub_root)])
                    target_root, tn, tl = sub_root, sn, sl
                    tag = ", peer subset"
                else:
                    target_root, tn, tl, tag = corpus, N, L, ""
                for name in slow:
                    results[name] = measure(
                        name, ("TorchFix --select ALL" if name == "torchfix" else "Fixit lint") + tag, tn, tl,
                        peer_runs, lambda i, n=name: [peer_cmd(n, peer_paths[n], target_root)], ok_rc=(0, 1))

        # 5. training corpus
        if "training" not in skip:
            if a.training_corpus:
                troot = os.path.abspath(a.training_corpus)
                tfiles = list_py(troot)
                tnote = f"given: {troot}"
            else:
                sys.path.insert(0, HERE)
                from gen_training_corpus import generate

                troot = os.path.join(work, "training")
                tfiles = generate(troot, a.training_count, seed=0)
                tnote = f"{len(tfiles)} generated scripts (seed 0)"
            tlines = {f: count_lines(f) for f in tfiles}
            TN, TL = len(tfiles), sum(tlines.values())
            tpass = prefilter_pass(tfiles)
            if tpass is not None:
                tnote += f"; {len(tpass)}/{TN} pass the prefilter"
            results["train_tl"] = measure("train_tl", "training corpus: trainlint cold", TN, TL, runs,
                                          lambda i: [TRAINLINT + ["--no-cache", "-q", "--exit-zero", troot]],
                                          note=tnote)
            results["train_tl_j1"] = measure("train_tl_j1", "training corpus: trainlint cold -j 1", TN, TL, runs,
                                             lambda i: [TRAINLINT + ["--no-cache", "-j", "1", "-q", "--exit-zero",
                                                                     troot]])
            tf = parse_floor("train_floor", "training corpus: LibCST parse floor, 1 process", tfiles, tlines, runs,
                             1, work)
            if getattr(tf, "per_file", None):
                tf.note = f"parse_module alone: {sum(tf.per_file.values()):.2f} s CPU"  # type: ignore[attr-defined]
            results["train_floor"] = tf

        info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        info["notes"].append(f"total benchmark time {time.time() - t_start:.0f} s")
        info["notes"].append("CPU = user+sys of the process and its reaped children (os.wait4), so it includes "
                             "trainlint's pool workers; CPU/wall above 1 means more than one core was busy")
        info["notes"].append("load = median 1-minute load average at the end of each run: near or above the core "
                             "count, other work shared the machine and wall times are inflated (CPU times less so)")
        info["notes"].append("peak MB, largest process: " + ("GNU time's %M per command" if TIME_BIN else
                             "ru_maxrss from os.wait4 (includes this script's size inherited across fork+exec)"))
        report = render(results, info)
        sys.stdout.write(report)
        if a.json:
            with open(a.json, "w", encoding="utf-8") as fh:
                json.dump({"info": info, "results": {k: {**{kk: vv for kk, vv in asdict(m).items()}}
                                                     for k, m in results.items()}}, fh, indent=2)
    finally:
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
