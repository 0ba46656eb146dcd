"""Overhead of the runtime checks (`trainlint run` / `watch()`) on a real training loop.

Runs the same seeded training several times in one process, interleaving the variants, and prints the
median wall time of each and its ratio to the plain run:

  plain           the loop as written
  watch           under `trainlint.runtime.watch()` (what `trainlint run` attaches), the default settings and
                  default checks (TL115, off by default, is not among them)
  watch-every1    every=1: device values read at every step (a synchronisation per step on a GPU)
  anomaly         under `torch.autograd.set_detect_anomaly(True)`, the usual NaN hunting tool

CPU: a tiny MLP (~0.3 ms/step), an MLP (~1 ms/step) and a small CNN on synthetic, learnable data fed
through a DataLoader. Wall time and process CPU time are both reported: on a shared machine the CPU
time is the steadier of the two. On the CPU each step is timed too, and the "per-step min" columns sum,
over the steps, each step's shortest time among the runs: an interruption, another process or an
unlucky cache hits a step in some runs, rarely the same step in all, so this estimate keeps the cost of
the work a watched step adds (its one-time warm-up included) and drops most of the machine's noise
(on a shared 2-core machine, runs of the same code agreed within 1 point where the medians of whole runs
differed by up to 5).
CUDA (when available, or
--device cuda): a small ResNet-like CNN on synthetic on-device data; timings end with a
`torch.cuda.synchronize()`. With --check-sync on CUDA, the watched run is repeated under
`torch.cuda.set_sync_debug_mode("warn")` and the synchronisations are counted (expected: one per flush).

    python benchmarks/runtime_overhead.py                 # CPU models (+ CUDA if available)
    python benchmarks/runtime_overhead.py --steps 300 --repeats 7 --threads 1

On a shared machine the ratio drifts by points from one run to the next. To compare two versions of
trainlint, alternate them: `--baseline DIR --pairs N` runs each CPU model N times with the trainlint
found under DIR (the `src` folder of another checkout, e.g. `git worktree add /tmp/old <commit>`, then
`--baseline /tmp/old/src`) and N times with this checkout's, in turns, and prints every `watch` ratio
(CPU time and per-step minimum) and the medians:

    python benchmarks/runtime_overhead.py --models mlp --steps 300 --repeats 7 --baseline /tmp/old/src --pairs 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainlint.runtime import watch
from trainlint.runtime.settings import DEFAULTS


def tiny():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def mlp():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


def small_resnet():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1), Block(64, 128, 2), Block(128, 128, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )


def make_job(kind: str, steps: int, device: str):
    """A closure running one seeded training of `steps` steps; returns its last loss."""
    g = torch.Generator().manual_seed(0)
    if kind in ("mlp", "tiny"):
        batch = 64 if kind == "mlp" else 16
        x = torch.randn(steps * batch, 64, generator=g)
        # learnable labels (a fixed linear map of the inputs): random labels sit at chance level, which
        # TL110 rightly reports
        y = (x @ torch.randn(64, 10, generator=g)).argmax(1)
        build = mlp if kind == "mlp" else tiny
    elif kind == "cnn":
        batch = 32
        x = torch.randn(steps * batch, 3, 32, 32, generator=g)
        y = (x.mean((2, 3)) @ torch.randn(3, 10, generator=g)).argmax(1)  # from the channel means
        build = small_cnn
    else:  # resnet on the device, no DataLoader
        batch = 128
        x = torch.randn(16, batch, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (16, batch), generator=g).to(device)
        build = small_resnet

    def job(ctx=None, stamps=None):
        """One training under `ctx` (a context manager: the watch, or nothing). Returns the wall and
        process CPU time from just before `ctx` is entered to just after it is left (the watch attaches
        and closes inside: its last flush and its checks' verdicts count; building the model does not).
        `stamps`: a list to append the time to at the start, after each step and at the end."""
        torch.manual_seed(0)
        model = build().to(device)
        # Adam at its usual learning rate: every model learns (SGD with momentum 0.9 made the CNN's loss jump
        # to 16 and half of a ReLU layer die, which TL113 rightly reported)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if kind == "resnet":
            batches = ((x[i % 16], y[i % 16]) for i in range(steps))
        else:
            batches = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)
        t0, c0 = time.perf_counter(), time.process_time()
        if stamps is not None:
            stamps.append(t0)
        with ctx if ctx is not None else contextlib.nullcontext():
            for xb, yb in batches:
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                if stamps is not None:
                    stamps.append(time.perf_counter())
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        if stamps is not None:
            stamps.append(time.perf_counter())
        return time.perf_counter() - t0, time.process_time() - c0

    return job


VARIANTS = {
    "plain": lambda: contextlib.nullcontext(),
    "watch": lambda: watch(config=False),  # the default settings
    "watch-every1": lambda: watch(config=False, every=1),
    "anomaly": lambda: torch.autograd.set_detect_anomaly(True),
}


def bench(kind: str, steps: int, repeats: int, device: str):
    job = make_job(kind, steps, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode warns that it is slow
        for name in VARIANTS:  # warm-up (lazy init, allocator, kernels)
            job(VARIANTS[name]())
        times = {name: [] for name in VARIANTS}
        cpu = {name: [] for name in VARIANTS}
        stepped = {name: [] for name in VARIANTS}  # per run: the duration of each step
        per_step = device == "cpu"
        for _ in range(repeats):  # interleaved, so that drifts of the machine hit every variant
            for name, make in VARIANTS.items():
                stamps = [] if per_step else None
                w = make()
                wall, cpu_s = job(w, stamps)  # (attaching counts in the first step, closing as one more)
                times[name].append(wall)
                cpu[name].append(cpu_s)
                if per_step:
                    stepped[name].append([b - a for a, b in zip(stamps, stamps[1:])])
                if name == "watch" and w.findings:
                    print(f"  (unexpected findings: {[d.code for d in w.findings]})", file=sys.stderr)
    med = {name: statistics.median(v) for name, v in times.items()}
    cmed = {name: statistics.median(v) for name, v in cpu.items()}
    # the per-step estimate: each step's shortest time over the runs, summed. An interruption, another
    # process or an unlucky cache hits a step in some runs, rarely the same step in all of them, so this
    # keeps the cost of the work itself (what a step of the watched loop does more) and drops most of
    # the machine's noise; the whole-run medians keep it
    floor = {name: sum(map(min, zip(*runs))) for name, runs in stepped.items()} if per_step else {}
    print(f"\n{kind} on {device}: {steps} steps, median of {repeats} runs")
    print(f"  {'variant':<14}{'wall s':>9}{'ms/step':>9}{'vs plain':>10}   {'cpu s':>8}{'vs plain':>10}"
          + (f"   {'per-step min ms':>15}{'vs plain':>10}" if per_step else ""))
    for name in VARIANTS:
        extra = (f"   {1000 * floor[name] / steps:>15.3f}{floor[name] / floor['plain']:>9.3f}x" if per_step else "")
        print(f"  {name:<14}{med[name]:>9.3f}{1000 * med[name] / steps:>9.3f}{med[name] / med['plain']:>9.3f}x"
              f"   {cmed[name]:>8.3f}{cmed[name] / cmed['plain']:>9.3f}x" + extra)
    return med


def count_syncs(steps: int, every: int = DEFAULTS["every"]) -> None:
    """CUDA only: count host-device synchronisations of a watched run (excluding the plain ones)."""
    job = make_job("resnet", steps, "cuda")

    def syncs(ctx) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                job(ctx)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(c.message) for c in caught)

    plain = syncs(contextlib.nullcontext())
    watched = syncs(watch(config=False, every=every))
    print(f"\nsynchronisations over {steps} steps: plain {plain}, watched (every={every}) {watched} "
          f"(expected about {steps // every + 1} more: one per flush)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier timings)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--models", default="tiny,mlp,cnn", help="CPU models (tiny, mlp, cnn)")
    ap.add_argument("--check-sync", action="store_true", help="CUDA: count synchronisations")
    ap.add_argument("--in-process", action="store_true", help="run every CPU model in this process")
    ap.add_argument("--baseline", metavar="DIR", help="a trainlint `src` folder to alternate with this one")
    ap.add_argument("--pairs", type=int, default=4, help="with --baseline: runs of each version (default 4)")
    ap.add_argument("--quiet-header", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not a.quiet_header:
        print(f"torch {torch.__version__}, {a.threads} CPU thread(s), python {sys.version.split()[0]}, "
              f"load average {_load()} at the start")
    if a.baseline:
        if not os.path.isfile(os.path.join(a.baseline, "trainlint", "__init__.py")):
            ap.error(f"--baseline {a.baseline}: no trainlint package there (give the `src` folder of a checkout)")
        for kind in [k.strip() for k in a.models.split(",") if k.strip()]:
            compare(kind, a)
        return 0
    if a.device in ("auto", "cpu"):
        kinds = [k.strip() for k in a.models.split(",") if k.strip()]
        if len(kinds) == 1 or a.in_process:
            for kind in kinds:
                bench(kind, a.steps, a.repeats, "cpu")
        else:
            # one process per model: in one process the models run earlier change the allocator's state
            # and the later model's timings with it (the CNN's plain run was 35% slower after the MLPs)
            for kind in kinds:
                sys.stdout.flush()
                subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--repeats", str(a.repeats),
                                "--threads", str(a.threads), "--device", "cpu", "--models", kind,
                                "--quiet-header"], check=True)
    if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()):
        print(f"\nGPU: {torch.cuda.get_device_name(0)}")
        bench("resnet", a.steps, a.repeats, "cuda")
        if a.check_sync:
            count_syncs(a.steps)
    if not a.quiet_header:
        print(f"\nload average {_load()} at the end ({os.cpu_count()} CPUs)")
    return 0


def compare(kind: str, a) -> None:
    """`--baseline`: the `watch` ratios of `kind` (median CPU time, per-step minimum), with the baseline's
    trainlint and with this checkout's, in turns (each run in its own process, its trainlint first on
    PYTHONPATH)."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    ratios = {"baseline": [], "this": []}
    floors = {"baseline": [], "this": []}
    print(f"\n{kind} on cpu: {a.steps} steps, {a.repeats} runs each; watch() / plain: median CPU time, and the "
          f"per-step minimum, {a.pairs} pairs")
    for i in range(a.pairs):
        for name, src in (("baseline", os.path.abspath(a.baseline)), ("this", here)):
            path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--repeats", str(a.repeats),
                                  "--threads", str(a.threads), "--device", "cpu", "--models", kind,
                                  "--quiet-header"], env=env, check=True, capture_output=True, text=True).stdout
            cols = next(line.split() for line in out.splitlines() if line.split()[:1] == ["watch"])
            ratio, floor = float(cols[5].rstrip("x")), float(cols[7].rstrip("x"))  # (see `bench`'s columns)
            ratios[name].append(ratio)
            floors[name].append(floor)
            print(f"  pair {i + 1}  {name:<9}CPU time {100 * (ratio - 1):+6.1f}%   per-step min "
                  f"{100 * (floor - 1):+6.1f}%", flush=True)
    for name in ratios:
        for label, values in (("CPU time", ratios[name]), ("per-step min", floors[name])):
            print(f"  median {name:<9}{label:<13}{100 * (statistics.median(values) - 1):+6.1f}%  "
                  f"(runs: {', '.join(f'{100 * (v - 1):+.1f}%' for v in values)})")


def _load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):  # pragma: no cover - not on this platform
        return "?"


if __name__ == "__main__":
    sys.exit(main())
