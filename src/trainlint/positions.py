"""Source positions of nodes, computed only for the statements that report something.

LibCST's `PositionProvider` regenerates the module's code and records a range for every node. Through
`MetadataWrapper` it also visits the whole tree once more first. This module runs the same codegen
directly, with cheaper per-node bookkeeping (a plain context manager instead of a generator, no regular
expression for tokens without a line break), and only for the top-level statements whose nodes are
asked for: a rule that reports in `main()` does not pay for ranges of every other function in the file.

How: a first pass generates the module's code counting lines and columns only (no ranges), which gives
each top-level statement's starting line and column and which statement each node belongs to; a node's
range is then computed by the position codegen of its statement alone, started at that line and column.
The tokens, and so the positions, are those of the whole-module codegen: a statement's code does not
depend on what precedes it (the indentation stack is empty between top-level statements). Nodes outside
every statement (the module, its header and footer lines), and trees where one node object appears
twice, get the whole-module computation. Positions are identical to LibCST's (tested, node by node and
in any order of asking). If LibCST's internals ever change shape, it falls back to the public
`MetadataWrapper` path.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

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

    class _NoRecord:
        __slots__ = ()

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return False

    _NO_RECORD = _NoRecord()

    class _ScanState(_FastState):
        """The first pass: the same tokens, line and column as the position codegen, but neither ranges
        nor kept tokens. `Positions._scan` sets `before_codegen` to a list's append: the nodes in codegen
        order, so the statement a node belongs to is where it falls among the statements' first nodes."""

        def record_syntactic_position(self, node, *, start_node=None, end_node=None):
            return _NO_RECORD

        # a token only moves the line and column (no token list is kept)
        add_token = _FastState._update_position

        def after_codegen(self, node) -> None:  # replaced per instance by a builtin (see _scan)
            pass

    _FAST = True
except Exception:  # pragma: no cover - depends on the LibCST version
    _FAST = False


def _whole_module(module: cst.Module) -> Dict[cst.CSTNode, CodeRange]:
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
    return dict(MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider))


class Positions(Mapping):
    """node -> CodeRange (LibCST's `PositionProvider` ranges) of one module, computed per top-level
    statement when a node of that statement is first looked up."""

    def __init__(self, module: cst.Module):
        self.module = module
        self._computed: Dict[cst.CSTNode, CodeRange] = {}
        self._whole: Optional[Dict[cst.CSTNode, CodeRange]] = None
        self._index: Optional[Dict[int, int]] = None  # id(node) -> its place in codegen order
        self._firsts: List[int] = []  # the place of each top-level statement's first node
        self._starts: List[Tuple[int, int]] = []  # (line, column) where each top-level statement begins
        self._done: set = set()
        self.statements_computed = 0  # for tests and profiles

    def _scan(self) -> None:
        module = self.module
        state = _ScanState(default_indent=module.default_indent, default_newline=module.default_newline,
                           provider=None)
        nodes: List[cst.CSTNode] = []
        # LibCST calls state.before_codegen(node) and state.after_codegen(node) for every node: builtins
        # in the instance's namespace instead of Python methods (the list's append; `id`, whose result is
        # dropped, as a no-op), because this pass runs over the whole module.
        state.before_codegen = nodes.append
        state.after_codegen = id
        for h in module.header:
            h._codegen(state)
        starts = self._starts
        firsts: List[int] = []
        for stmt in module.body:
            if state.indent_tokens:  # pragma: no cover - never between top-level statements
                raise TypeError("indentation left over between top-level statements")
            starts.append((state.line, state.column))
            firsts.append(len(nodes))
            stmt._codegen(state)
        index = dict(zip(map(id, nodes), range(len(nodes))))  # id(node) -> its place in codegen order
        if len(index) != len(nodes):  # a tree built by code may share nodes (the parser does not)
            self._whole = _whole_module(module)
            return
        self._index = index
        self._firsts = firsts

    def _statement_of(self, node: cst.CSTNode) -> int:
        """The index of the top-level statement `node` is part of; -1 for the module's header and footer,
        the module itself and nodes not in the tree."""
        k = self._index.get(id(node))
        if k is None or not self._firsts or k < self._firsts[0]:
            return -1
        return bisect_right(self._firsts, k) - 1

    def _statement(self, i: int) -> None:
        self._done.add(i)
        line, column = self._starts[i]
        module = self.module
        provider = PositionProvider()
        provider._computed = self._computed
        state = _FastState(default_indent=module.default_indent, default_newline=module.default_newline,
                           provider=provider, line=line, column=column)
        module.body[i]._codegen(state)
        self.statements_computed += 1

    def _all(self) -> Dict[cst.CSTNode, CodeRange]:
        if self._whole is None:
            self._whole = _whole_module(self.module)
        return self._whole

    def __getitem__(self, node: cst.CSTNode) -> CodeRange:
        if self._whole is not None:
            return self._whole[node]
        r = self._computed.get(node)
        if r is not None:
            return r
        if _FAST:
            try:
                if self._index is None:
                    self._scan()
                    if self._whole is not None:
                        return self._whole[node]
                i = self._statement_of(node)
                if i >= 0 and i not in self._done:
                    self._statement(i)
                    r = self._computed.get(node)
                    if r is not None:
                        return r
            except (AttributeError, TypeError):  # pragma: no cover - LibCST internals changed
                pass
        return self._all()[node]  # the module, its header/footer, or a node not in the tree (KeyError)

    def __iter__(self) -> Iterator[cst.CSTNode]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def compute_positions(module: cst.Module) -> Mapping[cst.CSTNode, CodeRange]:
    """The ranges of `module`'s nodes, computed on first use, per top-level statement (see above)."""
    if not _FAST:  # pragma: no cover
        return _whole_module(module)
    return Positions(module)
