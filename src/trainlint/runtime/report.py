"""`--report run.html`: one self-contained HTML file (inline CSS and SVG, no script, no network).

Two plots: the loss of every backward() call (x: batch, i.e. backward call, from 0; epoch boundaries as
dashed lines; short last batches as orange dots) and the global gradient norm per optimizer step (from
0, as training loops count); both on a log scale when the values are positive and span more than a
decade, with round tick values. Each finding is marked where it happened (red line; its code in the
margin above the plot, where no marker can hide it; its message as tooltip) and listed in a table below.
Text labels are drawn after every marker, with a white halo. The legend lists only what is drawn. The
header gives the run's date, duration, and the trainlint and torch versions.
"""

from __future__ import annotations

import html
import math
import os
import re
import time
from bisect import bisect_left
from typing import Any, List, Optional, Sequence, Tuple

W, H = 960, 320  # plot size in px
ML, MR, MT, MB = 70, 20, 44, 40  # margins (the top one holds the findings' labels)
COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
MAX_POINTS = 3000  # per series; more are reduced to min/max per bucket (spikes stay visible)


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _plain(s: Any) -> str:
    """Message text without its Markdown backticks (for tooltips)."""
    return str(s).replace("`", "")


def _rich(s: Any) -> str:
    """Message text as HTML: `name` becomes <code>name</code>, no literal backticks."""
    parts = re.split(r"`([^`]*)`", str(s))
    return "".join(f"<code>{_e(p)}</code>" if i % 2 else _e(p) for i, p in enumerate(parts)).replace("`", "")


def nice_step(span: float, count: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `count` intervals over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / count
    mag = 10.0 ** math.floor(math.log10(raw))
    return min((m * mag for m in (1, 2, 5, 10)), key=lambda st: abs(math.log(st / raw)))


def _label(v: float, step: float) -> str:
    if v == 0:
        return "0"
    decimals = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.3g}"
    return f"{v:.{decimals}f}"


class _Scale:
    def __init__(self, values: Sequence[float], force_linear: bool = False):
        finite = [v for v in values if math.isfinite(v)]
        pos = [v for v in finite if v > 0]
        lo = min(finite) if finite else 0.0
        hi = max(finite) if finite else 1.0
        self.log = (not force_linear and bool(finite) and len(pos) == len(finite)
                    and hi / max(min(pos), 1e-300) > 10.0)
        if self.log:
            self.lo, self.hi = math.log10(min(pos)), math.log10(hi)
        else:
            self.lo, self.hi = lo, hi
        if self.hi - self.lo < 1e-12:
            pad = abs(self.hi) * 0.1 or 1.0
            self.lo, self.hi = self.lo - pad, self.hi + pad
        else:
            pad = (self.hi - self.lo) * 0.05
            self.lo, self.hi = self.lo - pad, self.hi + pad

    def y(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return MT + (H - MT - MB) * (1.0 - (t - self.lo) / (self.hi - self.lo))

    def ticks(self) -> List[Tuple[float, str]]:
        out = []
        if self.log:
            mults = (1, 2, 5) if self.hi - self.lo < 3 else (1,)
            if self.hi - self.lo > 12:
                mults = ()
                stride = math.ceil((self.hi - self.lo) / 10)
                for d in range(math.floor(self.lo), math.ceil(self.hi) + 1):
                    if d % stride == 0 and self.lo <= d <= self.hi:
                        out.append((10.0 ** d, f"1e{d}"))
            for d in range(math.floor(self.lo), math.ceil(self.hi) + 1):
                for m in mults:
                    v = m * 10.0 ** d
                    if self.lo <= math.log10(v) <= self.hi:
                        out.append((v, f"{v:g}" if -3 <= d <= 3 else f"{m}e{d}"))
            if len(out) < 2:  # less than a decade between two powers of ten: round linear steps
                lo, hi = 10 ** self.lo, 10 ** self.hi
                step = nice_step(hi - lo, 4)
                v = math.ceil(lo / step) * step
                out = []
                while v <= hi:
                    if v > 0:
                        out.append((v, _label(v, step)))
                    v += step
        else:
            step = nice_step(self.hi - self.lo)
            v = math.ceil(self.lo / step - 1e-9) * step
            while v <= self.hi + 1e-12 * abs(self.hi):
                out.append((v, _label(0.0 if abs(v) < step * 1e-9 else v, step)))
                v += step
        return out


def _x_scale(x0: float, x1: float):
    span = (x1 - x0) or 1.0

    def x(v: float) -> float:
        return ML + (W - ML - MR) * (v - x0) / span

    return x


def _x_ticks(x0: int, x1: int) -> List[int]:
    span = max(1, x1 - x0)
    raw = span / 8
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    first = (x0 + step - 1) // step * step
    return list(range(int(first), x1 + 1, step))


def _reduce(xs: Sequence[float], ys: Sequence[float]) -> List[Tuple[float, float]]:
    """Keep at most MAX_POINTS points: min and max of each bucket (spikes survive)."""
    pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if len(pts) <= MAX_POINTS:
        return pts
    size = math.ceil(len(pts) / (MAX_POINTS // 2))
    out: List[Tuple[float, float]] = []
    for i in range(0, len(pts), size):
        b = pts[i:i + size]
        lo = min(b, key=lambda p: p[1])
        hi = max(b, key=lambda p: p[1])
        out.extend(sorted({lo, hi}))
    return out


def _frame(scale: _Scale, x0: int, x1: int, xlabel: str, ylabel: str) -> List[str]:
    x = _x_scale(x0, x1)
    out = [f'<rect class="bg" x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}"/>']
    for v, label in scale.ticks():
        yy = scale.y(v)
        out.append(f'<line class="grid" x1="{ML}" x2="{W - MR}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        out.append(f'<text class="tick" x="{ML - 6}" y="{yy + 4:.1f}" text-anchor="end">{_e(label)}</text>')
    for t in _x_ticks(x0, x1):
        xx = x(t)
        out.append(f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{MT}" y2="{H - MB}"/>')
        out.append(f'<text class="tick" x="{xx:.1f}" y="{H - MB + 16}" text-anchor="middle">{t}</text>')
    out.append(f'<text class="axis" x="{(ML + W - MR) / 2}" y="{H - 6}" text-anchor="middle">{_e(xlabel)}</text>')
    out.append(f'<text class="axis" x="14" y="{(MT + H - MB) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(MT + H - MB) / 2})">{_e(ylabel)}'
               f'{" (log scale)" if scale.log else ""}</text>')
    return out


def _finding_marks(diags, xpos, step_to_x) -> Tuple[List[str], List[str]]:
    """(lines, labels): the labels sit in the top margin, above the plot frame, staggered when close."""
    out: List[str] = []
    labels: List[str] = []
    placed: List[Tuple[float, int]] = []
    for d in diags:
        step = (d.runtime or {}).get("step")
        if step is None:
            continue
        xv = step_to_x(step)
        if xv is None:
            continue
        xx = xpos(xv)
        k = 0
        while any(abs(px - xx) < 40 and pk == k for px, pk in placed):
            k += 1
        placed.append((xx, k))
        title = _e(_plain(f"{d.code} at step {step}: {d.message}"))
        out.append(f'<g class="finding"><title>{title}</title>'
                   f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{MT - 4}" y2="{H - MB}"/></g>')
        labels.append(f'<g class="finding"><title>{title}</title>'
                      f'<text class="label" x="{xx:.1f}" y="{MT - 8 - 11 * (k % 3)}" text-anchor="middle">'
                      f'{_e(d.code)}</text></g>')
    return out, labels


def loss_svg(monitor, diags) -> str:
    h = monitor.history
    n = len(h.loss_value)
    if n == 0:
        return '<p class="empty">No loss was recorded (no backward() on a scalar loss).</p>'
    xs = list(range(n))
    values = list(h.loss_value)
    scale = _Scale(values)
    x = _x_scale(0, max(1, n - 1))
    parts = _frame(scale, 0, max(1, n - 1), "batch (backward() call, from 0)", "loss")
    labels: List[str] = []
    # epoch boundaries (lines now, labels after the markers)
    prev = None
    boundaries = 0
    if n and h.loss_epoch[0]:
        labels.append(f'<g class="epoch"><text class="label" x="{x(0) + 2:.1f}" y="{H - MB - 4}">'
                      f'epoch {h.loss_epoch[0]}</text></g>')
    for i, ep in enumerate(h.loss_epoch):
        if ep and ep != prev and prev is not None:
            xx = x(i - 0.5)
            boundaries += 1
            parts.append(f'<g class="epoch"><line x1="{xx:.1f}" x2="{xx:.1f}" y1="{MT}" y2="{H - MB}"/></g>')
            labels.append(f'<g class="epoch"><text class="label" x="{xx + 2:.1f}" y="{H - MB - 4}">'
                          f'epoch {ep}</text></g>')
        prev = ep or prev
    # one line per backward() site
    sites = h.sites
    for sid in range(len(sites)):
        idx = [i for i in xs if h.loss_site[i] == sid]
        pts = _reduce(idx, [values[i] for i in idx])
        if not pts:
            continue
        color = COLORS[sid % len(COLORS)]
        d = " ".join(f"{x(px):.1f},{scale.y(py):.1f}" for px, py in pts)
        parts.append(f'<polyline class="series" stroke="{color}" points="{d}">'
                     f'<title>{_e("loss from " + sites[sid].label())}</title></polyline>')
    # short batches
    shorts = [i for i in xs if h.loss_size[i] and h.loss_full[i] and h.loss_size[i] < h.loss_full[i]
              and math.isfinite(values[i])]
    for i in shorts[:MAX_POINTS]:
        tip = _e(f"short batch: {h.loss_size[i]} of {h.loss_full[i]} samples, epoch {h.loss_epoch[i]}, "
                 f"step {h.loss_step[i]}, loss {values[i]:.4g}")
        parts.append(f'<circle class="short" cx="{x(i):.1f}" cy="{scale.y(values[i]):.1f}" r="4">'
                     f'<title>{tip}</title></circle>')
    # non-finite losses along the top edge
    bad = [i for i in xs if not math.isfinite(values[i])]
    for i in bad[:MAX_POINTS]:
        parts.append(f'<path class="nonfinite" d="M{x(i) - 4:.1f},{MT + 2} l4,7 l4,-7 z">'
                     f'<title>{_e(f"loss {values[i]} at step {h.loss_step[i]}")}</title></path>')
    steps = list(h.loss_step)

    def step_to_x(step):
        i = bisect_left(steps, step)
        return min(i, n - 1) if n else None

    marks, mark_labels = _finding_marks(diags, x, step_to_x)
    parts += marks + labels + mark_labels
    drawn = {sid for sid in range(len(sites)) if any(h.loss_site[i] == sid and math.isfinite(values[i]) for i in xs)}
    legend = [f'<span class="key" style="--c:{COLORS[i % len(COLORS)]}">loss from {_e(s.label())}</span>'
              for i, s in enumerate(sites) if i in drawn]
    if shorts:
        legend.append('<span class="key dot">short last batch</span>')
    if bad:
        legend.append(f'<span class="key bad">NaN/Inf loss ({len(bad)})</span>')
    if boundaries:
        legend.append('<span class="key epochk">epoch boundary</span>')
    if marks:
        legend.append('<span class="key findk">finding</span>')
    return _figure(parts, legend, "loss per batch")


def _figure(parts, legend, label: str) -> str:
    """One plot: the inline SVG and its legend below it."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" aria-label="{label}">{"".join(parts)}</svg>'
            f'<div class="legend">{"".join(legend)}</div>')


def norm_svg(monitor, diags) -> str:
    h = monitor.history
    if not h.norms:
        return '<p class="empty">No optimizer step with gradients was recorded.</p>'
    allv = [v for _, ns in h.norms.values() for v in ns]
    finite_pos = [v for v in allv if math.isfinite(v) and v > 0]
    floor = min(finite_pos) if finite_pos else 1.0
    shown = {lbl: (st, [max(v, floor) if math.isfinite(v) else v for v in ns]) for lbl, (st, ns) in h.norms.items()}
    scale = _Scale([v for _, ns in shown.values() for v in ns])
    x1 = max(max(st) for st, _ in shown.values() if len(st)) if any(len(st) for st, _ in shown.values()) else 1
    x = _x_scale(0, max(1, x1))
    parts = _frame(scale, 0, max(1, x1), "optimizer step (from 0)", "gradient norm")
    bad_total = 0
    for k, (lbl, (st, ns)) in enumerate(shown.items()):
        pts = _reduce(list(st), ns)
        color = COLORS[k % len(COLORS)]
        if pts:
            d = " ".join(f"{x(px):.1f},{scale.y(py):.1f}" for px, py in pts)
            parts.append(f'<polyline class="series" stroke="{color}" points="{d}">'
                         f'<title>{_e("global gradient norm, " + lbl)}</title></polyline>')
        for s_, v in zip(st, ns):
            if not math.isfinite(v):
                bad_total += 1
                if bad_total <= MAX_POINTS:
                    parts.append(f'<path class="nonfinite" d="M{x(s_) - 4:.1f},{MT + 2} l4,7 l4,-7 z">'
                                 f'<title>{_e(f"gradient norm {v} at step {s_}")}</title></path>')
    marks, mark_labels = _finding_marks(diags, x, lambda step: step)
    parts += marks + mark_labels
    legend = [f'<span class="key" style="--c:{COLORS[k % len(COLORS)]}">gradient norm, {_e(lbl)}</span>'
              for k, (lbl, (st, ns)) in enumerate(shown.items()) if any(math.isfinite(v) for v in ns)]
    if bad_total:
        legend.append(f'<span class="key bad">NaN/Inf gradient ({bad_total})</span>')
    if marks:
        legend.append('<span class="key findk">finding</span>')
    return _figure(parts, legend, "gradient norm per step")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555}.empty{color:#777;font-style:italic}
svg{display:block;max-width:100%;height:auto;font-size:11px}
svg .bg{fill:#fcfcfc;stroke:#ccc}svg .grid{stroke:#e6e6e6}svg .tick{fill:#666}svg .axis{fill:#333;font-size:12px}
svg .series{fill:none;stroke-width:1.3;stroke-linejoin:round}
svg .short{fill:#ff7f0e;stroke:#fff;stroke-width:1}
svg .nonfinite{fill:#d62728}
svg .epoch line{stroke:#999;stroke-dasharray:4 3}svg .epoch text{fill:#888;font-size:10px}
svg .finding line{stroke:#d62728;stroke-width:1.5;stroke-dasharray:6 2}svg .finding text{fill:#d62728;font-weight:bold}
svg .label{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.legend{margin:4px 0 0 70px;color:#444;font-size:12px}
.key{margin-right:16px}.key:before{content:"";display:inline-block;width:18px;height:3px;background:var(--c,#888);vertical-align:middle;margin-right:5px}
.key.dot:before{width:8px;height:8px;border-radius:50%;background:#ff7f0e}
.key.bad:before{width:0;height:0;background:none;border:5px solid transparent;border-top:8px solid #d62728}
.key.epochk:before{background:none;border-top:2px dashed #999;height:0}
.key.findk:before{background:none;border-top:2px dashed #d62728;height:0}
table{border-collapse:collapse;width:100%;margin-top:6px}th,td{border-bottom:1px solid #ddd;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.code{font-weight:bold;white-space:nowrap}td.num{white-space:nowrap}
code{font-size:12px}.ev{color:#555;font-size:12px}.ok{color:#2a7a2a;font-weight:bold}
"""


def findings_table(diags) -> str:
    if not diags:
        return '<p class="ok">No findings.</p>'
    rows = []
    for d in diags:
        rt = d.runtime or {}
        ev = ", ".join(f"{k}={v}" for k, v in (rt.get("evidence") or {}).items())
        conf = f" (confirms {rt['confirms']})" if rt.get("confirms") else ""
        rows.append(
            f'<tr><td class="code"><a href="{_e(d.url)}">{_e(d.code)}</a><br><small>{_e(d.name)}</small></td>'
            f'<td class="num">{_e(rt.get("step", ""))}</td><td class="num">{_e(rt.get("epoch") or "")}</td>'
            f'<td><code>{_e(d.filename)}:{d.location.row}</code></td>'
            f'<td>{_rich(d.message)}{_e(conf)}<div class="ev">{_e(ev)}</div></td></tr>')
    return ('<table><thead><tr><th>code</th><th>step</th><th>epoch</th><th>where</th><th>finding</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def run_facts(monitor) -> str:
    """When the run started, how long it took, and the versions (trainlint, torch, Python)."""
    import platform

    import torch

    from trainlint import __version__

    started = getattr(monitor, "started", None)
    ended = getattr(monitor, "ended", None) or time.time()
    parts = []
    if started:
        parts.append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)))
        parts.append(f"{ended - started:.1f} s")
    parts.append(f"trainlint {__version__}")
    parts.append(f"torch {torch.__version__}")
    parts.append(f"Python {platform.python_version()}")
    return " · ".join(parts)


def render_report(monitor, diags, title: Optional[str] = None) -> str:
    h = monitor.history
    meta = (f"{monitor.step} optimizer steps, {len(h.loss_value)} losses"
            + (f", {monitor.epochs} epochs" if monitor.epochs else "")
            + f", {len(diags)} finding{'s' if len(diags) != 1 else ''}")
    title = title or "trainlint run report"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=\"meta\">{_e(meta)}</p><p class=\"meta run\">{_e(run_facts(monitor))}</p>"
        f"<h2>Findings</h2>{findings_table(diags)}"
        f"<h2>Loss per batch</h2>{loss_svg(monitor, diags)}"
        f"<h2>Gradient norm per optimizer step</h2><p class=\"meta\">The steps looked at: "
        f"{_e(monitor.looks_text())}.</p>{norm_svg(monitor, diags)}"
        "</body></html>\n"
    )


def write_report(path: str, monitor, diags, title: Optional[str] = None) -> None:
    text = render_report(monitor, diags, title)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
