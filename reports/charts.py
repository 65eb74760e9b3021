"""Static SVG charts computed in Python and rendered by the (autoescaping) Jinja template.

Why SVG of our own and not plotly: a report with a dozen charts stays a few hundred kB instead of
carrying ~4.6 MB of inlined plotly.js, it needs no JavaScript at all (so a report can be shown with a
strict Content-Security-Policy, printed, or screenshotted without waiting for scripts), and every
label goes through Jinja's escaping because the chart is data (shapes with numeric attributes and
text), never a pre-built markup string. Tooltips use SVG `<title>` elements.

Colours are CSS classes (`s0`..`s7` for series, `ref` for the real video) so light and dark themes
come from the stylesheet.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from reports.format import fmt_number

_TAGS = {"rect", "line", "circle", "text", "path", "polyline", "g"}
_ATTR = re.compile(r"^[a-z][a-z0-9-]*$")
N_SERIES_CLASSES = 8

WIDTH, HEIGHT = 560, 320
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 34, 64


@dataclass(frozen=True)
class Shape:
    """One SVG element: tag and attribute names are fixed by this module; values are escaped on output."""

    tag: str
    attrs: tuple[tuple[str, str], ...]
    text: str = ""
    title: str = ""

    def __post_init__(self) -> None:
        if self.tag not in _TAGS:
            raise ValueError(f"unsupported SVG tag {self.tag!r}")
        for k, _ in self.attrs:
            if not _ATTR.match(k) or k.startswith("on"):
                raise ValueError(f"unsupported SVG attribute {k!r}")


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    shapes: tuple[Shape, ...]
    caption: str = ""
    notes: tuple[str, ...] = field(default=())


def _n(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def shape(tag: str, text: str = "", title: str = "", **attrs: float | str) -> Shape:
    items = tuple((k.rstrip("_").replace("_", "-"), _n(v) if isinstance(v, (int, float)) else str(v))
                  for k, v in attrs.items())
    return Shape(tag, items, text, title)


def series_class(i: int) -> str:
    return f"s{i % N_SERIES_CLASSES}"


# ---------------------------------------------------------------------------------------- scales


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, max(last, first + 1) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks covering [lo, hi] (both > 0)."""
    lo, hi = max(lo, 1e-6), max(hi, 1e-6)
    out = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            out.append(m * 10 ** k)
    inside = [t for t in out if lo / 1.0001 <= t <= hi * 1.0001]
    below = [t for t in out if t < lo]
    above = [t for t in out if t > hi]
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


@dataclass(frozen=True)
class Scale:
    lo: float
    hi: float
    p0: float      # pixel of lo
    p1: float      # pixel of hi
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            a, b, x = math.log10(self.lo), math.log10(self.hi), math.log10(max(v, 1e-12))
        else:
            a, b, x = self.lo, self.hi, v
        t = 0.0 if b == a else (x - a) / (b - a)
        return self.p0 + t * (self.p1 - self.p0)


def tick_label(v: float) -> str:
    return fmt_number(v, sig=3)


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with as many decimals as the tick step needs (0, 0.25, 0.5 -> "0.00", "0.25", "0.50")."""
    if len(ticks) < 2:
        return [tick_label(t) for t in ticks]
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:])) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6:
        decimals += 1   # 2.5, 0.25: one more digit
    if any(abs(t) >= 1e5 for t in ticks):
        return [f"{t:.3g}" for t in ticks]
    return [f"{t:.{decimals}f}" for t in ticks]


def _bottom(height: int, xlabel: str) -> float:
    """Pixel row of the x axis: room for tick labels, plus an axis title when there is one."""
    return height - (MARGIN_B if xlabel else 34)


def _frame(title: str, xlabel: str, ylabel: str, width: int, height: int) -> list[Shape]:
    out = [shape("text", title, x=MARGIN_L, y=20, class_="chart-title")]
    if xlabel:
        out.append(shape("text", xlabel, x=(MARGIN_L + width - MARGIN_R) / 2, y=height - 8,
                         class_="axis-label", text_anchor="middle"))
    if ylabel:
        cy = (MARGIN_T + _bottom(height, xlabel)) / 2
        out.append(shape("text", ylabel, x=14, y=cy, class_="axis-label", text_anchor="middle",
                         transform=f"rotate(-90 14 {_n(cy)})"))
    return out


def _y_axis(ys: Scale, ticks: Sequence[float], x0: float, x1: float) -> list[Shape]:
    out = []
    labels = tick_labels(ticks) if not ys.log else [tick_label(t) for t in ticks]
    for t, label in zip(ticks, labels):
        py = ys(t)
        out.append(shape("line", x1=x0, y1=py, x2=x1, y2=py, class_="grid"))
        out.append(shape("text", label, x=x0 - 6, y=py + 4, class_="tick", text_anchor="end"))
    out.append(shape("line", x1=x0, y1=ys.p0, x2=x0, y2=ys.p1, class_="axis"))
    return out


def _x_axis(xs: Scale, ticks: Sequence[float], y0: float, y1: float) -> list[Shape]:
    out = []
    labels = tick_labels(ticks) if not xs.log else [tick_label(t) for t in ticks]
    for t, label in zip(ticks, labels):
        px = xs(t)
        out.append(shape("line", x1=px, y1=y0, x2=px, y2=y1, class_="grid"))
        out.append(shape("text", label, x=px, y=y0 + 16, class_="tick", text_anchor="middle"))
    out.append(shape("line", x1=xs.p0, y1=y0, x2=xs.p1, y2=y0, class_="axis"))
    return out


def _legend(entries: Sequence[tuple[str, str]], x_right: float, y: float) -> list[Shape]:
    out = []
    for i, (label, cls) in enumerate(entries):
        yy = y + 14 * i
        out.append(shape("rect", x=x_right - 150, y=yy - 8, width=10, height=10, class_=f"{cls} swatch"))
        out.append(shape("text", _short(label, 22), title=label, x=x_right - 136, y=yy + 1, class_="legend"))
    return out


def _short(label: str, n: int = 14) -> str:
    return label if len(label) <= n else label[: n - 1] + "\u2026"


def _range(values: Sequence[float], include_zero: bool = False) -> tuple[float, float]:
    v = [x for x in values if math.isfinite(x)]
    if include_zero:
        v.append(0.0)
    if not v:
        return 0.0, 1.0
    return min(v), max(v)


# ---------------------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Bar:
    label: str
    mean: float           # NaN: no value; +inf: identical (drawn as a labelled marker)
    low: float = math.nan  # error bar (e.g. 95% CI); NaN: none
    high: float = math.nan
    cls: str = "s0"
    tooltip: str = ""


def bar_chart(title: str, bars: Sequence[Bar], ylabel: str, caption: str = "",
              width: int = WIDTH, height: int = HEIGHT - 30) -> Chart:
    """Vertical bars from 0 with error bars; +inf bars become an 'identical (inf)' label."""
    finite = [b.mean for b in bars] + [b.low for b in bars] + [b.high for b in bars]
    lo, hi = _range(finite, include_zero=True)
    ticks = nice_ticks(lo, hi)
    bottom = _bottom(height, "")
    ys = Scale(ticks[0], ticks[-1], bottom, MARGIN_T)
    shapes = _frame(title, "", ylabel, width, height)
    shapes += _y_axis(ys, ticks, MARGIN_L, width - MARGIN_R)
    n = max(len(bars), 1)
    slot = (width - MARGIN_L - MARGIN_R) / n
    bw = min(slot * 0.6, 70)
    base = ys(max(ticks[0], 0.0)) if ticks[0] <= 0 <= ticks[-1] else ys(ticks[0])
    for i, b in enumerate(bars):
        cx = MARGIN_L + slot * (i + 0.5)
        shapes.append(shape("text", _short(b.label), title=b.label, x=cx, y=bottom + 16,
                            class_="tick", text_anchor="middle"))
        if math.isnan(b.mean):
            shapes.append(shape("text", "n/a", title=b.tooltip, x=cx, y=base - 6, class_="bar-note",
                                text_anchor="middle"))
            continue
        if math.isinf(b.mean):
            shapes.append(shape("text", "identical (inf)", title=b.tooltip, x=cx, y=MARGIN_T + 12,
                                class_="bar-note", text_anchor="middle"))
            continue
        top = ys(b.mean)
        shapes.append(shape("rect", title=b.tooltip, x=cx - bw / 2, y=min(top, base), width=bw,
                            height=max(abs(base - top), 0.5), class_=f"{b.cls} bar"))
        if math.isfinite(b.low) and math.isfinite(b.high):
            y_lo, y_hi = ys(b.low), ys(b.high)
            shapes += [shape("line", x1=cx, y1=y_lo, x2=cx, y2=y_hi, class_="errbar"),
                       shape("line", x1=cx - 6, y1=y_lo, x2=cx + 6, y2=y_lo, class_="errbar"),
                       shape("line", x1=cx - 6, y1=y_hi, x2=cx + 6, y2=y_hi, class_="errbar")]
    return Chart(title, width, height, tuple(shapes), caption)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    series: str
    tooltip: str = ""


def scatter_chart(title: str, points: Sequence[Point], xlabel: str, ylabel: str, xlog: bool = True,
                  caption: str = "", width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """Labelled points, one colour per series (e.g. one per machine); log x for speeds."""
    pts = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y) and (p.x > 0 or not xlog)]
    series = list(dict.fromkeys(p.series for p in pts))
    cls = {s: series_class(i) for i, s in enumerate(series)}
    x_lo, x_hi = _range([p.x for p in pts])
    xt = log_ticks(x_lo, x_hi) if xlog and pts else nice_ticks(x_lo, x_hi)
    yt = nice_ticks(*_range([p.y for p in pts]))
    xs = Scale(xt[0], xt[-1], MARGIN_L + 10, width - MARGIN_R - 10, log=xlog and bool(pts))
    ys = Scale(yt[0], yt[-1], height - MARGIN_B, MARGIN_T)
    shapes = _frame(title, xlabel, ylabel, width, height)
    shapes += _y_axis(ys, yt, MARGIN_L, width - MARGIN_R)
    shapes += _x_axis(xs, xt, height - MARGIN_B, MARGIN_T)
    for p in pts:
        px, py = xs(p.x), ys(p.y)
        shapes.append(shape("circle", title=p.tooltip or p.label, cx=px, cy=py, r=5, class_=f"{cls[p.series]} dot"))
        shapes.append(shape("text", _short(p.label, 18), title=p.label, x=px + 7, y=py - 6, class_="point-label"))
    if len(series) > 1 or (series and series[0]):
        shapes += _legend([(s, cls[s]) for s in series], width - MARGIN_R, MARGIN_T + 6)
    notes = () if len(pts) == len(points) else (f"{len(points) - len(pts)} point(s) without a finite value not drawn",)
    return Chart(title, width, height, tuple(shapes), caption, notes)


@dataclass(frozen=True)
class Group:
    """One box: all values (for the quartiles) and a tooltip per value (any indexable sequence)."""

    label: str
    values: Sequence[float]
    tooltips: Sequence[str] = ()
    cls: str = "s0"


def _quantiles(v: Sequence[float]) -> tuple[float, float, float, float, float]:
    """(whisker low, q1, median, q3, whisker high); whiskers at the last points within 1.5 IQR."""
    import numpy as np

    a = np.sort(np.asarray(v, dtype=np.float64))
    q1, med, q3 = (float(x) for x in np.percentile(a, [25, 50, 75]))
    iqr = q3 - q1
    lo = float(a[a >= q1 - 1.5 * iqr].min())
    hi = float(a[a <= q3 + 1.5 * iqr].max())
    return lo, q1, med, q3, hi


def box_chart(title: str, groups: Sequence[Group], ylabel: str, caption: str = "", max_points: int = 300,
              width: int = WIDTH, height: int = HEIGHT - 30) -> Chart:
    """Box (quartiles, 1.5 IQR whiskers) plus every value as a jittered point with its tooltip."""
    all_v = [v for g in groups for v in g.values if math.isfinite(v)]
    yt = nice_ticks(*_range(all_v))
    bottom = _bottom(height, "")
    ys = Scale(yt[0], yt[-1], bottom, MARGIN_T)
    shapes = _frame(title, "", ylabel, width, height)
    shapes += _y_axis(ys, yt, MARGIN_L, width - MARGIN_R)
    slot = (width - MARGIN_L - MARGIN_R) / max(len(groups), 1)
    notes = []
    for i, g in enumerate(groups):
        cx = MARGIN_L + slot * (i + 0.5)
        shapes.append(shape("text", _short(g.label), title=g.label, x=cx, y=bottom + 16,
                            class_="tick", text_anchor="middle"))
        values = [float(v) for v in g.values]
        finite_idx = [k for k, v in enumerate(values) if math.isfinite(v)]
        if len(finite_idx) < len(values):
            notes.append(f"{g.label}: {len(values) - len(finite_idx)} non-finite value(s) not drawn")
        if not finite_idx:
            shapes.append(shape("text", "n/a", x=cx, y=bottom - 6, class_="bar-note", text_anchor="middle"))
            continue
        bw = min(slot * 0.5, 60)
        lo, q1, med, q3, hi = _quantiles([values[k] for k in finite_idx])
        shapes += [
            shape("line", x1=cx, y1=ys(lo), x2=cx, y2=ys(q1), class_="whisker"),
            shape("line", x1=cx, y1=ys(q3), x2=cx, y2=ys(hi), class_="whisker"),
            shape("rect", x=cx - bw / 2, y=ys(q3), width=bw, height=max(ys(q1) - ys(q3), 0.5),
                  class_=f"{g.cls} box", title=f"{g.label}: median {tick_label(med)}, IQR [{tick_label(q1)}, {tick_label(q3)}]"),
            shape("line", x1=cx - bw / 2, y1=ys(med), x2=cx + bw / 2, y2=ys(med), class_="median"),
        ]
        step = max(1, math.ceil(len(finite_idx) / max_points))
        if step > 1:
            notes.append(f"{g.label}: every {step}th of {len(finite_idx)} points drawn")
        # tooltips are looked up only for the points drawn (they may be built lazily)
        for k, idx in enumerate(finite_idx[::step]):
            tip = g.tooltips[idx] if idx < len(g.tooltips) else ""
            jitter = ((k * 0.6180339887) % 1.0 - 0.5) * bw * 0.9  # deterministic, evenly spread
            shapes.append(shape("circle", title=tip or tick_label(values[idx]), cx=cx + jitter, cy=ys(values[idx]),
                                r=2.6, class_=f"{g.cls} pt"))
    return Chart(title, width, height, tuple(shapes), caption, tuple(notes))


@dataclass(frozen=True)
class Series:
    name: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    cls: str = "s0"


def line_chart(title: str, series: Sequence[Series], xlabel: str, ylabel: str, caption: str = "",
               mark_min: bool = False, max_points: int = 400, ylog: bool = False,
               width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """Polylines (downsampled to `max_points`); `mark_min` circles each series' first minimum."""
    clean: list[Series] = []
    for s in series:
        pairs = [(x, y) for x, y in zip(s.xs, s.ys) if math.isfinite(x) and math.isfinite(y) and (y > 0 or not ylog)]
        step = max(1, math.ceil(len(pairs) / max_points))
        kept = pairs[::step] + ([pairs[-1]] if pairs and (len(pairs) - 1) % step else [])
        clean.append(Series(s.name, tuple(p[0] for p in kept), tuple(p[1] for p in kept), s.cls))
    xt = nice_ticks(*_range([x for s in clean for x in s.xs]))
    y_all = [y for s in clean for y in s.ys]
    if ylog and y_all:
        yt = log_ticks(min(y_all), max(y_all))
    else:
        yt = nice_ticks(*_range(y_all))
    xs = Scale(xt[0], xt[-1], MARGIN_L, width - MARGIN_R)
    ys = Scale(yt[0], yt[-1], height - MARGIN_B, MARGIN_T, log=ylog and bool(y_all))
    shapes = _frame(title, xlabel, ylabel, width, height)
    shapes += _y_axis(ys, yt, MARGIN_L, width - MARGIN_R)
    shapes += _x_axis(xs, xt, height - MARGIN_B, MARGIN_T)
    for s in clean:
        if not s.xs:
            continue
        pts = " ".join(f"{_n(xs(x))},{_n(ys(y))}" for x, y in zip(s.xs, s.ys))
        shapes.append(shape("polyline", title=s.name, points=pts, class_=f"{s.cls} curve"))
        if len(s.xs) <= 12:  # sparse series (evaluation every N steps; a single point draws no line)
            shapes += [shape("circle", title=f"{s.name}: {fmt_number(y)} at {x:g}", cx=xs(x), cy=ys(y), r=3,
                             class_=f"{s.cls} dot") for x, y in zip(s.xs, s.ys)]
        if mark_min:
            k = min(range(len(s.ys)), key=lambda i: s.ys[i])
            shapes.append(shape("circle", title=f"{s.name}: min {fmt_number(s.ys[k])} at {s.xs[k]:g}",
                                cx=xs(s.xs[k]), cy=ys(s.ys[k]), r=4, class_=f"{s.cls} dot"))
    shapes += _legend([(s.name, s.cls) for s in clean], width - MARGIN_R, MARGIN_T + 6)
    return Chart(title, width, height, tuple(shapes), caption)
