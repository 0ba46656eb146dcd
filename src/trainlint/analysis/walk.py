"""A fast pre-order walk over a LibCST tree.

LibCST's visitor protocol rebuilds every node it visits (`_visit_and_replace_children`) and walks every
whitespace and token node. A linter needs neither: this walk reads the dataclass fields of each node
directly, skips pure syntax (whitespace, commas, operators), and uses an explicit stack so that deeply
nested code cannot hit Python's recursion limit.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import libcst as cst

_SKIP_TYPES = (
    cst.BaseParenthesizableWhitespace,
    cst.EmptyLine,
    cst.TrailingWhitespace,
    cst.Newline,
    cst.Comment,
    cst.Comma,
    cst.Dot,
    cst.Semicolon,
    cst.Colon,
    cst.AssignEqual,
    cst.BaseBinaryOp,
    cst.BaseBooleanOp,
    cst.BaseCompOp,
    cst.BaseUnaryOp,
    cst.BaseAugOp,
    cst.LeftParen,
    cst.RightParen,
    cst.LeftSquareBracket,
    cst.RightSquareBracket,
    cst.LeftCurlyBrace,
    cst.RightCurlyBrace,
    cst.ImportStar,
    cst.Asynchronous,
)
_SKIP_NAMES = {"lpar", "rpar", "leading_lines", "lines_after_decorators", "header", "footer"}

_fields_cache: Dict[type, Tuple[str, ...]] = {}
# What a field value of a given type is: 0 nothing to visit, 1 a node to visit, 2 a sequence to look into.
# LibCST node classes are ABCs, so `isinstance` against a tuple of them is slow; the answer for a type
# never changes, so it is computed once per type.
_kind_cache: Dict[type, int] = {}


def _kind(tp: type) -> int:
    k = _kind_cache.get(tp)
    if k is None:
        if issubclass(tp, cst.CSTNode):
            k = 0 if issubclass(tp, _SKIP_TYPES) else 1
        elif issubclass(tp, (tuple, list)):
            k = 2
        else:
            k = 0
        _kind_cache[tp] = k
    return k


def _child_fields(tp: type) -> Tuple[str, ...]:
    names = _fields_cache.get(tp)
    if names is None:
        names = tuple(
            f
            for f in getattr(tp, "__dataclass_fields__", {})
            if f not in _SKIP_NAMES and not f.startswith("whitespace")
        )
        _fields_cache[tp] = names
    return names


def children(node: cst.CSTNode) -> List[cst.CSTNode]:
    """The meaningful child nodes of `node`, in source order."""
    out: List[cst.CSTNode] = []
    kinds = _kind_cache
    for name in _child_fields(type(node)):
        value = getattr(node, name, None)
        k = kinds.get(type(value))
        if k is None:
            k = _kind(type(value))
        if k == 1:
            out.append(value)
        elif k == 2:
            for item in value:
                ki = kinds.get(type(item))
                if ki is None:
                    ki = _kind(type(item))
                if ki == 1:
                    out.append(item)
    return out


def walk(root: cst.CSTNode) -> Iterator[Tuple[cst.CSTNode, Optional[cst.CSTNode]]]:
    """Yield (node, parent) in pre-order (document order)."""
    stack = [(root, None)]
    pop = stack.pop
    push = stack.extend
    while stack:
        node, parent = pop()
        yield node, parent
        kids = children(node)
        if kids:
            kids.reverse()
            push((k, node) for k in kids)


def calls_in_evaluation_order(expr: cst.CSTNode) -> List[cst.Call]:
    """The calls in `expr` in evaluation order: arguments and receivers before the call that takes them;
    the bodies of lambdas, functions and classes are not entered."""
    out: List[cst.Call] = []
    if isinstance(expr, (cst.Lambda, cst.FunctionDef, cst.ClassDef)):
        return out
    stack = [(expr, False)]
    while stack:
        node, done = stack.pop()
        if done:
            out.append(node)
            continue
        if isinstance(node, cst.Call):
            stack.append((node, True))
        if isinstance(node, (cst.Lambda, cst.FunctionDef, cst.ClassDef)):
            continue
        for k in reversed(children(node)):
            stack.append((k, False))
    return out
