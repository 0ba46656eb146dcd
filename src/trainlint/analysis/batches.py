"""What batches a DataLoader yields: does it drop the short last batch, its batch size, its sampler.

A DataLoader is a call of `torch.utils.data.DataLoader` (or any `...DataLoader`), or of a project class
named like a loader that subclasses one (`MolGraphDataLoader(dset, bs)`, followed through imports). Its keyword arguments
are read from the call and from a `**kwargs` dictionary written in the module (`**self._loader_kwargs`
set to `dict(batch_size=..., drop_last=False)` or a `{...}` literal). A subclass whose `__init__` passes
its own `drop_last` to the base class is trusted to drop when it needs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import libcst as cst

from trainlint.analysis.expr import UNKNOWN, literal_value
from trainlint.analysis.index import ModuleIndex, call_arg
from trainlint.analysis.loaders import is_dataloader_name
from trainlint.analysis.walk import walk

_DROP_LAST_POSITION = 7  # DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler, workers, collate, pin, drop_last)


@dataclass
class LoaderCall:
    call: cst.Call
    drops: bool  # drop_last is set to something other than False (or may be: unknown value)
    drop_arg: Optional[cst.Arg]  # the drop_last argument of the call itself
    batch_size: Optional[float]  # a literal batch size, when known
    batch_sampler: bool
    shuffles: bool
    fixable: bool  # a `drop_last=True` edit can be made on the call itself
    subclass_handles: bool = False  # a DataLoader subclass that sets drop_last itself


def dataloader_call(index: ModuleIndex, call: cst.Call) -> Optional[LoaderCall]:
    q = index.callee(call) or ""
    plain = is_dataloader_name(q)
    subclass = None
    if not plain:
        subclass = _dataloader_subclass(index, call, q)
        if subclass is None:
            return None
    scope = index.scope.get(call)
    kwargs: Dict[str, cst.BaseExpression] = {}
    for arg in call.args:
        if arg.star == "**":
            d = _kwargs_dict(index, arg.value, scope)
            if d is None:
                return None  # drop_last may come from there
            kwargs.update(d)
        elif arg.star:
            return None
    drop_arg = call_arg(call, "drop_last", _DROP_LAST_POSITION if plain else None)
    drop_expr = drop_arg.value if drop_arg is not None else kwargs.get("drop_last")
    drops = drop_expr is not None and literal_value(index, drop_expr, scope) is not False
    bs_arg = call_arg(call, "batch_size", 1 if plain else None)
    bs_expr = bs_arg.value if bs_arg is not None else kwargs.get("batch_size")
    # a parameter's default is not the batch size its callers pass (`get_dataloader(ds, batch_size=1)`)
    bs = literal_value(index, bs_expr, scope, defaults=False) if bs_expr is not None else (1 if plain else UNKNOWN)
    shuffle_arg = call_arg(call, "shuffle", 2 if plain else None)
    shuffle_expr = shuffle_arg.value if shuffle_arg is not None else kwargs.get("shuffle")
    return LoaderCall(
        call=call,
        drops=drops,
        drop_arg=drop_arg,
        batch_size=bs if isinstance(bs, (int, float)) and not isinstance(bs, bool) else None,
        batch_sampler=_given(index, call_arg(call, "batch_sampler", 4 if plain else None), scope)
        or _given(index, kwargs.get("batch_sampler"), scope),
        shuffles=shuffle_expr is not None and literal_value(index, shuffle_expr, scope) is True,
        fixable=not any(a.star for a in call.args) and (drop_arg is None or drop_arg.keyword is not None),
        subclass_handles=bool(subclass),
    )


def _given(index: ModuleIndex, value, scope) -> bool:
    """An argument that is passed and not None."""
    if isinstance(value, cst.Arg):
        value = value.value
    return value is not None and literal_value(index, value, scope, defaults=False) is not None


def _kwargs_dict(index: ModuleIndex, expr, scope) -> Optional[Dict[str, cst.BaseExpression]]:
    """`**kw` where kw is a dict literal or `dict(k=v, ...)` written in the module."""
    v, _ = index.resolve(expr, scope)
    if isinstance(v, cst.Dict):
        out = {}
        for el in v.elements:
            if not isinstance(el, cst.DictElement) or not isinstance(el.key, cst.SimpleString):
                return None
            out[str(el.key.evaluated_value)] = el.value
        return out
    if isinstance(v, cst.Call) and index.callee(v) == "dict":
        out = {}
        for a in v.args:
            if a.keyword is None:
                return None
            out[a.keyword.value] = a.value
        return out
    return None


def _dataloader_subclass(index: ModuleIndex, call: cst.Call, q: str):
    """None if `call` does not build a DataLoader subclass; else True when the subclass sets drop_last
    itself, False when it does not."""
    from trainlint.analysis.project import project_symbol

    func = call.func
    if isinstance(func, cst.Name) and func.value in index.classes:
        cls_index, cls = index, index.classes[func.value]
    else:
        last = q.rsplit(".", 1)[-1] if q else ""
        if not last[:1].isupper() or not last.endswith("Loader"):
            return None  # only classes named like loaders are looked up (each lookup may parse a module)
        sym = project_symbol(index, q)
        if sym is None or not isinstance(sym.node, cst.ClassDef):
            return None
        cls_index, cls = sym.index, sym.node
    bases = [cls_index.qualify(b.value) or "" for b in cls.bases]
    if not any(is_dataloader_name(b) for b in bases):
        return None
    for node, _ in walk(cls):
        if isinstance(node, cst.Arg) and node.keyword is not None and node.keyword.value == "drop_last":
            if literal_value(cls_index, node.value, None) is not False:
                return True
    return False


def guards_remainder_of_one(index: ModuleIndex, call: cst.Call) -> bool:
    """Does the function building the loader test for a last batch of one (`n % batch_size == 1`) and so
    handle it (raise the batch size, drop a sample)?"""
    scope = index.scope.get(call)
    body = scope if scope is not None else index.module
    for node, _ in walk(body):
        if isinstance(node, cst.Comparison) and isinstance(node.left, cst.BinaryOperation) \
                and isinstance(node.left.operator, cst.Modulo):
            for target in node.comparisons:
                if isinstance(target.comparator, cst.Integer) and target.comparator.value == "1":
                    return True
    return False


def trained_model_batchnorm(index: ModuleIndex):
    """A one-value-per-channel BatchNorm in the model the module trains (the model whose parameters an
    optimizer gets, or which is put in train mode); when the module trains no model it can follow (a
    config-built model, a loader factory), in the project's models."""
    from trainlint.analysis.models import model_batchnorm, project_batchnorm

    known = False
    for expr, scope in _trained_models(index):
        k, layer = model_batchnorm(index, expr, scope)
        if layer is not None:
            return layer
        known = known or k
    if known:
        return None
    return project_batchnorm(index)


def _trained_models(index: ModuleIndex):
    """Models the module trains: whose parameters it hands out or puts in train mode (`model.parameters()`,
    `model.train()`), or hands to a framework's fit (`trainer.fit(model, ...)`, `Trainer(model=model)`)."""
    out = []
    seen = set()
    for call in index.calls:
        framework_model = None
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "fit":
            framework_model = call_arg(call, "model", 0)
        elif (index.callee(call) or "").endswith("Trainer"):
            framework_model = call_arg(call, "model")
        if framework_model is not None and isinstance(framework_model.value, (cst.Name, cst.Attribute)):
            key = (index.code(framework_model.value), id(index.scope.get(call)))
            if key not in seen:
                seen.add(key)
                out.append((framework_model.value, index.scope.get(call)))
        m = call.func.attr.value if isinstance(call.func, cst.Attribute) else None
        if m in ("parameters", "named_parameters", "train") and isinstance(call.func, cst.Attribute):
            recv = call.func.value
            if isinstance(recv, cst.Attribute) and recv.attr.value == "module":
                recv = recv.value  # model.module.parameters() under DataParallel
            if isinstance(recv, (cst.Name, cst.Attribute)) and not (isinstance(recv, cst.Name) and recv.value == "self"):
                key = (index.code(recv), id(index.scope.get(call)))
                if key not in seen:
                    seen.add(key)
                    out.append((recv, index.scope.get(call)))
    return out
