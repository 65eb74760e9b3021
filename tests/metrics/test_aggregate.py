"""Aggregation of per-clip values: statistics against numpy/scipy, and the rules for +inf and missing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from metrics.aggregate import Accumulator, summarize, summarize_table, t_interval

RNG_VALUES = np.random.default_rng(7).normal(31.0, 2.5, size=23)  # e.g. PSNR of 23 clips


@pytest.mark.parametrize("confidence", [0.95, 0.90, 0.99])
def test_finite_statistics_match_scipy(confidence):
    v = RNG_VALUES
    s = summarize(v, confidence=confidence)
    assert s.kind == "finite" and (s.n, s.n_inf, s.n_missing) == (23, 0, 0)
    assert s.mean == pytest.approx(np.mean(v), abs=1e-12)
    assert s.std == pytest.approx(np.std(v, ddof=1), abs=1e-12)
    assert s.median == pytest.approx(np.median(v), abs=1e-12)
    lo, hi = stats.t.interval(confidence, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_ci_is_wider_than_normal_for_small_samples():
    """With n = 3 Student's t (4.303) must be used, not the normal 1.96."""
    v = np.array([0.10, 0.12, 0.17])
    lo, hi = t_interval(v)
    sem = np.std(v, ddof=1) / math.sqrt(3)
    assert (hi - lo) / 2 == pytest.approx(4.302652729911275 * sem, rel=1e-9)


def test_reference_row_all_inf_is_identical_not_averaged():
    s = summarize([math.inf] * 5)
    assert s.kind == "all_inf" and s.n == 0 and s.n_inf == 5
    assert s.mean == math.inf and s.median == math.inf
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert s.display() == "identical (inf)"


def test_mix_of_finite_and_inf_reports_the_inf_count():
    v = [30.0, 32.0, math.inf, 34.0, math.inf]
    s = summarize(v)
    assert s.kind == "mixed_inf" and s.n == 3 and s.n_inf == 2
    assert s.mean == pytest.approx(32.0) and math.isfinite(s.mean)
    assert s.median == pytest.approx(32.0)
    assert "(+2 inf)" in s.display()


def test_missing_and_unavailable_are_excluded_and_counted():
    values = [0.1, math.nan, 0.3, 0.2, 0.5]
    statuses = ["ok", "unavailable", "ok", "ok", "failed"]  # a failed row never counts, even with a number
    s = summarize(values, statuses)
    assert (s.n, s.n_missing) == (3, 2)
    assert s.mean == pytest.approx(0.2)
    assert "[2 missing]" in s.display()
    with pytest.raises(ValueError):
        summarize([1.0, 2.0], ["ok"])


def test_degenerate_sizes():
    one = summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert one.display() == "0.500"
    empty = summarize([math.nan, math.nan], ["unavailable", "unavailable"])
    assert empty.kind == "empty" and empty.n_missing == 2 and math.isnan(empty.mean)
    assert empty.display() == "n/a (2 missing)"
    same = summarize([0.25, 0.25, 0.25])
    assert same.std == 0.0 and same.ci_low == same.ci_high == 0.25
    assert math.isnan(summarize([math.inf, -math.inf]).mean)  # opposite infinities have no mean


def test_summarize_table_on_results_schema_rows():
    from bench.results import ResultRow, to_frame

    def row(method, metric, value, status="ok", clip="c"):
        return ResultRow(run_id="r", dataset="demo", split="test", request_id=f"{method}/{clip}", kind="self",
                         clip_id=clip, audio_clip=clip, subject="s", method=method, metric=metric,
                         family=metric.lower(), value=value if status == "ok" else math.nan, status=status,
                         reason="" if status == "ok" else "weights absent", unit="dB", better="higher",
                         published=True, n_frames=10, hardware="h")

    rows = [row("reference", "PSNR", math.inf, clip=f"c{i}") for i in range(3)]
    rows += [row("wav2lip", "PSNR", v, clip=f"c{i}") for i, v in enumerate([29.0, 31.0, 30.0])]
    rows += [row("wav2lip", "LPIPS-Alex", math.nan, "unavailable", clip=f"c{i}") for i in range(3)]
    table = summarize_table(to_frame(rows))
    by = {(r.method, r.metric): r for r in table.itertuples()}
    assert by[("reference", "PSNR")].display == "identical (inf)"
    w = by[("wav2lip", "PSNR")]
    assert w.n == 3 and w.mean == pytest.approx(30.0)
    lo, hi = stats.t.interval(0.95, 2, loc=30.0, scale=stats.sem([29.0, 31.0, 30.0]))
    assert w.ci_low == pytest.approx(lo) and w.ci_high == pytest.approx(hi)
    lp = by[("wav2lip", "LPIPS-Alex")]
    assert lp.kind == "empty" and lp.n_missing == 3


def test_accumulator():
    acc = Accumulator()
    acc.extend("frozen", "SSIM", [0.8, 0.9])
    acc.add("frozen", "SSIM", math.nan, "failed")
    acc.add("reference", "PSNR", math.inf)
    s = acc.summaries()
    assert list(s) == [("frozen", "SSIM"), ("reference", "PSNR")]
    assert s[("frozen", "SSIM")].n == 2 and s[("frozen", "SSIM")].n_missing == 1
    assert s[("reference", "PSNR")].kind == "all_inf"
