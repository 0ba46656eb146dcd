"""analysis/reaching.py answers each read from a per-block table; the answers are those of the plain
backward search (kept here as the reference), on every name read of many modules."""

from __future__ import annotations

import ast
import os
import textwrap

import libcst as cst

from trainlint.analysis import reaching
from trainlint.analysis.index import ModuleIndex
from trainlint.analysis.walk import children, walk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the reference: the walk back over every earlier statement, as reaching.py did it before -----------

def _ref_bound_names(node):
    names = set()
    stack = [node]
    while stack:
        n = stack.pop()
        names.update(reaching._names_bound_here(n))
        for k in children(n):
            if isinstance(k, (cst.FunctionDef, cst.ClassDef)):
                names.add(k.name.value)
                continue
            if isinstance(k, (cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)):
                continue
            stack.append(k)
    return frozenset(names)


def _ref_simple_value(stmt, name):
    if isinstance(stmt, cst.SimpleStatementLine):
        for small in reversed(stmt.body):
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and \
                    isinstance(small.targets[0].target, cst.Name) and small.targets[0].target.value == name:
                return small.value
            if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name) \
                    and small.target.value == name:
                return small.value if small.value is not None else reaching._OPAQUE
            if name in _ref_bound_names(small):
                return reaching._OPAQUE
        return reaching._NOT_FOUND
    if isinstance(stmt, cst.With):
        for item in stmt.items:
            if reaching._binds_here(item, name):
                return reaching._OPAQUE
        for s in reversed(list(stmt.body.body)):
            v = _ref_simple_value(s, name)
            if v is not reaching._NOT_FOUND:
                return v
        return reaching._NOT_FOUND
    if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
        return reaching._OPAQUE if stmt.name.value == name else reaching._NOT_FOUND
    return reaching._OPAQUE if name in _ref_bound_names(stmt) else reaching._NOT_FOUND


def _ref_reaching_value(index, name):
    target = name.value
    stmt = reaching.statement_of(index, name)
    if stmt is None:
        return None
    if isinstance(stmt, cst.SimpleStatementLine):
        cur = name
        while index.parent.get(cur) is not stmt:
            cur = index.parent[cur]
        i = next((k for k, s in enumerate(stmt.body) if s is cur), 0)
        for small in reversed(list(stmt.body)[:i]):
            v = _ref_simple_value(small, target)
            if v is reaching._OPAQUE:
                return None
            if v is not reaching._NOT_FOUND:
                return v
    elif not isinstance(stmt, cst.With):
        if isinstance(stmt, (cst.For, cst.While)) and target in _ref_bound_names(stmt):
            return None
    while True:
        block = index.parent.get(stmt)
        body = list(getattr(block, "body", ()))
        i = next((k for k, s in enumerate(body) if s is stmt), None)
        if i is None:
            return None
        for s in reversed(body[:i]):
            v = _ref_simple_value(s, target)
            if v is reaching._OPAQUE:
                return None
            if v is not reaching._NOT_FOUND:
                return v
        owner = index.parent.get(block) if not isinstance(block, cst.Module) else None
        if owner is None or isinstance(owner, reaching._SCOPES):
            return None
        part = block
        node = owner
        while True:
            if isinstance(node, (cst.For, cst.While)) and target in _ref_bound_names(node):
                return None
            if isinstance(node, cst.Try) or type(node).__name__ == "TryStar":
                if node.body is not part and target in _ref_bound_names(node.body):
                    return None
            par = index.parent.get(node)
            if isinstance(par, (cst.IndentedBlock, cst.Module)):
                stmt = node
                break
            if par is None or isinstance(par, reaching._SCOPES):
                return None
            part = node
            node = par


# -- the modules -------------------------------------------------------------------------------------

TRICKY = '''
import torch, torch.nn.functional as F
from torch import nn as tnn
crit = tnn.CrossEntropyLoss()
p = F.softmax(x, 1); q = p; r = q
with torch.no_grad():
    a = 1
    with open(f) as h, (b := g()):
        a = 2
        c = a
    d = a
with ctx() as a:
    e = a
if cond:
    p = 3
s = p
for p in range(3):
    t = p
    p = 4
u = p
try:
    v = 1
except E as v:
    w = v
else:
    v = 2
finally:
    z = v
while v:
    v = v - 1
    y = v
def f(a, *args, k=1, **kw):
    global crit
    b = a; c = b
    if a: d = c; e = d
    class K:
        z = b
    del b
    f2 = lambda m: m + c
    return crit(c, e), [c for c in range(3)], f2, K, kw
x: int
x: int = 5
xx = x
x += 1
xy = x
import a.b.c as d
dd = d
'''


def _flat(n):
    lines = ["import torch.nn as nn", "import torch.nn.functional as F", "crit = nn.NLLLoss()"]
    i = 0
    while len(lines) < n:
        lines += [f"o{i} = m(x)", f"p{i} = F.softmax(o{i}, 1)", f"l{i} = crit(p{i}, y)", f"crit = crit if i else crit",
                  f"with g():", f"    q{i} = p{i}", f"    crit = nn.NLLLoss()"]
        i += 1
    return "\n".join(lines) + "\n"


def _rule_examples():
    """The BAD/GOOD snippets of the rule tests."""
    folder = os.path.join(REPO, "tests", "rules")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for v in node.values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str) and "\n" in v.value:
                        yield textwrap.dedent(v.value)


def sources():
    yield TRICKY
    yield _flat(150)
    for folder in ("examples", os.path.join("examples", "project")):
        for name in sorted(os.listdir(os.path.join(REPO, folder))):
            if name.endswith(".py"):
                yield open(os.path.join(REPO, folder, name), encoding="utf-8").read()
    yield from _rule_examples()


def test_reaching_value_matches_the_backward_search_on_every_read():
    checked = parsed = 0
    for code in sources():
        try:
            module = cst.parse_module(code)
        except cst.ParserSyntaxError:
            continue
        parsed += 1
        index = ModuleIndex(module, code)
        for node, _ in walk(module):
            if isinstance(node, cst.Name):
                assert reaching.reaching_value(index, node) is _ref_reaching_value(index, node), \
                    (node.value, code[:200])
                checked += 1
            if isinstance(node, (cst.BaseStatement, cst.BaseSmallStatement, cst.BaseSuite)):
                assert reaching._bound_names(index, node) == _ref_bound_names(node)
    assert parsed > 100 and checked > 5000, (parsed, checked)


def test_reaching_value_through_blocks():
    module = cst.parse_module(TRICKY)
    index = ModuleIndex(module, TRICKY)
    code = module.code_for_node

    def value(statement: str, name: str):
        """What `name` holds where it is read in the simple statement whose code is `statement`."""
        for node, parent in walk(module):
            if isinstance(node, cst.SimpleStatementLine) and code(node).strip() == statement:
                for n, _ in walk(node):
                    if isinstance(n, cst.Name) and n.value == name and index.parent.get(n) is not None \
                            and not isinstance(index.parent[n], cst.AssignTarget):
                        v = reaching.reaching_value(index, n)
                        return code(v) if v is not None else None
        raise AssertionError(statement)

    assert value("c = a", "a") == "2"  # the nearest earlier binding in the block
    assert value("d = a", "a") == "2"  # a `with` body always runs: its binding reaches past it
    assert value("s = p", "p") is None  # rebound in a branch: unknown
    assert value("u = p", "p") is None  # rebound in a loop
    assert value("z = v", "v") is None  # after a try whose handler binds it
    assert value("xx = x", "x") == "5"
    assert value("xy = x", "x") is None  # augmented assignment
    assert value("return crit(c, e), [c for c in range(3)], f2, K, kw", "c") == "b"
