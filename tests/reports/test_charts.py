"""SVG chart geometry: ticks, scales, bars to scale, box quantiles, curve minimum, tag safety."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.charts import (Bar, Group, Scale, Series, Shape, bar_chart, box_chart, line_chart, log_ticks,
                            nice_ticks, shape, tick_labels)


@pytest.mark.parametrize("lo,hi", [(0, 7.8), (6.2, 8.1), (-0.5, 0.02), (3, 3), (0.81, 0.96), (12, 4150)])
def test_nice_ticks_cover_the_range_with_round_equal_steps(lo, hi):
    t = nice_ticks(lo, hi)
    assert t[0] <= min(lo, hi) and t[-1] >= max(lo, hi)
    steps = np.diff(t)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    assert 2 <= len(t) <= 12


def test_tick_labels_use_the_decimals_the_step_needs():
    assert tick_labels([0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]
    assert tick_labels([0, 10, 20]) == ["0", "10", "20"]
    assert tick_labels([6.0, 6.5, 7.0]) == ["6.0", "6.5", "7.0"]


def test_log_ticks_bracket_the_range():
    t = log_ticks(3.2, 150)
    assert t[0] <= 3.2 and t[-1] >= 150 and t == sorted(t)


def test_scale_maps_linearly_and_logarithmically():
    s = Scale(0, 10, 100, 0)
    assert s(0) == 100 and s(10) == 0 and s(2.5) == 75
    lg = Scale(1, 100, 0, 200, log=True)
    assert lg(10) == pytest.approx(100)


def test_shapes_refuse_script_tags_and_event_attributes():
    with pytest.raises(ValueError):
        Shape("script", ())
    with pytest.raises(ValueError):
        Shape("rect", (("onload", "x"),))
    with pytest.raises(ValueError):
        Shape("rect", (("href\" onload=\"x", "1"),))
    assert dict(shape("text", "t", class_="a", text_anchor="end").attrs) == {"class": "a", "text-anchor": "end"}


def _rects(chart, cls):
    return [dict(s.attrs) for s in chart.shapes if s.tag == "rect" and cls in dict(s.attrs).get("class", "")]


def test_bars_are_drawn_to_scale_from_zero():
    c = bar_chart("x", [Bar("a", 2.0), Bar("b", 6.0), Bar("c", math.nan), Bar("d", math.inf)], "y")
    bars = _rects(c, "bar")
    assert len(bars) == 2  # NaN and inf are labels, not bars
    h = [float(b["height"]) for b in bars]
    assert h[1] / h[0] == pytest.approx(3.0, rel=1e-2)
    texts = [s.text for s in c.shapes if s.tag == "text"]
    assert "n/a" in texts and "identical (inf)" in texts


def test_error_bars_span_the_interval():
    c = bar_chart("x", [Bar("a", 5.0, 4.0, 6.0), Bar("b", 10.0)], "y")
    err = [dict(s.attrs) for s in c.shapes if s.tag == "line" and dict(s.attrs)["class"] == "errbar"]
    vertical = [e for e in err if e["x1"] == e["x2"]]
    assert len(vertical) == 1
    bar = _rects(c, "bar")[0]
    # bar height is 5 units; the whisker spans 2 units -> 2/5 of the bar height
    span = abs(float(vertical[0]["y1"]) - float(vertical[0]["y2"]))
    assert span / float(bar["height"]) == pytest.approx(0.4, rel=1e-2)


def test_box_chart_uses_numpy_quartiles():
    v = np.arange(1.0, 12.0)
    c = box_chart("x", [Group("m", tuple(v), tuple(f"clip {i}" for i in range(len(v))))], "y")
    box = _rects(c, "box")[0]
    pts = [s for s in c.shapes if s.tag == "circle"]
    assert len(pts) == len(v) and pts[3].title == "clip 3"
    ys = sorted(float(dict(p.attrs)["cy"]) for p in pts)  # pixel rows of the values 1..11
    px_per_unit = (ys[-1] - ys[0]) / 10.0
    q1, q3 = np.percentile(v, [25, 75])
    assert float(box["height"]) == pytest.approx((q3 - q1) * px_per_unit, rel=1e-2)


def test_line_chart_marks_the_first_minimum():
    curve = [9.0, 8.0, 6.5, 7.0, 6.5, 8.0]
    c = line_chart("x", [Series("m", tuple(range(-2, 4)), tuple(curve))], "shift", "d", mark_min=True)
    marker = next(s for s in c.shapes if s.tag == "circle" and "min" in s.title)
    assert marker.title == "m: min 6.500 at 0"
