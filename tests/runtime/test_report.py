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
    # four epochs: three boundary lines, four labels (one per epoch), four short last batches, the finding
    assert p.classes.count("short") == 4
    assert text.count('<g class="epoch"><line') == 3 and len(re.findall(r">epoch \d+</text>", text)) == 4
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


def _legend(text, title):
    """The legend entries of the plot after the heading `title`."""
    part = text.split(f"<h2>{title}</h2>", 1)[1]
    legend = part.split('<div class="legend">', 1)[1].split("</div>", 1)[0]
    return re.findall(r'<span class="key[^"]*"[^>]*>([^<]*)</span>', legend)


def test_report_header_legend_ticks_and_labels(tmp_path):
    text, w = _report(tmp_path, S.healthy, epochs=2)  # no finding, no NaN, short batches, 2 epochs
    # the run's date, duration and versions
    import trainlint

    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · \d+\.\d s · trainlint ", text)
    assert f"trainlint {trainlint.__version__}" in text and f"torch {torch.__version__}" in text
    # the legend lists only what is drawn: no finding, no NaN here
    loss_keys = _legend(text, "Loss per batch")
    assert "finding" not in loss_keys and not any("NaN" in k for k in loss_keys)
    assert "short last batch" in loss_keys and "epoch boundary" in loss_keys
    assert "finding" not in _legend(text, "Gradient norm per optimizer step")
    # round tick values
    from trainlint.runtime.report import _Scale

    for values in ([0.37, 2.91], [0.0123, 0.0456], [-3.3, 7.7], [0.01, 50.0], [3.0, 9.0]):
        ticks = _Scale(values).ticks()
        assert len(ticks) >= 2, values
        for v, label in ticks:
            assert float(label) == pytest.approx(v, rel=1e-9, abs=1e-12), (values, label)
            mant = f"{abs(v):e}".split("e")[0].rstrip("0").rstrip(".") if v else "0"
            assert mant in ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "2.5", "1.5"), (values, v)
        steps = {round(b[0] - a[0], 12) for a, b in zip(ticks, ticks[1:])}
        assert _Scale(values).log or len(steps) == 1, (values, ticks)
    # both x axes start at 0
    assert text.count('text-anchor="middle">0</text>') >= 2


def test_report_messages_have_no_literal_backticks_and_labels_sit_above_markers(tmp_path):
    text, w = _report(tmp_path, S.no_zero_grad, steps=6)  # TL103 message names `opt`
    assert w.findings and "`" in w.findings[0].message
    body = text.split("<body>", 1)[1]
    assert "`" not in body
    assert "<code>opt</code>" in body
    # the finding's label is in the top margin, drawn after the plot's markers
    svg = body.split("<svg", 2)[1]
    label_pos = svg.index('class="label"')
    assert svg.rfind("<polyline") < label_pos
    y = float(re.search(r'<text class="label" x="[\d.]+" y="([\d.]+)"', svg).group(1))
    from trainlint.runtime.report import MT

    assert y < MT  # above the frame, where no marker is drawn


def test_every_runtime_rule_page_says_steps_count_from_0():
    """JSON "step" is 0-based (the script's own numbering): each runtime rule page says so."""
    import glob
    import os

    pages = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "rules", "TL1*.md")))
    assert len(pages) >= 15
    for page in pages:
        with open(page, encoding="utf-8") as fh:
            text = fh.read()
        assert "counted from 0" in text, page
