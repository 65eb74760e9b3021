"""Acceptance: reports open in headless Chromium with the right numbers, visible plots and frames,
no network request, and a clip named `<script>alert(1)</script>` shown as text.

Two reports are checked: one from a real `bench run` of the baselines (the runner end to end) and
one from the fixture run (tests/reports/fixture_run.py), which adds finite metric charts, a measured
speed and the quality-vs-speed plot that the baselines cannot have.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.results import load_run
from tests.reports.browser import element_boxes, full_screenshot, open_report
from tests.reports.expected import expected_table
from tests.reports.xss_dataset import XSS_CLIP

pytestmark = pytest.mark.browser


def _dom_cells(b) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(c["method"], c["metric"], c["kind"]): {k: c[k] for k in ("v", "sp", "n", "reason")}
            for c in b.page.evaluate("""() => [...document.querySelectorAll('#main-table td.cell')].map(td => {
                const t = s => { const e = td.querySelector(s); return e ? e.textContent.trim() : ''; };
                return {method: td.dataset.method, metric: td.dataset.metric, kind: td.dataset.kind,
                        v: t('.v'), sp: t('.sp'), n: t('.n'), reason: t('.reason')};
            })""") if c["v"] != "\u2014"}


def _dom_collapsed(b) -> set[tuple[frozenset, str, str]]:
    items = b.page.evaluate("""() => [...document.querySelectorAll('#main-table-collapsed li')].map(li => [
        li.querySelector('.metrics').textContent, li.querySelector('.status').textContent,
        li.querySelector('.why').textContent])""")
    return {(frozenset(m.split(", ")), st, why.strip()[1:-1]) for m, st, why in items}


def _non_blank(img: np.ndarray, box, min_std: float = 8.0) -> bool:
    """The region shows something: its pixels vary (a blank or single-colour area has std ~0)."""
    x, y, w, h = box
    region = img[max(y, 0): y + h, max(x, 0): x + w]
    return region.size > 0 and float(region.astype(np.float32).std()) > min_std


def _check_offline_and_safe(b) -> None:
    remote = [u for u in b.requests if not u.startswith("file://")]
    assert remote == [], f"the report made network requests: {remote}"
    assert b.failed == [], f"requests failed: {b.failed}"
    assert b.dialogs == [], f"a script ran and opened a dialog: {b.dialogs}"
    assert b.page.evaluate("() => document.scripts.length") == 0
    errors = [m for m in b.console if m.startswith("error")]
    assert errors == [], f"console errors (CSP violations?): {errors}"
    broken = b.page.evaluate("() => [...document.images].filter(i => !i.complete || !i.naturalWidth).map(i => i.src)")
    assert broken == [], f"images that did not load: {broken}"


def _check_xss_text(b) -> None:
    """The hostile clip id is text in the DOM: in the strip heading, the page text, no element made of it."""
    headings = b.page.evaluate("() => [...document.querySelectorAll('article.strip h3')].map(h => h.textContent)")
    assert any(XSS_CLIP in h for h in headings), headings
    assert XSS_CLIP in b.page.evaluate("() => document.body.innerText")
    assert b.page.evaluate("() => document.querySelectorAll('script').length") == 0


@pytest.mark.slow
def test_real_run_report_in_chromium(real_run, real_report, tmp_path):
    df = load_run(real_run)
    assert set(df["method"]) == {"reference", "frozen"}
    expected, collapsed = expected_table(df)
    with open_report(real_report) as b:
        assert _dom_cells(b) == expected
        assert _dom_collapsed(b) == collapsed
        # LSE cannot be computed without syncnet_v2.model: said once, with the reason, not as numbers
        assert any({"LSE-D", "LSE-C"} <= set(m) and st == "unavailable" and "syncnet_v2.model" in why
                   for m, st, why in collapsed)
        # The real video's row is there and visibly marked.
        assert b.page.inner_text("#main-table tr.reference th").strip().startswith("reference")
        assert b.page.inner_text("#main-table tr.reference .badge.real").strip() == "real video"
        # PSNR of the real video is +inf in the results: shown in words, not as a number.
        assert expected[("reference", "PSNR", "")]["v"] == "identical (inf)"
        _check_offline_and_safe(b)
        _check_xss_text(b)
        img = full_screenshot(b, tmp_path / "real.png")
        frames = element_boxes(b, "table.frames img")
        assert len(frames) >= 2 * 3 * 2  # ground truth + 2 methods, >= 2 frames, frame + mouth rows
        assert all(_non_blank(img, box) for box in frames)
        posters = element_boxes(b, "figure.video video")
        assert posters and all(_non_blank(img, box) for box in posters)


def test_fixture_report_in_chromium(fixture_run, fixture_report, tmp_path):
    df = load_run(fixture_run)
    expected, collapsed = expected_table(df)
    with open_report(fixture_report) as b:
        assert _dom_cells(b) == expected
        assert _dom_collapsed(b) == collapsed
        best = b.page.evaluate("""() => [...document.querySelectorAll('#main-table td.best')]
                                        .map(td => [td.dataset.method, td.dataset.metric])""")
        # blur beats frozen on both image metrics (the fixture's numbers; the real video is excluded).
        assert sorted(map(tuple, best)) == [("blur", "PSNR"), ("blur", "SSIM")]
        _check_offline_and_safe(b)
        _check_xss_text(b)
        img = full_screenshot(b, tmp_path / "fixture.png")
        charts = element_boxes(b, "figure.chart svg")
        titles = b.page.evaluate("() => [...document.querySelectorAll('figure.chart svg')].map(s => s.getAttribute('aria-label'))")
        assert {"PSNR", "SSIM", "fps", "PSNR vs speed", "PSNR per clip"} <= set(titles)
        assert all(_non_blank(img, box, min_std=4.0) for box in charts)
        # Bars are drawn where the numbers are: each chart has coloured marks (not only axes).
        marks = b.page.evaluate("() => document.querySelectorAll('svg rect.bar, svg circle.dot, svg circle.pt').length")
        assert marks >= 6
        frames = element_boxes(b, "table.frames img")
        assert frames and all(_non_blank(img, box) for box in frames)


def test_dark_scheme_keeps_text_readable(fixture_report, tmp_path):
    """Dark mode: page background dark, table text light (the CSS variables switch together)."""
    with open_report(fixture_report, color_scheme="dark") as b:
        colours = b.page.evaluate("""() => {
            const bg = getComputedStyle(document.body).backgroundColor;
            const fg = getComputedStyle(document.querySelector('#main-table td.cell .v')).color;
            return [bg, fg];
        }""")
    lum = [sum(int(x) for x in c[c.index("(") + 1: c.index(")")].split(",")[:3]) / 3 for c in colours]
    assert lum[0] < 60 and lum[1] > 160, colours
