"""What kind of file is linted, from its path: unit-test code computes reference values on purpose."""

from __future__ import annotations

import re

_TEST_FILE = re.compile(r"(^|[/\\])(test_[^/\\]*|[^/\\]*_test|conftest)\.py$")
_TEST_DIR = re.compile(r"(^|[/\\])(tests|testing)[/\\]")


def is_test_file(filename: str) -> bool:
    """`test_*.py`, `*_test.py`, `conftest.py`, or anything under a `tests/` or `testing/` folder (pytest
    suites, `torch/testing/_internal`'s reference functions). A `test.py` evaluation script is not."""
    return bool(_TEST_FILE.search(filename) or _TEST_DIR.search(filename))
