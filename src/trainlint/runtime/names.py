"""Names for what the findings talk about: modules and parameters by their qualified names in the model,
models and optimizers by the user's variable names where they can be found.

Models and parameters are named once the model is known (after the first optimizer steps), with weak
references, so that names survive the model going out of scope before the report.
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple


class Names:
    def __init__(self, models: Iterable[Any] = ()):
        self.models = list(models)
        self.modules_seen: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._names: Dict[int, Tuple[Any, str]] = {}  # id(module) -> (weakref, qualified name)
        self._pnames: Dict[int, Tuple[Any, str]] = {}  # id(parameter) -> (weakref, qualified name)

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

    def build(self) -> None:
        """Qualified names of the modules and parameters of the models seen so far."""
        roots = self._roots()
        many = len(roots) > 1
        for root in roots:
            prefix = type(root).__name__ + "." if many else ""
            for name, m in root.named_modules():
                self._names.setdefault(id(m), (weakref.ref(m), prefix + name if name else type(root).__name__))
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
