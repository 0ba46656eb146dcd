"""Cheap name resolution: what a name or attribute chain means, from the module's imports.

`import torch.optim as optim` makes `optim.Adam` resolve to `torch.optim.Adam`; `from torch.optim
import Adam as A` makes `A` resolve to `torch.optim.Adam`. Names that no import binds resolve to
themselves (builtins, locals), so callers can still match `len` or `self.criterion`.

Relative imports keep their dots: `from .losses import DiceLoss` makes `DiceLoss` resolve to
`.losses.DiceLoss` and `from .. import models` makes `models` resolve to `..models`; the project index
(`analysis/project.py`) turns them into files.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import libcst as cst


def dotted(expr: cst.BaseExpression) -> Optional[str]:
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts: List[str] = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if isinstance(expr, cst.Name):
        parts.append(expr.value)
        return ".".join(reversed(parts))
    return None


def _module_name(node) -> str:
    if node is None:
        return ""
    return dotted(node) or ""


class Imports:
    def __init__(self) -> None:
        self.aliases: Dict[str, str] = {}
        self.star_modules: List[str] = []

    def add(self, node: cst.CSTNode) -> None:
        if isinstance(node, cst.Import):
            for alias in node.names:
                full = dotted(alias.name) or ""
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    self.aliases[alias.asname.name.value] = full
                else:
                    head = full.split(".")[0]
                    self.aliases[head] = head
        elif isinstance(node, cst.ImportFrom):
            mod = _module_name(node.module)
            if node.relative:
                mod = "." * len(node.relative) + mod
            if isinstance(node.names, cst.ImportStar):
                self.star_modules.append(mod)
                return
            for alias in node.names:
                name = dotted(alias.name) or ""
                local = name
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    local = alias.asname.name.value
                if not mod:
                    self.aliases[local] = name
                elif mod.endswith("."):  # `from . import x`, `from .. import x`
                    self.aliases[local] = mod + name
                else:
                    self.aliases[local] = f"{mod}.{name}"

    def qualify(self, expr: cst.BaseExpression) -> Optional[str]:
        """The qualified dotted name of `expr`, or None when it is not a Name/Attribute chain."""
        d = dotted(expr)
        if d is None:
            return None
        return self.qualify_dotted(d)

    def qualify_dotted(self, d: str) -> str:
        head, _, rest = d.partition(".")
        target = self.aliases.get(head)
        if target is None:
            return d
        return f"{target}.{rest}" if rest else target

    def imports_module(self, prefix: str) -> bool:
        return any(v == prefix or v.startswith(prefix + ".") for v in self.aliases.values()) or any(
            m == prefix or m.startswith(prefix + ".") for m in self.star_modules
        )
