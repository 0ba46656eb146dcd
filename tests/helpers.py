"""Test helpers: lint a snippet, read `# expect: CODE` markers, apply fixes."""

from __future__ import annotations

import re
import textwrap
from typing import List, Optional, Set, Tuple

from trainlint.codes import STATIC_CODES
from trainlint.config import Settings
from trainlint.engine import lint_text, parse
from trainlint.fixer import fix_text

_EXPECT_COMMENT = re.compile(r"  # expect: [A-Z0-9, ]+")
_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>TL\d{3}(?:\s*,\s*TL\d{3})*)")


def src(code: str) -> str:
    return textwrap.dedent(code).lstrip("\n")


def options(**rules):
    s = Settings()
    s.rules = rules
    return s.rule_options()


def lint(code: str, codes: Optional[List[str]] = None, opts=None, filename: str = "train.py"):
    return lint_text(src(code), filename, codes or STATIC_CODES, opts or options()).diagnostics


def found(code: str, codes: Optional[List[str]] = None, opts=None) -> Set[Tuple[int, str]]:
    return {(d.location.row, d.code) for d in lint(code, codes, opts)}


def expected(code: str, only: Optional[List[str]] = None) -> Set[Tuple[int, str]]:
    out = set()
    for row, line in enumerate(src(code).splitlines(), 1):
        m = _EXPECT.search(line)
        if m:
            for c in re.split(r"\s*,\s*", m.group("codes")):
                if only is None or c in only:
                    out.add((row, c))
    return out


def fix(code: str, codes: List[str], unsafe: bool = True, opts=None) -> Tuple[str, int]:
    text, applied, _ = fix_text(src(code), "train.py", codes, opts or options(), unsafe)
    return text, applied


def assert_fix_roundtrip(code: str, codes: List[str], expected_text: Optional[str] = None, opts=None) -> str:
    """Fix, check the result parses, is clean for `codes`, and that a second fix changes nothing."""
    fixed, applied = fix(code, codes, opts=opts)
    assert applied >= 1, "expected a fix to apply"
    parse(fixed)
    remaining = lint_text(fixed, "train.py", codes, opts or options()).diagnostics
    assert not remaining, [d.message for d in remaining]
    again, applied2 = fix(fixed, codes, opts=opts)
    assert applied2 == 0 and again == fixed
    if expected_text is not None:
        assert _EXPECT_COMMENT.sub("", fixed) == src(expected_text)
    return fixed


def case_tests(codes: List[str], bad: dict, good: dict):
    """The two standard tests of a rule module: every `bad` example reports exactly its `# expect:`
    markers (and has at least one), every `good` example reports nothing."""
    import pytest

    @pytest.mark.parametrize("name", list(bad))
    def test_bad(name):
        assert found(bad[name], codes) == expected(bad[name], codes) != set()

    @pytest.mark.parametrize("name", list(good))
    def test_good(name):
        assert found(good[name], codes) == set()

    return test_bad, test_good
