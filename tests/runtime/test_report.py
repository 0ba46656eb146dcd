"""The HTML report: one valid, self-contained file with the loss and gradient-norm plots."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

torch = pytest.importorskip("torch")

import runtime_scenarios as S  # noqa: E402

from trainlint.runtime import watch  # noqa: E402
from trainlint.runtime.report import MAX_POINTS, _reduce  # noqa: E402

VOID = {"meta", "br", "img", "input", "link", "hr", "area", "base", "col", "embed", "source", "track", "wbr"}
SVG_LEAVES = {"line", "rect", "circle", "path", "polyline"}  # may be self-closed


class _Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.tags = []
        self.errors = []
        self.classes = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.classes.extend(v for k, v in attrs if k == "class")
        for k, v in attrs:
            if k in ("src", "href") and v and tag != "a":
                self.errors.append(f"external reference {tag} {k}={v}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.classes.extend(v for k, v in attrs if k == "class")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()


def _report(tmp_path, fn, **kw):
    path = tmp_path / "run.html"
    with watch(config=False, report=str(path)) as w:
        fn(**kw)
    return path.read_text(encoding="utf-8"), w


def test_report_is_valid_self_contained_html_with_the_plots(tmp_path):
    text, w = _report(tmp_path, S.short_batch_double_division, epochs=4)
    p = _Checker()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert text.startswith("<!DOCTYPE html>")
    assert p.tags.count("svg") == 2 and "polyline" in p.tags and "table" in p.tags
    assert not {"script", "link", "img", "iframe"} & set(p.tags)
    assert "@import" not in text and "url(" not in text
    # four epochs: three boundaries + the label of the first, four short last batches, the finding
    assert p.classes.count("short") == 4
    assert p.classes.count("epoch") == 4
    assert "finding" in p.classes and "TL104" in text
    assert "(log scale)" in text


def test_report_marks_non_finite_values_and_findings(tmp_path):
    text, w = _report(tmp_path, S.log_underflow, steps=10, bad_step=6)
    assert 'class="nonfinite"' in text
    assert text.count('class="finding"') >= 2  # TL101 on both plots
    assert re.search(r"TL101 at step 6", text)


def test_report_without_any_training(tmp_path):
    text, _ = _report(tmp_path, lambda: None)
    assert "No loss was recorded" in text and "No findings" in text


def test_long_series_are_reduced_but_keep_spikes():
    xs = list(range(100_000))
    ys = [1.0] * len(xs)
    ys[54_321] = 1e6
    pts = _reduce(xs, ys)
    assert len(pts) <= MAX_POINTS + 2
    assert max(y for _, y in pts) == 1e6
