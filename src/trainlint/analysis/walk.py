"""A fast pre-order walk over a LibCST tree.

LibCST's visitor protocol rebuilds every node it visits (`_visit_and_replace_children`) and walks every
whitespace and token node. A linter needs neither: this walk reads the dataclass fields of each node
directly, skips pure syntax (whitespace, commas, operators), and uses an explicit stack so that deeply
nested code cannot hit Python's recursion limit.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

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


def children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The meaningful child nodes of `node`, in source order."""
    for name in _child_fields(type(node)):
        value = getattr(node, name, None)
        if isinstance(value, cst.CSTNode):
            if not isinstance(value, _SKIP_TYPES):
                yield value
        elif isinstance(value, (tuple, list)):
            for item in value:
                if isinstance(item, cst.CSTNode) and not isinstance(item, _SKIP_TYPES):
                    yield item


def walk(root: cst.CSTNode) -> Iterator[Tuple[cst.CSTNode, Optional[cst.CSTNode]]]:
    """Yield (node, parent) in pre-order (document order)."""
    stack = [(root, None)]
    pop = stack.pop
    push = stack.extend
    while stack:
        node, parent = pop()
        yield node, parent
        kids = list(children(node))
        if kids:
            kids.reverse()
            push((k, node) for k in kids)
