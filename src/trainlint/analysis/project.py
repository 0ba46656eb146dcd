"""Project-wide facts: the other modules of the project a linted file belongs to, found through its imports.

Real projects put the model in `models/`, the loss in `losses.py`, the loaders in `data/` and the loop in
`train.py`. A rule in `train.py` that meets `criterion = weighted_ce` (imported from `losses`) or
`model = PSPNet(...)` (from `models.psp_net`) asks this module for the definition behind the name and for
a fact about it ("what does this function return: a batch mean?", "does this model contain a BatchNorm
over one value per channel?").

How a name becomes a definition (nothing is imported or run; files are only read and parsed):
- `Imports.qualify` gives the dotted name the module's imports bind (`losses.weighted_ce`,
  `.models.PSPNet` for a relative import);
- the longest prefix that is a file of the project is the module: for an absolute name it is looked up
  next to the importing file (script-style `sys.path[0]`), at the project root and under `src/`; for a
  relative one, from the importing file's package;
- inside that module the rest is a function, a class (and a method), or a module-level value; a name the
  module only imports (`__init__.py` re-exports, `from x import *`) is followed on, a few hops deep.

The project root is the nearest folder above the file with `pyproject.toml`, `setup.py`, `setup.cfg` or
`.git`, else the file's folder. Other modules are parsed lazily, only when a rule asks about one of their
definitions, with the same `ModuleIndex` the rules use, so a fact is computed by the same code whichever
module it lives in. Facts are memoised per (file, definition, fact); each lint records the files it read
(`begin`/`end`), so cached findings can be invalidated when one of them changes (`cache.py`).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # libcst is imported only when a module is parsed (a warm run never parses)
    import libcst as cst

ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
MAX_PARSED = 48  # parsed modules kept in memory (least recently used go first)...
MAX_PARSED_LINES = 20_000  # ...and their lines (a LibCST tree costs ~15 KB a line: this bounds ~300 MB)
MAX_HOPS = 4  # re-exports followed
MAX_FILE_BYTES = 2_000_000  # larger files are not read for facts

_IN_PROGRESS = object()


def find_root(path: str) -> str:
    """The nearest folder above `path` with a root marker; without one, the outermost package folder
    (`__init__.py`) around the file's folder, else the file's own folder."""
    d = os.path.dirname(os.path.abspath(path))
    here = d
    while True:
        if any(os.path.exists(os.path.join(d, m)) for m in ROOT_MARKERS):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    d = here
    while os.path.dirname(d) != d and os.path.isfile(os.path.join(os.path.dirname(d), "__init__.py")):
        d = os.path.dirname(d)
    return d


class Symbol:
    """A definition in a project module: a FunctionDef, a ClassDef or a module-level value."""

    __slots__ = ("project", "index", "node", "name", "path")

    def __init__(self, project: "Project", index, node: cst.CSTNode, name: str, path: str):
        self.project = project
        self.index = index
        self.node = node
        self.name = name
        self.path = path

    def fact(self, key: str, compute: Callable[[], object]):
        """A memoised fact about this definition (computed on its own module's index)."""
        return self.project.fact(self.path, self.name, key, compute)


class Project:
    _by_root: Dict[str, "Project"] = {}

    def __init__(self, root: str):
        self.root = root
        self.marked = any(os.path.exists(os.path.join(root, m)) for m in ROOT_MARKERS)
        self._indexes: "OrderedDict[str, object]" = OrderedDict()
        self._lines: Dict[str, int] = {}  # lines of each kept index
        self._kept_lines = 0
        self._digests: Dict[str, Optional[str]] = {}
        self._module_paths: Dict[Tuple[str, Tuple[str, ...], int], Optional[str]] = {}
        self._facts: Dict[Tuple[str, str, str], Tuple[object, Dict[str, str]]] = {}
        self._frames: List[Dict[str, str]] = []

    @classmethod
    def forget(cls, path: str, structural: bool = False) -> None:
        """Drop what the projects that read `path` know, when `path` changed (a long-running process
        such as the language server; the CLI never outlives a change). A file created or deleted
        (`structural`) may change where imports resolve: its whole project is dropped."""
        for root, proj in list(cls._by_root.items()):
            if path in proj._digests:
                if proj._digests[path] is None or digest_of(path) != proj._digests[path]:
                    cls._by_root.pop(root, None)
            elif structural and path.startswith(root.rstrip(os.sep) + os.sep):
                cls._by_root.pop(root, None)

    @classmethod
    def for_file(cls, path: str) -> Optional["Project"]:
        if not path or not os.path.isfile(path):
            return None
        root = find_root(path)
        proj = cls._by_root.get(root)
        if proj is None:
            proj = cls._by_root[root] = Project(root)
        return proj

    # -- dependency tracking (for the results cache) ---------------------------------------------
    def begin(self) -> None:
        self._frames = [{}]

    def end(self) -> Dict[str, str]:
        deps = self._frames[0] if self._frames else {}
        self._frames = []
        return deps

    def _used(self, deps: Dict[str, str]) -> None:
        for frame in self._frames:
            frame.update(deps)

    # -- modules ---------------------------------------------------------------------------------
    def module_path(self, importer: str, parts: Tuple[str, ...], level: int) -> Optional[str]:
        key = (os.path.dirname(importer), parts, level)
        if key in self._module_paths:
            return self._module_paths[key]
        found = None
        if level:
            base = os.path.dirname(os.path.abspath(importer))
            for _ in range(level - 1):
                base = os.path.dirname(base)
            bases = [base]
        else:
            # the importing file's folder (a script's sys.path[0]) and a few above it (scripts in
            # `tools/` or `train/x/` run from the repository root), the project root and `src/`
            here = os.path.dirname(os.path.abspath(importer))
            ups = [here]
            for _ in range(3):
                if (self.marked and ups[-1] == self.root) or os.path.dirname(ups[-1]) == ups[-1]:
                    break
                ups.append(os.path.dirname(ups[-1]))
            bases = list(dict.fromkeys([*ups, self.root, os.path.join(self.root, "src")]))
        for base in bases:
            p = os.path.join(base, *parts) if parts else base
            if parts and os.path.isfile(p + ".py"):
                found = p + ".py"
                break
            init = os.path.join(p, "__init__.py")
            if os.path.isfile(init):
                found = init
                break
        self._module_paths[key] = found
        return found

    def index_of(self, path: str):
        """The ModuleIndex of a project file (parsed once, kept while recently used); None if unreadable."""
        if path in self._indexes:
            self._indexes.move_to_end(path)
            idx = self._indexes[path]
        else:
            idx = self._load(path)
            self._indexes[path] = idx
            self._lines[path] = idx.source.count("\n") if idx is not None else 0
            self._kept_lines += self._lines[path]
            while len(self._indexes) > 1 and (len(self._indexes) > MAX_PARSED or self._kept_lines > MAX_PARSED_LINES):
                old, _ = self._indexes.popitem(last=False)
                self._kept_lines -= self._lines.pop(old, 0)
        digest = self._digests.get(path)
        if digest is not None:
            self._used({path: digest})
        return idx

    def _load(self, path: str):
        from trainlint.analysis.index import ModuleIndex
        from trainlint.engine import parse
        from trainlint.source import SourceError, decode

        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError:
            self._digests[path] = None
            return None
        self._digests[path] = hashlib.blake2b(data, digest_size=16).hexdigest()
        if len(data) > MAX_FILE_BYTES:
            return None
        try:
            text = decode(data).text
            module = parse(text)
            return ModuleIndex(module, text, path=path, project=self)
        except (SourceError, RecursionError, UnicodeError, LookupError, ValueError, SyntaxError):
            return None

    # -- names -------------------------------------------------------------------------------------
    def lookup(self, index, qualname: Optional[str], hops: int = 0) -> Optional[Symbol]:
        """The definition a dotted name (as `Imports.qualify` gives it) refers to, in a project module."""
        if not qualname or hops > MAX_HOPS or index is None or not index.path:
            return None
        level = len(qualname) - len(qualname.lstrip("."))
        parts = tuple(p for p in qualname[level:].split(".") if p)
        if not parts or (not level and parts[0] in _NOT_PROJECT):
            return None
        for cut in range(len(parts) - 1, -1, -1):
            if cut == 0 and not level:
                break
            path = self.module_path(index.path, parts[:cut], level)
            if path is None or os.path.abspath(path) == os.path.abspath(index.path):
                continue
            sym = self._in_module(path, parts[cut:], hops)
            if sym is not None:
                return sym
        return None

    def _in_module(self, path: str, rest: Tuple[str, ...], hops: int) -> Optional[Symbol]:
        idx = self.index_of(path)
        if idx is None or not rest:
            return None
        name = rest[0]
        if name in idx.classes and idx.cls_of.get(idx.classes[name]) is None:
            cls = idx.classes[name]
            if len(rest) == 1:
                return Symbol(self, idx, cls, name, path)
            if len(rest) == 2 and (name, rest[1]) in idx.methods:
                return Symbol(self, idx, idx.methods[(name, rest[1])], f"{name}.{rest[1]}", path)
            return None
        fn = idx.functions.get(name)
        if fn is not None and idx.scope.get(fn) is None:
            return Symbol(self, idx, fn, name, path) if len(rest) == 1 else None
        target = idx.imports.aliases.get(name)
        if target is not None:
            return self.lookup(idx, ".".join((target, *rest[1:])), hops + 1)
        vals = idx.assigns.get(None, {}).get(name) if None in idx.assigns else None
        if vals:
            return Symbol(self, idx, vals[-1], name, path) if len(vals) == 1 and len(rest) == 1 else None
        for star in idx.imports.star_modules:
            sym = self.lookup(idx, ".".join((star.rstrip("."), *rest)) if not star.endswith(".")
                              else star + ".".join(rest), hops + 1)
            if sym is not None:
                return sym
        return None

    # -- facts -------------------------------------------------------------------------------------
    def fact_depth(self) -> int:
        """How many facts are being computed, one inside the other."""
        return max(0, len(self._frames) - 1)

    def fact(self, path: str, name: str, key: str, compute: Callable[[], object]):
        k = (path, name, key)
        hit = self._facts.get(k)
        if hit is not None:
            value, deps = hit
            if value is _IN_PROGRESS:
                return None  # a cycle: no fact
            self._used(deps)
            return value
        self._facts[k] = (_IN_PROGRESS, {})
        self._frames.append({})
        try:
            value = compute()
        except RecursionError:
            value = None
        finally:
            deps = self._frames.pop()
        digest = self._digests.get(path)
        if digest is not None:
            deps[path] = digest
        self._facts[k] = (value, deps)
        self._used(deps)
        return value


# Top-level names that are never modules of the project being linted (saves file system probes).
_NOT_PROJECT = frozenset({
    "torch", "torchvision", "torchaudio", "numpy", "np", "tensorflow", "tf", "keras", "transformers",
    "lightning", "pytorch_lightning", "pl", "accelerate", "deepspeed", "os", "sys", "math", "json", "re",
    "time", "random", "argparse", "logging", "collections", "functools", "itertools", "typing", "F", "nn",
    "scipy", "sklearn", "pandas", "cv2", "PIL", "timm", "einops", "peft", "datasets", "tqdm", "yaml",
})


def project_symbol(index, qualname: Optional[str]) -> Optional[Symbol]:
    """The project definition behind `qualname` as seen from `index`'s module, if the module is in a
    project (linted from a file on disk)."""
    project = getattr(index, "project", None)
    if project is None or not qualname:
        return None
    sym = project.lookup(index, qualname)
    if sym is None and "." not in qualname:  # a name that `from x import *` may have brought
        for star in index.imports.star_modules:
            sym = project.lookup(index, star + qualname if star.endswith(".") else f"{star}.{qualname}")
            if sym is not None:
                break
    return sym


def digest_of(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return hashlib.blake2b(fh.read(MAX_FILE_BYTES + 1), digest_size=16).hexdigest()
    except OSError:
        return None
