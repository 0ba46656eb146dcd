"""TL114 replicas-diverged: in a multi-process torch.distributed run (`torchrun`), parameters that were
identical on every rank (a DDP model, or one built from the same seed) later differ between ranks: each
rank now trains its own model.

Every `replica-every` steps of the primary optimizer (at the step's start, before the update; the first
at step 0), each rank computes two checksums per parameter of that optimizer (its L1 and L2 norms in
float64, one fused kernel each, read to the host once) and publishes them through the rendezvous store
(`ranks.py`: no collective, nothing can block). Rank 0 compares them with its own. A parameter counts as
replicated when it matched (relative difference <= `replica-tolerance`) at the first comparison with a
rank; it is reported when a later comparison finds it different. Parameters that already differ at the
first comparison (sharded or deliberately different per rank) and ranks whose parameter list differs in
shapes are never compared. Only plain tensors are read: distributed tensors (DTensor, FSDP2) are skipped,
since reading them would communicate.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
from typing import Any, Dict, List, Optional, Set, Tuple

import torch

from trainlint.runtime.checks.base import Check, fmt, names_text, when
from trainlint.runtime.sites import UNKNOWN
from trainlint.runtime.tensors import grouped

_PENDING_MAX = 64  # check steps rank 0 keeps waiting for (older ones are dropped)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _norms(tensors: List[torch.Tensor], order: float) -> List[torch.Tensor]:
    try:
        return list(torch._foreach_norm(tensors, order, dtype=torch.float64))
    except (TypeError, RuntimeError, AttributeError):  # older torch, or a dtype without foreach support
        return [torch.linalg.vector_norm(t, order, dtype=torch.float64) for t in tensors]


class ReplicasDiverged(Check):
    code = "TL114"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.every = int(settings["replica-every"])
        self.tol = float(settings["replica-tolerance"])
        self.pending: List[int] = []  # rank 0: check steps not compared yet
        self.own: Dict[int, Tuple[str, List[float], Optional[int]]] = {}  # rank 0: step -> (sig, sums, epoch)
        self.params: List[Any] = []  # weak references, in checksum order (for names)
        self.replicated: Dict[int, List[bool]] = {}  # other rank -> parameters that matched at first
        self.first_step: Dict[int, int] = {}
        self.last_equal: Dict[int, int] = {}  # other rank -> last step at which all replicated ones matched
        self.skipped: Set[int] = set()  # ranks whose parameter shapes differ from rank 0's
        self.compared = 0
        self.found: Optional[Dict[str, Any]] = None
        self.diverged_ranks: Set[int] = set()
        self.worst = (0.0, -1)  # (largest relative difference seen, its step)
        self.site = UNKNOWN
        self.title = ""

    # ------------------------------------------------------------------ each rank: publish
    def on_pre_step(self, st) -> None:
        if not st.primary or self.ctx.step % self.every:
            return
        ranks = self.ctx.ranks
        if not ranks.probe():
            return
        opt = st.opt
        if opt is None:
            return
        params = [p for g in opt.param_groups for p in g["params"]
                  if type(p) in _PLAIN and p.layout == torch.strided and p.is_floating_point()]
        if not params:
            return
        with torch.no_grad():
            ordered: List[Any] = []
            parts: List[torch.Tensor] = []
            for ps, ts in grouped(params, [p.detach() for p in params]):
                ordered.extend(ps)
                # [l1, l2] of each parameter, side by side
                parts.append(torch.stack([torch.stack(_norms(ts, 1)), torch.stack(_norms(ts, 2))], 1).reshape(-1).cpu())
            sums = (torch.cat(parts) if len(parts) > 1 else parts[0]).tolist()
        sig = hashlib.sha1(repr([(tuple(p.shape), str(p.dtype)) for p in ordered]).encode()).hexdigest()[:16]
        step = self.ctx.step
        if ranks.rank == 0:
            self.params = [weakref.ref(p) for p in ordered]
            self.site = st.site
            self.title = st.title
            self.own[step] = (sig, sums, self.ctx.epoch())
            self.pending.append(step)
            if len(self.pending) > _PENDING_MAX:
                self.own.pop(self.pending.pop(0), None)
            self._compare(final=False)
        else:
            ranks.put(f"sums/{step}/{ranks.rank}", json.dumps({"sig": sig, "sums": sums}).encode())

    # ------------------------------------------------------------------ rank 0: compare
    def _compare(self, final: bool) -> None:
        ranks = self.ctx.ranks
        others = [r for r in range(ranks.world) if r != ranks.rank]
        for step in list(self.pending):
            got = ranks.take([f"sums/{step}/{r}" for r in others])
            if got is None:
                if final:
                    continue
                break  # later steps are not complete either
            self.pending.remove(step)
            sig, mine, epoch = self.own.pop(step)
            for r, raw in zip(others, got):
                try:
                    theirs = json.loads(raw.decode())
                except ValueError:  # pragma: no cover - garbled
                    continue
                if theirs.get("sig") != sig or len(theirs.get("sums", ())) != len(mine):
                    self.skipped.add(r)
                if r in self.skipped:
                    continue
                self._compare_rank(r, step, epoch, mine, theirs["sums"])

    def _compare_rank(self, r: int, step: int, epoch: Optional[int], mine: List[float],
                      theirs: List[float]) -> None:
        tol = self.tol
        diffs = []
        for i in range(0, len(mine), 2):
            d = 0.0
            for a, b in ((mine[i], theirs[i]), (mine[i + 1], theirs[i + 1])):
                if a == b:
                    continue
                if not (math.isfinite(a) and math.isfinite(b)):
                    d = math.inf
                    break
                d = max(d, abs(a - b) / max(abs(a), abs(b), 1e-30))
            diffs.append(d)
        self.compared += 1
        rep = self.replicated.get(r)
        if rep is None:
            self.replicated[r] = [d <= tol for d in diffs]
            self.first_step[r] = step
            self.last_equal[r] = step
            return
        bad = [i for i, (ok, d) in enumerate(zip(rep, diffs)) if ok and d > tol]
        if not bad:
            self.last_equal[r] = step
            return
        worst = max(diffs[i] for i in bad)
        if worst > self.worst[0]:
            self.worst = (worst, step)
        self.diverged_ranks.add(r)
        if self.found is None:
            names = []
            for i in bad:
                p = self.params[i]() if i < len(self.params) else None
                names.append(self.ctx.param_name(p) if p is not None else f"parameter #{i}")
            self.found = {"step": step, "epoch": epoch, "rank": r, "names": names, "max": worst,
                          "last_equal": self.last_equal[r], "replicated": sum(rep)}

    def diagnostics(self):
        ranks = self.ctx.ranks
        if ranks.rank == 0 and self.ctx.closed and self.pending:
            self._compare(final=True)
        f = self.found
        if f is None:
            return []
        others = sorted(self.diverged_ranks)
        who = names_text([f"rank {r}" for r in others]).replace("`", "")
        msg = (f"parameters that were identical on every rank differ between rank 0 and {who} by "
               f"{when(f['step'], f['epoch'])}: {names_text(f['names'])} (of {f['replicated']} replicated; "
               f"relative difference up to {fmt(f['max'])}, {fmt(self.worst[0])} by step {self.worst[1]}; "
               f"identical at step {f['last_equal']}): each rank now trains its own model (gradients not "
               f"synchronised: no DDP wrapper, or `no_sync()` left on; an update that depends on the rank; "
               f"a different learning rate or precision on one rank)")
        evidence = {"ranks": [0] + others, "first_rank": f["rank"], "parameters": f["names"][:10],
                    "diverged_parameters": len(f["names"]), "replicated_parameters": f["replicated"],
                    "relative_difference": f["max"], "max_relative_difference": self.worst[0],
                    "last_equal_step": f["last_equal"], "world_size": ranks.world,
                    "check_every": self.every, "tolerance": self.tol, "optimizer": self.title}
        return [self.diagnostic(msg, self.site, f["step"], f["epoch"], evidence)]
