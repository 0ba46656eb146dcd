"""trainlint's position computation agrees with LibCST's public PositionProvider on every node."""

import os

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from trainlint.positions import compute_positions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sources():
    yield open(os.path.join(REPO, "examples", "train.py"), encoding="utf-8").read()
    yield "x = (1 +\r\n  2)\r\nif x:\r\n    y = [a\r\n         for a in b]  # c\r\n"
    yield "def f(a, *, b=(1, 2)):\n\t'''doc\nstring'''\n\treturn (a)[b] @ c\n"
    yield "async def g():\n    async with a as b, c:\n        await (yield)\n"
    for name in ("engine.py", "fixer.py", "notebook.py"):
        yield open(os.path.join(REPO, "src", "trainlint", name), encoding="utf-8").read()


def test_positions_match_libcst():
    for code in sources():
        module = cst.parse_module(code)
        expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        got = compute_positions(module)
        assert len(got) == len(expected)
        for node, rng in expected.items():
            assert got[node] == rng, (type(node).__name__, rng, got[node])


def _expected(module):
    return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)


EDGE_SOURCES = [
    "# header comment\n\nimport a\n\n\n# leading comment\n@dec(\n    1)\n# between\n@other\ndef f(x):\n"
    "    return '''a\nb'''  # c\n\n    # footer of f\n\nclass C:\n    y = \\\n        2\n# module footer\n",
    "x = 1\nx = 1\nif x:\n    pass\nx = 1",  # repeated statements, no trailing newline
    "a = 1\rb = (2,\r     3)\rdef g():\r\treturn b\r",  # old Mac line endings, tabs
    "def h():\r\n    s = f'''{a}\r\n{b}'''\r\n    return s\r\n\x0c\r\nh()\r\n",  # form feed, CRLF in strings
    "",
    "\n\n# only comments\n",
    "x = 1; y = 2; z = (x +\n  y)\n",
]


def test_positions_lazy_per_statement_match_libcst_in_any_order():
    import random

    rng = random.Random(0)
    for code in list(sources()) + EDGE_SOURCES:
        module = cst.parse_module(code)
        expected = _expected(module)
        nodes = list(expected)
        rng.shuffle(nodes)
        got = compute_positions(module)
        for node in nodes:
            assert got[node] == expected[node], (type(node).__name__, expected[node], got[node])
        # a fresh mapping asked about one node at a time, starting anywhere
        for node in nodes[:50]:
            assert compute_positions(module)[node] == expected[node]


def test_positions_only_the_asked_statement_is_generated():
    from trainlint.positions import Positions

    code = "import torch\n\n\ndef a():\n    return 1\n\n\ndef b(x):\n    y = x + 1\n    return y\n\n\nz = b(2)\n"
    module = cst.parse_module(code)
    expected = _expected(module)
    fn_b = module.body[2]
    ret = fn_b.body.body[1]
    pos = compute_positions(module)
    assert isinstance(pos, Positions)
    assert pos[ret] == expected[ret]
    assert pos.statements_computed == 1
    assert pos[fn_b] == expected[fn_b] and pos.statements_computed == 1
    # the module node and anything outside the statements: the whole-module computation
    assert pos[module] == expected[module]
    assert len(pos) == len(expected)


def test_positions_of_a_node_not_in_the_tree_is_a_key_error():
    import pytest

    module = cst.parse_module("x = 1\n")
    with pytest.raises(KeyError):
        compute_positions(module)[cst.Name("x")]


def test_positions_with_a_node_object_shared_between_statements():
    # A tree built by code (not the parser) may hold one node object at two places: LibCST's own
    # answer (the whole-module codegen) is kept.
    module = cst.parse_module("a = f(1)\nb = 2\nc = f(1)\n")
    shared = module.body[0].body[0].value
    module = module.with_changes(body=[module.body[0], module.body[1],
                                       module.body[2].with_changes(body=[module.body[2].body[0].with_changes(value=shared)])])
    expected = _expected(module)
    got = compute_positions(module)
    assert got[shared] == expected[shared]
    for node in expected:
        assert got[node] == expected[node]
