"""Main-table logic: per-request reduction, cells, statuses, infinities, best marks, columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reports.format import fmt_number
from reports.stats import summarise
from reports.tables import main_table, make_cell, per_request
from tests.reports.rows import frame, row


def _cell(table, method, metric, kind=None, hardware=None):
    j = next(j for j, c in enumerate(table.columns)
             if c.metric == metric and c.kind == kind and c.hardware == hardware)
    return next(r for r in table.rows if r.method == method).cells[j]


def test_fmt_number_keeps_four_significant_digits_and_at_most_four_decimals():
    # Derivation: decimals = min(max(3 - floor(log10|x|), 0), 4).
    assert fmt_number(6.3861) == "6.386"      # floor(log10) = 0 -> 3 decimals
    assert fmt_number(35.6149) == "35.61"     # 1 -> 2 decimals
    assert fmt_number(0.01782) == "0.0178"    # -2 -> 5, capped at 4
    assert fmt_number(0.9482) == "0.9482"     # -1 -> 4
    assert fmt_number(1234.5) == "1234"       # 3 -> 0 decimals (half to even)
    assert fmt_number(182.54) == "182.5"
    assert fmt_number(-0.00001) == "0.0000"   # no "-0.0000"
    assert fmt_number(math.inf) == "inf" and fmt_number(math.nan) == "n/a"


def test_summarise_matches_numpy_and_scipy():
    rng = np.random.default_rng(0)
    v = rng.normal(7.0, 0.5, size=23)
    s = summarise(list(v) + [math.nan])
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert s.n == 23 and s.n_inf == 0
    assert s.mean == pytest.approx(v.mean(), rel=1e-12)
    assert s.std == pytest.approx(v.std(ddof=1), rel=1e-12)
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi), rel=1e-10)


def test_summarise_keeps_infinities_out_of_the_mean():
    s = summarise([30.0, 32.0, math.inf])
    assert (s.n, s.n_inf, s.mean) == (2, 1, 31.0)
    s = summarise([math.inf, math.inf])
    assert s.kind == "all_inf" and s.mean == math.inf and math.isnan(s.std)
    assert summarise([]).n_total == 0


def test_cells_show_mean_std_n_and_identical_for_inf():
    df = frame([row("reference", "PSNR", math.inf, clip="a"), row("reference", "PSNR", math.inf, clip="b"),
                row("m1", "PSNR", 30.0, clip="a"), row("m1", "PSNR", 33.0, clip="b"),
                row("m2", "PSNR", 31.0, clip="a"), row("m2", "PSNR", math.inf, clip="b")])
    t = main_table(per_request(df))
    ref = _cell(t, "reference", "PSNR")
    assert (ref.status, ref.text, ref.n) == ("identical", "identical (inf)", 2)
    m1 = _cell(t, "m1", "PSNR")
    assert (m1.text, m1.spread, m1.n) == ("31.50", f"\u00b1 {fmt_number(np.std([30, 33], ddof=1))}", 2)
    m2 = _cell(t, "m2", "PSNR")
    assert m2.text == "31.00" and m2.n == 2 and "1 identical (inf) not in mean" in m2.note
    assert [r.method for r in t.rows] == ["reference", "m1", "m2"] and t.rows[0].is_reference


def test_status_cells_carry_label_and_reason():
    df = frame([row("m1", "LSE-D", status="unavailable", reason="syncnet_v2.model not found", clip="a"),
                row("m1", "LSE-D", status="unavailable", reason="syncnet_v2.model not found", clip="b"),
                row("m2", "LSE-D", status="too_short", reason="3 frames < 5", clip="a"),
                row("m3", "LSE-D", status="failed", reason="boom", clip="a"),
                row("m4", "LSE-D", 7.0, clip="a"), row("m4", "LSE-D", status="too_short", reason="short", clip="b")])
    t = main_table(per_request(df))
    c = _cell(t, "m1", "LSE-D")
    assert (c.status, c.text, c.reason) == ("unavailable", "unavailable", "syncnet_v2.model not found")
    assert (_cell(t, "m2", "LSE-D").text, _cell(t, "m2", "LSE-D").reason) == ("too short", "3 frames < 5")
    assert (_cell(t, "m3", "LSE-D").text, _cell(t, "m3", "LSE-D").reason) == ("failed", "boom")
    mixed = _cell(t, "m4", "LSE-D")
    assert (mixed.text, mixed.n, mixed.note) == ("7.000", 1, "+1 too short")


@pytest.mark.parametrize("metric,values,best", [
    ("PSNR", {"a": 30.0, "b": 32.0, "c": 31.0}, {"b"}),          # higher
    ("LSE-D", {"a": 7.0, "b": 6.5, "c": 6.5}, {"b", "c"}),       # lower, tie marks both
    ("AV-offset", {"a": -1.0, "b": 3.0, "c": 2.0}, {"a"}),       # closest to zero by |value|
])
def test_best_is_marked_among_non_reference_methods(metric, values, best):
    rows = [row(m, metric, v) for m, v in values.items()]
    rows.append(row("reference", metric, 0.0 if metric == "AV-offset" else (99.0 if metric == "PSNR" else 1.0)))
    t = main_table(per_request(frame(rows)))
    marked = {r.method for r in t.rows for c in r.cells if c.best}
    assert marked == best


@pytest.mark.parametrize("floor,best", [
    (29.0, {"b"}),        # methods beat the floor: the best method is marked, the floor never
    (30.5, {"b"}),        # beats one method: still the best method
    (33.0, set()),        # the floor beats every method: nothing is the method to pick
])
def test_baselines_are_compared_but_never_marked_best(floor, best):
    rows = [row("frozen", "PSNR", floor), row("a", "PSNR", 30.0), row("b", "PSNR", 31.0)]
    t = main_table(per_request(frame(rows)), baselines=frozenset({"frozen"}))
    assert {r.method for r in t.rows for c in r.cells if c.best} == best


def test_one_method_against_a_baseline_is_marked_when_it_beats_it():
    rows = [row("frozen", "LSE-D", 9.0), row("a", "LSE-D", 7.0)]
    t = main_table(per_request(frame(rows)), baselines=frozenset({"frozen"}))
    assert {r.method for r in t.rows for c in r.cells if c.best} == {"a"}


def test_no_best_mark_with_a_single_comparable_method():
    t = main_table(per_request(frame([row("reference", "PSNR", 40.0), row("m", "PSNR", 30.0)])))
    assert not any(c.best for r in t.rows for c in r.cells)


def test_metrics_with_both_kinds_get_a_column_per_kind():
    df = frame([row("m", "LSE-D", 7.0, kind="self"), row("m", "LSE-D", 8.0, kind="cross"),
                row("m", "PSNR", 30.0, kind="self")])
    t = main_table(per_request(df))
    assert [(c.metric, c.kind) for c in t.columns] == [("LSE-D", "self"), ("LSE-D", "cross"), ("PSNR", None)]
    assert _cell(t, "m", "LSE-D", "cross").text == "8.000"


def test_two_runs_on_two_machines_do_not_double_n_and_split_speed():
    rows = []
    for run, hw, fps in (("r1", "cpu", 20.0), ("r2", "gpu", 400.0)):
        for clip in ("a", "b"):
            rows += [row("m", "PSNR", 30.0 if clip == "a" else 32.0, clip=clip, hardware=hw, run_id=run),
                     row("m", "fps", fps, clip=clip, hardware=hw, run_id=run)]
    t = main_table(per_request(frame(rows)), {"cpu": "2-core CPU", "gpu": "H200"})
    assert _cell(t, "m", "PSNR").n == 2 and _cell(t, "m", "PSNR").text == "31.00"
    assert _cell(t, "m", "fps", hardware="cpu").text == "20.00"
    assert _cell(t, "m", "fps", hardware="gpu").text == "400.0"
    assert [c.hardware_label for c in t.columns if c.family == "fps"] == ["2-core CPU", "H200"]


def test_suite_scorer_columns_are_marked_not_published():
    t = main_table(per_request(frame([row("m", "SyncDist", 0.4), row("m", "LSE-D", 7.0)])))
    col = next(c for c in t.columns if c.metric == "SyncDist")
    assert not col.published and "suite scorer" in col.export_title
    assert any("not the published metric" in n for n in t.notes)


def test_make_cell_without_rows_is_a_dash():
    assert make_cell(frame([]).iloc[0:0]).text == "\u2014"


def test_columns_without_any_value_and_one_reason_are_collapsed():
    why = "syncnet_v2.model not found"
    df = frame([row("reference", "LSE-D", status="unavailable", reason=why),
                row("m", "LSE-D", status="unavailable", reason=why),
                row("m", "LSE-C", status="unavailable", reason=why),
                row("reference", "SSIM", status="failed", reason="a"), row("m", "SSIM", status="failed", reason="b"),
                row("reference", "PSNR", 40.0), row("m", "PSNR", status="unavailable", reason=why)])
    from reports.tables import collapse_uniform

    t = collapse_uniform(main_table(per_request(df)))
    assert [c.metric for c in t.columns] == ["PSNR", "SSIM"]  # PSNR has a value, SSIM two reasons
    assert [(c.metrics, c.label, c.reason) for c in t.collapsed] == [(("LSE-D", "LSE-C"), "unavailable", why)]
    assert t.collapsed[0].text == f"LSE-D, LSE-C: unavailable ({why})"
    assert all(len(r.cells) == 2 for r in t.rows)
