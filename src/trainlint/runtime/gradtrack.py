"""What happened to the gradients between two optimizer steps, from tensor metadata only (no device reads).

Per optimizer, a few sampled parameters are watched: after each step, their gradient tensors'
identity and version counter are remembered ("stale": they hold the gradients the step just used).
Clearing replaces or modifies them: `zero_grad()` (set to None, or zeroed in place), `p.grad = None`,
`p.grad.zero_()`. When a backward() starts while they are still the same tensors at the same version,
it accumulates onto the previous step's gradients ("accumulated"). At the next step the tracker also
tells whether the gradients were touched after the last backward() ended: set to None/replaced, or
modified in place (zeroed, clipped, scaled; which of these only the flushed norm can tell).
"""

from __future__ import annotations

from functools import partial
from operator import attrgetter, is_, is_not
from typing import Any, Dict, List, Tuple

SAMPLE = 4  # parameters watched per optimizer


_is_none = partial(is_, None)
_grad = attrgetter("grad")
_fast_version = attrgetter("_version")


def _version(g: Any) -> int:
    return g._version if g is not None else -1


def _versions(grads: List[Any]) -> List[int]:
    try:
        return list(map(_fast_version, grads))  # every sampled parameter has a gradient: the usual case
    except AttributeError:
        return list(map(_version, grads))


class _Track:
    """Runs at every backward() and step(): kept to a few list operations over the sampled parameters."""

    __slots__ = ("sample", "grads", "versions", "stale", "dirty")

    def __init__(self) -> None:
        self.sample: List[Any] = []
        self.grads: List[Any] = []  # the sampled parameters' gradient tensors when last taken ([]: none)
        self.versions: List[int] = []  # their version counters then
        self.stale = False  # grads unchanged since the last step
        self.dirty = False  # a backward accumulated onto the last step's gradients

    @property
    def snap(self) -> bool:
        return bool(self.grads)

    def take(self) -> None:
        grads = list(map(_grad, self.sample))
        # nothing to watch when none of the sampled parameters has a gradient
        if all(map(_is_none, grads)):
            self.grads, self.versions = [], []
        else:
            self.grads, self.versions = grads, _versions(grads)

    def changed(self, identity_only: bool = False) -> bool:
        grads = list(map(_grad, self.sample))
        if any(map(is_not, grads, self.grads)):
            return True
        return not identity_only and _versions(grads) != self.versions


def _sample(opt) -> List[Any]:
    with_grad = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if len(with_grad) <= SAMPLE:
        return with_grad
    n = len(with_grad)
    return [with_grad[round(i * (n - 1) / (SAMPLE - 1))] for i in range(SAMPLE)]


class GradTracker:
    def __init__(self) -> None:
        self.tracks: Dict[Any, _Track] = {}  # OptState -> track

    def backward_start(self) -> None:
        for t in self.tracks.values():
            if not t.grads:
                continue
            if t.changed():
                t.stale = False  # cleared (or otherwise rewritten) since we last looked
                t.dirty = False
            elif t.stale:
                t.dirty = True

    def backward_end(self) -> None:
        for st, t in self.tracks.items():
            if not t.sample:
                # no gradient at the last step (cleared after the backward?): look again now
                o = st.opt
                t.sample = _sample(o) if o is not None else []
            if t.sample:
                t.take()
                t.stale = False

    def at_step(self, st) -> Tuple[bool, str]:
        """(accumulated, after_backward) for the step `st` is about to take:
        accumulated: a backward() added onto the gradients of this optimizer's previous step;
        after_backward: "" untouched since the last backward() ended, "replaced" (set to None or a new
        tensor), "modified" (changed in place)."""
        t = self.tracks.get(st)
        if t is None or not t.grads:
            return False, ""
        grads = list(map(_grad, t.sample))
        if any(map(is_not, grads, t.grads)):
            return t.dirty, "replaced"
        return t.dirty, ("modified" if _versions(grads) != t.versions else "")

    def post_step(self, st) -> None:
        t = self.tracks.get(st)
        if t is None:
            t = self.tracks[st] = _Track()
        sample = t.sample
        if not sample or all(map(_is_none, map(_grad, sample))):
            o = st.opt
            t.sample = _sample(o) if o is not None else []
        t.take()
        t.stale = True
        t.dirty = False

    def sample_of(self, st) -> List[Any]:
        t = self.tracks.get(st)
        return list(t.sample) if t is not None else []
