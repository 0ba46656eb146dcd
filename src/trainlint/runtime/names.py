"""Names for what the findings talk about: modules and parameters by their qualified names in the model,
models and optimizers by the user's variable names where they can be found.

Models and parameters are named once the model is known (after the first optimizer steps), with weak
references, so that names survive the model going out of scope before the report.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

_FRAMES = 12  # frames searched outward for a variable naming an object


def variable_name(obj: Any, skip: Callable[[str], bool], depth: int = 1) -> Optional[str]:
    """The name the user's code gives `obj`: a local or global variable (`optimizerG`), or an attribute
    of `self` (`self.opt_d`), in the nearest frames outside trainlint and torch. Called once per object."""
    try:
        f = sys._getframe(depth + 1)
    except ValueError:
        return None
    n = 0
    while f is not None and n < _FRAMES:
        if not skip(f.f_code.co_filename):
            n += 1
            try:
                local = f.f_locals
            except Exception:  # pragma: no cover - exotic frames
                local = {}
            for k, v in list(local.items()):
                if v is obj and not k.startswith("_") and k != "self":
                    return k
            me = local.get("self")
            if me is not None and me is not obj:
                try:
                    attrs = vars(me)
                except TypeError:
                    attrs = {}
                # torch modules keep submodules in _modules
                items = list(attrs.items()) + list((attrs.get("_modules") or {}).items())
                for k, v in items:
                    if v is obj and not k.startswith("_"):
                        return f"self.{k}"
            for k, v in list(f.f_globals.items()):
                if v is obj and not k.startswith("_"):
                    return k
        f = f.f_back
    return None


class Names:
    def __init__(self, models: Iterable[Any] = (), skip: Callable[[str], bool] = lambda f: False):
        self.models = list(models)
        self.skip = skip  # frames of trainlint/torch/runpy: no user variables there
        self._root_names: Dict[int, Tuple[Any, str]] = {}
        self.modules_seen: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._names: Dict[int, Tuple[Any, str]] = {}  # id(module) -> (weakref, qualified name)
        self._pnames: Dict[int, Tuple[Any, str]] = {}  # id(parameter) -> (weakref, qualified name)

    def variable(self, obj: Any) -> Optional[str]:
        """The user's variable name for an optimizer or model, where one can be found."""
        return variable_name(obj, self.skip, 1)

    def saw_module(self, module: Any) -> None:
        self.modules_seen.add(module)

    def _roots(self) -> List[Any]:
        mods = list(self.models) + [m for m in list(self.modules_seen) if all(m is not x for x in self.models)]
        inner = set()
        for m in mods:
            for c in m.modules():
                if c is not m:
                    inner.add(id(c))
        return [m for m in mods if id(m) not in inner]

    def _root_name(self, root: Any, taken: Dict[str, int]) -> str:
        known = self._lookup(self._root_names, root)
        if known is not None:
            return known
        name = variable_name(root, self.skip, 0) or type(root).__name__
        if name in taken:  # two models of one class, no variable found: number them
            taken[name] += 1
            name = f"{name}#{taken[name]}"
        else:
            taken[name] = 1
        self._root_names[id(root)] = (weakref.ref(root), name)
        return name

    def build(self) -> None:
        """Qualified names of the modules and parameters of the models seen so far; with several models,
        prefixed by the model's variable name (`netG.0.weight`), else by its class (numbered when two
        share one)."""
        roots = self._roots()
        many = len(roots) > 1
        taken: Dict[str, int] = {}
        for _, name in self._root_names.values():
            taken[name.split("#")[0]] = taken.get(name.split("#")[0], 0) + 1
        for root in roots:
            prefix = self._root_name(root, taken) + "." if many else ""
            for name, m in root.named_modules():
                self._names.setdefault(id(m), (weakref.ref(m), (prefix + name) if name else (prefix[:-1] or type(root).__name__)))
            for name, p in root.named_parameters():
                self._pnames.setdefault(id(p), (weakref.ref(p), prefix + name))

    @staticmethod
    def _lookup(table: Dict[int, Tuple[Any, str]], obj: Any) -> Optional[str]:
        e = table.get(id(obj))
        if e is None:
            return None
        if e[0]() is not obj:  # an id reused by a new object
            del table[id(obj)]
            return None
        return e[1]

    def module(self, module) -> str:
        name = self._lookup(self._names, module)
        if name is None:
            self.build()
            name = self._lookup(self._names, module)
        return name or type(module).__name__

    def param(self, p) -> str:
        name = self._lookup(self._pnames, p)
        if name is None:
            self.build()
            name = self._lookup(self._pnames, p)
        return name or f"<parameter of shape {tuple(p.shape)}>"
