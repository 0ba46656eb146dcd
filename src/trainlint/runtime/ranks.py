"""Multi-process runs (`torchrun`, `torch.distributed`): this process's rank, and a side channel to the
other ranks that can never block or reorder the run's own communication.

The side channel is the rendezvous key-value store of the default process group (the store `torchrun`
or `init_process_group` set up), reached through public `torch.distributed` calls. trainlint issues no
collective (no all_reduce, no barrier, no new process group): a rank writes keys under its own names
(`set`, which never waits for the others), and rank 0 reads a key only once `check` says it is there.
So ranks that run different numbers of steps, or a rank that dies, cost nothing but a missing
comparison; the only wait is rank 0's bounded wait for the other ranks' findings at the very end
(`rank-wait` seconds).

Used for two things:
- TL114: each rank publishes a checksum of its replicated parameters every `replica-every` steps and
  rank 0 compares them (`checks/tl114_replicas_diverged.py`);
- the report: at the end every rank sends its findings to rank 0, which prints one report in which
  each finding names its rank (the same finding on several ranks is reported once, naming them all).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

_SESSIONS = [0]  # monitors started in this process: the same count on every rank running the same code


def _store_of_default_group() -> Any:
    import torch.distributed as dist

    # the store the default process group was created with (torch has no public accessor; guarded:
    # without it there is no side channel, and TL114 and the merged report stay off)
    from torch.distributed import distributed_c10d as c10d

    getter = getattr(c10d, "_get_default_store", None)
    if getter is None:  # pragma: no cover - older torch
        return None
    if not dist.is_initialized():
        return None
    return getter()


class Ranks:
    """What trainlint knows of the torch.distributed run it is in; inactive in a single process."""

    def __init__(self) -> None:
        _SESSIONS[0] += 1
        self.session = _SESSIONS[0]
        self.rank: Optional[int] = None
        self.world = 1
        self.store: Any = None
        self.prefix = ""
        self.gave_up = False  # a store operation failed: the side channel is off for the rest of the run
        self.missing: List[int] = []  # ranks whose findings did not reach rank 0 in time
        self._others: Optional[Dict[int, List[Dict[str, Any]]]] = None

    @property
    def active(self) -> bool:
        return self.store is not None and not self.gave_up

    def probe(self) -> bool:
        """Is this one rank of a multi-process torch.distributed run with a store? Looked up until it is
        (the process group may be created after watching began), then remembered: the store stays
        usable after `destroy_process_group()`."""
        if self.store is not None:
            return not self.gave_up
        try:
            import torch.distributed as dist

            if not dist.is_available() or not dist.is_initialized():
                return False
            world = int(dist.get_world_size())
            if world < 2:
                return False
            store = _store_of_default_group()
            if store is None:
                return False
            rank = int(dist.get_rank())
        except Exception:  # pragma: no cover - a broken or exotic backend: no side channel
            return False
        self.rank, self.world, self.store = rank, world, store
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # an elastic restart starts afresh
        self.prefix = f"trainlint/{restart}/{self.session}/"
        return True

    # ------------------------------------------------------------------ key-value side channel
    def put(self, key: str, value: bytes) -> None:
        if not self.active:
            return
        try:
            self.store.set(self.prefix + key, value)
        except Exception:  # the store is gone (its host exited): stop using it
            self.gave_up = True

    def take(self, keys: List[str]) -> Optional[List[bytes]]:
        """The values of `keys` if all are there (never waits), removed from the store; else None."""
        if not self.active:
            return None
        full = [self.prefix + k for k in keys]
        try:
            if not self.store.check(full):
                return None
            values = [self.store.get(k) for k in full]
            for k in full:
                try:
                    self.store.delete_key(k)
                except Exception:  # pragma: no cover - a store without delete: keys stay, harmless
                    pass
            return values
        except Exception:
            self.gave_up = True
            return None

    # ------------------------------------------------------------------ findings
    def send_findings(self, diags: List[Any]) -> None:
        """Another rank than 0: hand this rank's findings to rank 0."""
        self.put(f"findings/{self.rank}", json.dumps([d.to_json() for d in diags]).encode())

    def gather_findings(self, timeout: float) -> Dict[int, List[Dict[str, Any]]]:
        """Rank 0: the other ranks' findings (as JSON objects), waiting at most `timeout` seconds in all
        for ranks that have not finished yet. Ranks that do not answer in time are listed in `missing`."""
        if self._others is not None:
            return self._others
        others: Dict[int, List[Dict[str, Any]]] = {}
        waiting = [r for r in range(self.world) if r != self.rank]
        deadline = time.monotonic() + max(0.0, timeout)
        while waiting and self.active:
            for r in list(waiting):
                got = self.take([f"findings/{r}"])
                if got is not None:
                    try:
                        others[r] = json.loads(got[0].decode())
                    except ValueError:  # pragma: no cover - garbled
                        others[r] = []
                    waiting.remove(r)
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self.missing = waiting if self.active else [r for r in range(self.world) if r != self.rank and r not in others]
        self._others = others
        return others


def tag(diag: Any, ranks: Tuple[int, ...]) -> Any:
    """The finding as the merged report shows it: its message starts with the ranks it was seen on and
    its evidence lists them."""
    who = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(r) for r in ranks)
    diag.message = f"{who}: {diag.message}"
    if diag.runtime is not None:
        ev = dict(diag.runtime.get("evidence") or {})
        ev["ranks"] = list(ranks)
        diag.runtime = dict(diag.runtime, evidence=ev)
    return diag


def merge(own: List[Any], own_rank: int, others: Dict[int, List[Dict[str, Any]]]) -> List[Any]:
    """One list of findings from every rank's: a finding already about several ranks (TL114) is kept as
    it is; the same finding (code, place, step, message) on several ranks is reported once."""
    from trainlint.diagnostics import Diagnostic

    by_rank: List[Tuple[int, Any]] = [(own_rank, d) for d in own]
    for r in sorted(others):
        for data in others[r]:
            try:
                by_rank.append((r, Diagnostic.from_json(data)))
            except (KeyError, TypeError, ValueError):  # pragma: no cover - garbled
                continue
    merged: Dict[Tuple[Any, ...], Tuple[Any, List[int]]] = {}
    out: List[Any] = []
    for r, d in by_rank:
        if d.runtime is not None and "ranks" in (d.runtime.get("evidence") or {}):
            out.append(d)  # already names the ranks it compares
            continue
        key = (d.code, d.filename, d.location.row, (d.runtime or {}).get("step"), d.message)
        if key in merged:
            merged[key][1].append(r)
        else:
            merged[key] = (d, [r])
    for d, rs in merged.values():
        out.append(tag(d, tuple(sorted(set(rs)))))
    out.sort(key=lambda d: ((d.runtime or {}).get("step") or 0, d.code, d.message))
    return out
