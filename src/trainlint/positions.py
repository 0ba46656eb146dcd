"""Source positions of nodes, computed only for files that report something.

LibCST's `PositionProvider` regenerates the module's code and records a range for every node. Through
`MetadataWrapper` it also visits the whole tree once more first. This module runs the same codegen
directly, with cheaper per-node bookkeeping (a plain context manager instead of a generator, no regular
expression for tokens without a line break); positions are identical (tested). If LibCST's internals
ever change shape, it falls back to the public `MetadataWrapper` path.
"""

from __future__ import annotations

from typing import Mapping

import libcst as cst
from libcst.metadata import CodePosition, CodeRange, MetadataWrapper, PositionProvider

try:  # private API: checked at import, with a public fallback
    from libcst.metadata.position_provider import NEWLINE_RE, PositionProvidingCodegenState

    class _Record:
        __slots__ = ("state", "node", "start_node", "end_node", "start")

        def __init__(self, state, node, start_node, end_node):
            self.state = state
            self.node = node
            self.start_node = start_node
            self.end_node = end_node

        def __enter__(self):
            self.start = CodePosition(self.state.line, self.state.column)

        def __exit__(self, *exc):
            state = self.state
            computed = state.provider._computed
            start = computed[self.start_node].start if self.start_node is not None else self.start
            end = (computed[self.end_node].end if self.end_node is not None
                   else CodePosition(state.line, state.column))
            computed[self.node] = CodeRange(start, end)
            return False

    class _FastState(PositionProvidingCodegenState):
        def record_syntactic_position(self, node, *, start_node=None, end_node=None):
            return _Record(self, node, start_node, end_node)

        def _update_position(self, value: str) -> None:
            if "\n" not in value and "\r" not in value:
                self.column += len(value)
                return
            segments = NEWLINE_RE.split(value)
            self.line += len(segments) - 1
            self.column = len(segments[-1])

    _FAST = True
except Exception:  # pragma: no cover - depends on the LibCST version
    _FAST = False


def compute_positions(module: cst.Module) -> Mapping[cst.CSTNode, CodeRange]:
    if _FAST:
        try:
            provider = PositionProvider()
            state = _FastState(
                default_indent=module.default_indent,
                default_newline=module.default_newline,
                provider=provider,
            )
            module._codegen(state)
            return provider._computed
        except (AttributeError, TypeError):  # pragma: no cover
            pass
    return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
