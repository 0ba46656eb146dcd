"""Model facts: does a model contain a BatchNorm that sees one value per channel?

BatchNorm in training mode normalises each channel over the batch (and the spatial positions). When a
channel has a single value, `Expected more than 1 value per channel when training` is raised: a BatchNorm
after global pooling to 1x1 (the image-pooling branch of ASPP/PSP heads), or a `BatchNorm1d` on `(N, C)`
features (after a Linear), crashes on a batch of one sample, which a training DataLoader without
`drop_last=True` yields whenever `len(dataset) % batch_size == 1`.

A layer is found in a *sequence* of layer constructors (the arguments of `nn.Sequential(...)` or of a
`nn.Sequential` subclass's `super().__init__(...)`, a list of layers): a BatchNorm that comes after a
pooling to 1 (`AdaptiveAvgPool2d(1)`, `AdaptiveMaxPool1d((1,))`...), a `Linear` or a `Flatten`, with only
1x1-preserving layers between; or as a `BatchNorm1d` of a class that has no convolution, recurrent or
attention layer (so its inputs are `(N, C)` features).

A model *contains* what it constructs: the classes and factory functions its methods (or the factory's
body) call, followed through the module and the project's imports (`analysis/project.py`), a few levels
deep, and the library models of `analysis/library.py`.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

import libcst as cst

from trainlint.analysis.expr import number_value
from trainlint.analysis.index import SELF_RETURNING, ModuleIndex, Scope
from trainlint.analysis.walk import walk

Layer = Tuple[str, str, int]  # (description, file, line)

_POOL_TO_ONE = re.compile(r"^Adaptive(Avg|Max)Pool[123]d$")
_BN = re.compile(r"^(Sync)?BatchNorm[123]?d?$")
_KEEPS_1X1 = re.compile(r"^(Conv[123]d|ReLU\d*|LeakyReLU|GELU|SiLU|Sigmoid|Tanh|Dropout\w*|Identity|Linear|Hardswish|"
                        r"PReLU|ELU|Mish)$")
_SEQUENCE_LAYERS = re.compile(r"^(Conv\w*|Linear|BatchNorm\w*|SyncBatchNorm|ReLU\w*|\w*Pool\w*|Dropout\w*|Flatten)$")
_HAS_POSITIONS = re.compile(r"^(Conv\w*[123]d|ConvTranspose[123]d|LSTM\w*|GRU\w*|RNN\w*|MultiheadAttention|"
                            r"Transformer\w*|Embedding\w*|MaxPool[123]d|AvgPool[123]d)$")
MAX_DEPTH = 6


def _layer(index: ModuleIndex, node) -> Optional[str]:
    """`BatchNorm2d` for `nn.BatchNorm2d(256)` (a torch.nn layer constructor), else None."""
    if not isinstance(node, cst.Call):
        return None
    q = index.callee(node) or ""
    last = q.rsplit(".", 1)[-1]
    if q.startswith(("torch.nn.", "nn.")) or q == last and index.imports.aliases.get(last, "").startswith("torch.nn"):
        return last
    return None


def _pools_to_one(index: ModuleIndex, call: cst.Call) -> bool:
    arg = call.args[0].value if call.args else None
    return arg is not None and _may_be_one(index, arg, index.scope.get(call), 0)


def _may_be_one(index: ModuleIndex, expr, scope, depth: int) -> bool:
    """Can this pooling size be 1 (or (1, 1))? Followed through names, `for s in sizes` loops and the
    arguments callers pass (`_PyramidPoolingModule(2048, 512, (1, 2, 3, 6))`)."""
    if depth > 4 or expr is None:
        return False
    n = number_value(expr)
    if n is not None:
        return n == 1
    if isinstance(expr, (cst.Tuple, cst.List)):
        return bool(expr.elements) and all(number_value(e.value) == 1 for e in expr.elements)
    if isinstance(expr, cst.Name):
        from trainlint.analysis.expr import param_values

        for v in index.values_of(expr.value, scope):
            if _may_be_one(index, v, scope, depth + 1):
                return True
        for loop in index.loops:
            if isinstance(loop, cst.For) and isinstance(loop.target, cst.Name) and loop.target.value == expr.value \
                    and index.scope.get(loop) is scope:
                it, isc = index.resolve(loop.iter, scope)
                if isinstance(it, (cst.Tuple, cst.List)) and any(
                        _may_be_one(index, e.value, isc, depth + 1) for e in it.elements):
                    return True
                if isinstance(it, cst.Name) and _elements_may_be_one(index, it, isc, depth + 1):
                    return True
        if index.is_param(expr.value, scope):
            return any(_may_be_one(index, v, s2, depth + 1) for v, s2 in param_values(index, expr.value, scope))
    return False


def _elements_may_be_one(index: ModuleIndex, name: cst.Name, scope, depth: int) -> bool:
    from trainlint.analysis.expr import param_values

    if not index.is_param(name.value, scope):
        return False
    for v, _ in param_values(index, name.value, scope):
        if isinstance(v, (cst.Tuple, cst.List)) and any(number_value(e.value) == 1 for e in v.elements):
            return True
    return False


def _sequences(index: ModuleIndex, body) -> List[List[cst.Call]]:
    """Runs of layer constructors written in order: call arguments and list/tuple literals."""
    out = []
    for node, _ in walk(body):
        items = None
        if isinstance(node, cst.Call):
            items = [a.value for a in node.args if a.keyword is None and not a.star]
        elif isinstance(node, (cst.List, cst.Tuple)):
            items = [e.value for e in node.elements]
        if not items or len(items) < 2:
            continue
        calls = [v for v in items if isinstance(v, cst.Call)]
        if len(calls) >= 2 and sum(1 for c in calls if _SEQUENCE_LAYERS.match(_layer(index, c) or "-")) >= 2:
            out.append(calls)
    return out


def single_value_batchnorm(index: ModuleIndex, node: cst.CSTNode) -> Optional[Layer]:
    """A BatchNorm over one value per channel built in `node` (a class or a function), if any."""
    def compute():
        path = index.path or ""
        for seq in _sequences(index, node):
            collapsed = None  # what made the values one per channel
            for call in seq:
                name = _layer(index, call) or ""
                if _POOL_TO_ONE.match(name) and _pools_to_one(index, call):
                    collapsed = name
                elif name in ("Linear", "Flatten"):
                    collapsed = name
                elif _BN.match(name) and collapsed:
                    return (f"`{name}` after `{collapsed}`", path, _line(index, call, node))
                elif not _KEEPS_1X1.match(name):
                    collapsed = None
        if isinstance(node, cst.ClassDef):
            names = [(_layer(index, n), n) for n, _ in walk(node) if isinstance(n, cst.Call)]
            if not any(_HAS_POSITIONS.match(name or "-") for name, _ in names):
                for name, call in names:
                    if name == "BatchNorm1d":
                        return (f"`BatchNorm1d` on `(N, C)` features in `{node.name.value}`", path,
                                _line(index, call, node))
        return None

    return index.cached(("bn-single", id(node)), compute)


def _line(index: ModuleIndex, node: cst.CSTNode, owner: cst.CSTNode) -> int:
    """The 1-based line of `node`, a call inside the class or function `owner`, for a message: its code
    is searched from `owner`'s header on (positions of another module's nodes are not computed)."""
    name = getattr(getattr(owner, "name", None), "value", "")
    header = re.search(rf"^\s*(?:async\s+)?(?:class|def)\s+{re.escape(name)}\b", index.source, re.M) if name else None
    pos = index.source.find(index.code(node).strip(), header.start() if header else 0)
    return index.source.count("\n", 0, pos) + 1 if pos >= 0 else 1


def constructed(index: ModuleIndex, node: cst.CSTNode) -> List[cst.Call]:
    """Calls in a class (all its methods) or a function body that may construct other modules."""
    return [n for n, _ in walk(node) if isinstance(n, cst.Call)]


def model_batchnorm(index: ModuleIndex, expr: cst.BaseExpression, scope: Scope, depth: int = 0) -> Tuple[bool, Optional[Layer]]:
    """(known, layer): what a model expression (`PSPNet(...)`, `model_map[name](...)`, a name bound to
    one) is made of. `known` is False when the model cannot be followed to its definition."""
    if depth > MAX_DEPTH:
        return False, None
    v, sc = index.resolve(expr, scope)
    while isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and v.func.attr.value in SELF_RETURNING \
            and isinstance(v.func.value, cst.Call):  # PSPNet(...).cuda()
        v = v.func.value
    if isinstance(v, cst.Name) and len(index.values_of(v.value, sc)) > 1:
        # model = resnet50().cuda(); model = DDP(model): every value but those that wrap the model itself
        own = [x for x in index.values_of(v.value, sc) if not _wraps(x, v.value)]
        results = [model_batchnorm(index, x, sc, depth + 1) for x in own if isinstance(x, cst.BaseExpression)]
        found = next((layer for _, layer in results if layer is not None), None)
        return (bool(results) and all(k for k, _ in results)) or found is not None, found
    if isinstance(v, cst.Name) and not index.values_of(v.value, sc) and index.is_param(v.value, sc):
        from trainlint.analysis.expr import param_values

        results = [model_batchnorm(index, a, s2, depth + 1) for a, s2 in param_values(index, v.value, sc)]
        found = next((layer for _, layer in results if layer is not None), None)
        return (bool(results) and all(k for k, _ in results)) or found is not None, found
    if isinstance(v, cst.Call):
        q = index.callee(v) or ""
        last = q.rsplit(".", 1)[-1]
        if last in ("DataParallel", "DistributedDataParallel", "DDP", "compile", "convert_sync_batchnorm") and v.args:
            return model_batchnorm(index, v.args[0].value, sc, depth + 1)
        func = v.func
        if isinstance(func, cst.Subscript):  # model_map[name](...): every model of the table
            table, tsc = index.resolve(func.value, sc)
            if isinstance(table, cst.Dict):
                known_all, found = True, None
                for el in table.elements:
                    if isinstance(el, cst.DictElement):
                        k, layer = callable_batchnorm(index, el.value, tsc, depth + 1)
                        known_all = known_all and k
                        found = found or layer
                return (known_all or found is not None), found
            return False, None
        return callable_batchnorm(index, func, sc, depth + 1)
    return False, None


def _wraps(value, name: str) -> bool:
    """`DDP(model)`, `model.to(device)`, `torch.compile(model)`: a value built from the name itself."""
    if isinstance(value, cst.Call):
        if isinstance(value.func, cst.Attribute) and isinstance(value.func.value, cst.Name) \
                and value.func.value.value == name:
            return True
        return bool(value.args) and isinstance(value.args[0].value, cst.Name) and value.args[0].value.value == name
    return False


def callable_batchnorm(index: ModuleIndex, func, scope: Scope, depth: int = 0) -> Tuple[bool, Optional[Layer]]:
    """(known, layer) for what calling `func` builds: a class or factory of this module or the project,
    or a library model."""
    from trainlint.analysis.library import library_model_batchnorm
    from trainlint.analysis.project import project_symbol

    if depth > MAX_DEPTH or not isinstance(func, (cst.Name, cst.Attribute)):
        return False, None
    q = index.qualify(func) or ""
    lib = library_model_batchnorm(q)
    if lib is not None:
        return True, lib or None
    if isinstance(func, cst.Name):
        node = index.classes.get(func.value) or index.functions.get(func.value)
        if node is not None:
            return True, contains_batchnorm(index, node, depth + 1)
        vals = [v for v in index.values_of(func.value, scope) if isinstance(v, (cst.Name, cst.Attribute))]
        if vals:  # cls = MPNN if ... else MulticomponentMPNN; cls(...)
            results = [callable_batchnorm(index, v, scope, depth + 1) for v in vals]
            found = next((layer for _, layer in results if layer is not None), None)
            return all(k for k, _ in results) or found is not None, found
    sym = project_symbol(index, q)
    if sym is not None and isinstance(sym.node, (cst.ClassDef, cst.FunctionDef)):
        if sym.project.fact_depth() > MAX_DEPTH:
            return False, None
        # a memoised fact is computed from depth 0 (the same whoever asks first); facts nest at most
        # MAX_DEPTH deep and a cycle gives no fact
        layer = sym.fact("contains-bn-single", lambda: contains_batchnorm(sym.index, sym.node, 0))
        return True, layer
    return False, None


def contains_batchnorm(index: ModuleIndex, node: cst.CSTNode, depth: int = 0) -> Optional[Layer]:
    """A one-value-per-channel BatchNorm in `node` or in what it constructs (transitively)."""
    if depth > MAX_DEPTH:
        return None
    own = single_value_batchnorm(index, node)
    if own is not None:
        return own
    seen = set()
    for call in constructed(index, node):
        func = call.func
        if not isinstance(func, (cst.Name, cst.Attribute)):
            continue
        key = index.code(func)
        if key in seen or key.startswith(("self.", "nn.", "torch.", "F.")):
            continue
        seen.add(key)
        if isinstance(func, cst.Name) and func.value == getattr(getattr(node, "name", None), "value", None):
            continue
        _, layer = callable_batchnorm(index, func, index.scope.get(call), depth + 1)
        if layer is not None:
            return layer
    return None


def project_batchnorm(index: ModuleIndex) -> Optional[Layer]:
    """The first one-value-per-channel BatchNorm defined anywhere in the project (a model built from a
    config cannot be followed from the training code). Only files that mention BatchNorm are parsed."""
    project = getattr(index, "project", None)
    if project is None:
        return single_value_in_module(index)

    def compute():
        count = 0
        for dirpath, dirnames, filenames in os.walk(project.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
            for fn in sorted(filenames):
                if not fn.endswith(".py"):
                    continue
                path = os.path.join(dirpath, fn)
                try:
                    with open(path, "rb") as fh:
                        data = fh.read(2_000_001)
                except OSError:
                    continue
                if b"BatchNorm" not in data or len(data) > 2_000_000 or not _MAY_HOLD.search(data):
                    continue
                count += 1
                if count > MAX_SCANNED:
                    return None  # a large library, not a training project: no guess
                other = project.index_of(path)
                if other is not None:
                    layer = single_value_in_module(other)
                    if layer is not None:
                        return layer
        return None

    return project.fact(project.root, "*", "project-bn-single", compute)


def single_value_in_module(index: ModuleIndex) -> Optional[Layer]:
    for cls in index.classes.values():
        layer = single_value_batchnorm(index, cls)
        if layer is not None:
            return layer
    for fn in index.functions.values():
        layer = single_value_batchnorm(index, fn)
        if layer is not None:
            return layer
    return None


# A file is parsed for the project scan only if its text can hold one of the patterns: a pooling to 1,
# a Linear or a Flatten followed closely by a BatchNorm, or a BatchNorm1d in a file without convolutions
# or recurrent layers.
_MAY_HOLD = re.compile(
    rb"(?:Adaptive(?:Avg|Max)Pool[123]d|Linear|Flatten)\s*\([^)]*\)[\s\S]{0,400}?BatchNorm"
    rb"|\A(?![\s\S]*(?:Conv[123]d|LSTM|GRU|RNN))[\s\S]*BatchNorm1d")
MAX_SCANNED = 40

_SKIP_DIRS = {"venv", ".venv", "build", "dist", "node_modules", "site-packages", "__pycache__", "tests", "test",
              "docs", "examples"}
