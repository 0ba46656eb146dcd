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
