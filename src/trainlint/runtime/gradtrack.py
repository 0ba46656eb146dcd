"""What happened to the gradients between two optimizer steps, from tensor metadata only (no device reads).

Per optimizer, a few sampled parameters are watched around the tracked steps (`Monitor.tracks`: every
`grad-every` steps and steps 0-3; nothing runs in between): after the step before one, their gradient
tensors' identity and version counter are remembered ("stale": they hold the gradients the step just used).
Clearing replaces or modifies them: `zero_grad()` (set to None, or zeroed in place), `p.grad = None`,
`p.grad.zero_()`. When a backward() starts while they are still the same tensors at the same version,
it accumulates onto the previous step's gradients ("accumulated"). At the next step the tracker also
tells whether the gradients were touched after the last backward() ended: set to None/replaced, or
modified in place (zeroed, clipped, scaled; which of these only the flushed norm can tell). Gradients
that step() itself rewrites in place (an optimizer that zeroes them at the end of its step) are not
stale: a backward() onto them does not repeat the update.
"""

from __future__ import annotations

from functools import partial
from operator import attrgetter, is_, is_not
from typing import Any, Dict, List, Optional, Tuple
from weakref import ref

SAMPLE = 4  # parameters watched per optimizer


_is_none = partial(is_, None)
_grad = attrgetter("grad")
_fast_version = attrgetter("_version")


def _version(g: Any) -> int:
    return g._version if g is not None else -1


def _ref(g: Any) -> Any:
    return ref(g) if g is not None else _none


def _none() -> None:
    return None


def _deref(r: Any) -> Any:
    return r()


def _versions(grads: List[Any]) -> List[int]:
    try:
        return list(map(_fast_version, grads))  # every sampled parameter has a gradient: the usual case
    except AttributeError:
        return list(map(_version, grads))


class _Track:
    """Runs at every backward() and step(): kept to a few list operations over the sampled parameters."""

    __slots__ = ("sample", "grads", "versions", "stale", "dirty", "in_step", "live")

    def __init__(self) -> None:
        self.sample: List[Any] = []
        # weak references to the sampled parameters' gradient tensors when last taken ([]: none): a
        # gradient that `zero_grad()` released is not kept alive by the tracker (a dead one never matches)
        self.grads: List[Any] = []
        self.versions: List[int] = []  # their version counters then
        self.stale = False  # grads unchanged since the last step
        self.dirty = False  # a backward accumulated onto the last step's gradients
        self.in_step: Any = None  # the versions when the step in progress began (None: not known)
        self.live = False  # tracked now (from the step before a look to the look)

    def take(self) -> None:
        grads = list(map(_grad, self.sample))
        # nothing to watch when none of the sampled parameters has a gradient
        if all(map(_is_none, grads)):
            self.grads, self.versions = [], []
        else:
            self.grads, self.versions = list(map(_ref, grads)), _versions(grads)

    def same(self, grads: List[Any]) -> bool:
        """Are `grads` the tensors last taken (a released one never is)?"""
        return not any(map(is_not, grads, map(_deref, self.grads)))

    def changed(self) -> bool:
        grads = list(map(_grad, self.sample))
        return not self.same(grads) or _versions(grads) != self.versions


def _sample(opt) -> List[Any]:
    with_grad = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if len(with_grad) <= SAMPLE:
        return with_grad
    n = len(with_grad)
    return [with_grad[round(i * (n - 1) / (SAMPLE - 1))] for i in range(SAMPLE)]


class GradTracker:
    """Per optimizer, around the tracked steps (`Monitor.tracks`: every `grad-every` steps and steps
    0-3): from the step before one (what its own step() did to the gradients, the snapshot after it) to
    the tracked step. In between nothing runs: `active` counts the optimizers being tracked."""

    def __init__(self) -> None:
        self.tracks: Dict[Any, _Track] = {}  # OptState -> track
        self.active = 0

    def backward_start(self) -> None:
        for t in self.tracks.values():
            if not t.live or not t.grads:
                continue
            if t.changed():
                t.stale = False  # cleared (or otherwise rewritten) since we last looked
                t.dirty = False
            elif t.stale:
                t.dirty = True

    def backward_end(self) -> None:
        for st, t in self.tracks.items():
            if not t.live:
                continue
            if not t.sample:
                # no gradient at the last step (cleared after the backward?): look again now
                o = st.opt
                t.sample = _sample(o) if o is not None else []
            if t.sample:
                t.take()
                t.stale = False

    def _track(self, st) -> _Track:
        t = self.tracks.get(st)
        if t is None:
            t = self.tracks[st] = _Track()
        if not t.sample:
            o = st.opt
            t.sample = _sample(o) if o is not None else []
        return t

    def before_step(self, st) -> None:
        """The step `st` is about to take precedes a look: remember its gradients' versions, to tell
        afterwards whether step() itself rewrote them."""
        t = self._track(st)
        t.in_step = _versions(list(map(_grad, t.sample))) if t.sample else None

    def at_step(self, st) -> Tuple[bool, Optional[str]]:
        """(accumulated, after_backward) for the step `st` is about to take (a look):
        accumulated: a backward() added onto the gradients of this optimizer's previous step;
        after_backward: "" untouched since the last backward() ended, "replaced" (set to None or a new
        tensor), "modified" (changed in place); None when nothing was taken to compare with (the
        optimizer's first step, or no backward() gave the sampled parameters a gradient yet)."""
        t = self._track(st)
        if not t.live or not t.grads:
            return False, None
        grads = list(map(_grad, t.sample))
        if not t.same(grads):
            return t.dirty, "replaced"
        return t.dirty, ("modified" if _versions(grads) != t.versions else "")

    def post_step(self, st, next_look: bool) -> None:
        """After a step of `st`: when its next step is a look, take the gradients the step used (stale
        from now on); otherwise stop tracking until the step before the next look."""
        t = self.tracks.get(st)
        if not next_look:
            if t is not None and t.live:
                t.live = False
                t.grads, t.versions, t.in_step = [], [], None
                self.active -= 1
            return
        t = self._track(st)
        if all(map(_is_none, map(_grad, t.sample))):
            o = st.opt
            t.sample = _sample(o) if o is not None else []
        began, t.in_step = t.in_step, None
        t.take()
        # the gradients the step used are stale, unless step() itself rewrote them in place (an optimizer
        # that zeroes its gradients at the end of its step: the loop then needs no zero_grad())
        t.stale = not (began is not None and t.grads and t.versions != began)
        t.dirty = False
        if not t.live:
            t.live = True
            self.active += 1

    def sample_of(self, st) -> List[Any]:
        t = self.tracks.get(st)
        return list(t.sample) if t is not None else []
