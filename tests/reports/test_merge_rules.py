"""What a report never does: crown a broken output, pool what is not comparable, hide a kind.

Acceptance of issue 13: a constant-grey method is flagged and never marked best; two runs with
different suite-trained scorers and signed AV offsets (+15 / -15) merge into per-run scorer columns
and a magnitude summary; fps rows carry the load; the 2D-vs-3D table lists both kinds.
"""

from __future__ import annotations

import json
import re

import pytest

from bench.results import load_run
from reports.build import ReportConfig, build_report
from reports.flags import degenerate_methods
from reports.load import load_bundle
from reports.tables import main_table, per_request
from tests.reports.rows import frame, row
from tests.reports.test_build import manifest, write_run


def _section(html: str, anchor: str, end: str = "</table>") -> str:
    part = html[html.index(anchor):]
    return part[: part.index(end)]


# ------------------------------------------------------------------------------- degenerate outputs


def test_constant_grey_method_is_flagged_everywhere_and_never_marked_best(fixture_run, fixture_report):
    df = load_run(fixture_run)
    check = df[(df.family == "output_check") & (df.metric == "degenerate")]
    # the real output_check metric judged the fixture's videos: grey degenerate, the others not
    assert set(check[check.value == 1.0].method) == {"grey"}
    assert set(check[check.value == 0.0].method) == {"reference", "frozen", "blur"}
    # grey is the fastest method: without its flag it would carry the best badge on fps
    pr = per_request(df)
    unflagged = main_table(pr)
    assert any(c.best for r in unflagged.rows if r.method == "grey" for c in r.cells)
    flags = degenerate_methods(pr)
    assert set(flags) == {"grey"} and "no face detected" in flags["grey"].reason
    flagged = main_table(pr, flags=flags)
    assert not any(c.best for r in flagged.rows if r.method == "grey" for c in r.cells)

    html = fixture_report.read_text()
    main = _section(html, 'id="main-table"')
    grey_row = re.search(r'<tr class="[^"]*degenerate[^"]*" data-method="grey">(.*?)</tr>', main, flags=re.S)
    assert grey_row, "the grey row is marked degenerate"
    assert "degenerate output</span>" in grey_row.group(1) and "best-badge" not in grey_row.group(1)
    reason = re.search(r'<span class="flag-reason">([^<]+)</span>', grey_row.group(1)).group(1)
    assert reason.startswith("degenerate output in 3 of 3 videos: 3 with no face detected in most frames (e.g. "
                             "no face detected in ")
    assert "3 with a flat face region (e.g. face region is flat (pixel std 0.00 &lt; 2 grey levels))" in reason
    # no output_check column: the check is a flag, not a result
    assert 'data-metric="face-found"' not in main and 'data-metric="degenerate"' not in main
    # every chart that draws grey marks it and says why
    charts = re.findall(r'<figure class="chart">(.*?)</figure>', html, flags=re.S)
    with_grey = [c for c in charts if ">grey<" in c or "grey</text>" in c or "\u26a0 grey" in c]
    assert with_grey and all("\u26a0 grey" in c and "\u26a0 grey: degenerate output" in c for c in with_grey)
    assert all(">grey</text>" not in c for c in charts)
    # hardware and decision tables flag it too; the exported main table names it
    assert re.search(r'grey <span class="badge bad"', _section(html, 'id="hardware-table"'))
    decision = _section(html, 'id="decision-table"')
    assert re.search(r'data-method="grey">\s*<th scope="row">grey <span class="badge kind">2D</span>\s*'
                     r'<span class="badge bad">degenerate output</span>', decision)
    md = (fixture_report.parent / "tables" / "main.md").read_text()
    assert "grey (degenerate output)" in md


def test_reasons_are_shown_in_full():
    """No clamp hides a failure reason: the stylesheet shows it whole (the issue's cut-off cell)."""
    from pathlib import Path

    css = (Path(__file__).resolve().parents[2] / "reports" / "templates" / "style.css").read_text()
    rule = css[css.index("td.cell .reason, .reason {"):]
    rule = rule[: rule.index("}")]
    assert "line-clamp" not in rule and "overflow: hidden" not in rule and "ellipsis" not in rule


def test_face_failures_flag_a_method_in_runs_without_the_check():
    """Older runs have no output_check rows: most videos without a face in the face-based metrics flag it."""
    rows = [row("reference", "PSNR", 40.0, clip=c) for c in "ab"]
    rows += [row("wav2lip", "PSNR", 31.0, clip=c) for c in "ab"] + [row("blur", "PSNR", 30.0, clip=c) for c in "ab"]
    rows += [row("wav2lip", "LSE-D", status="failed", reason="tracked protocol: no face found in any of the 100 frames",
                 clip=c) for c in "ab"]
    rows += [row("blur", "LSE-D", 7.0, clip=c) for c in "ab"]
    pr = per_request(frame(rows))
    flags = degenerate_methods(pr)
    assert set(flags) == {"wav2lip"} and "no face found in 2 of 2 videos" in flags["wav2lip"].reason

    def best(t):
        return {(r.method, c.metric) for r in t.rows for c, cell in zip(t.columns, r.cells) if cell.best}

    assert best(main_table(pr)) == {("wav2lip", "PSNR")}   # what the issue saw
    # flagged, it is not compared: blur alone is left, and one method is not "best" of anything
    assert best(main_table(pr, flags=flags)) == set()


# ------------------------------------------------------------------------------------- merge rules


def _suite_run(tmp_path, name: str, scorer_sha: str, sync_c: float, offset: float):
    """One run: frozen baseline with a suite-scorer SyncC and a signed AV offset on two clips."""
    rows = []
    for clip, sign in (("a", 1), ("b", -1)):
        rows += [row("frozen", "SyncC", sync_c, clip=clip, run_id=name, published=False),
                 row("frozen", "AV-offset", sign * offset, clip=clip, run_id=name),
                 row("m", "SyncC", sync_c + 1.0, clip=clip, run_id=name, published=False),
                 row("m", "AV-offset", 0.0 if clip == "a" else 1.0, clip=clip, run_id=name)]
    m = manifest(name, "hw", "cpu", metrics={"sync_suite": {"published": False, "weights": [
        {"role": "suite syncnet", "sha256": scorer_sha, "origin": "trained-by-suite"}]}})
    return write_run(tmp_path / name, rows, m)


@pytest.fixture(autouse=True)
def _suite_units(monkeypatch):
    from tests.reports import rows as rows_mod

    monkeypatch.setitem(rows_mod.UNITS, "SyncC", ("sync_suite", "", "higher"))


def test_two_runs_with_different_suite_scorers_and_signed_offsets(tmp_path):
    a = _suite_run(tmp_path, "run1", "1" * 64, 1.84, 15.0)
    b = _suite_run(tmp_path, "run2", "2" * 64, 7.19, 15.0)
    bundle = load_bundle([a, b])
    pr = per_request(bundle.results)
    t = main_table(pr, baselines=frozenset({"frozen"}))
    cols = {c.title: j for j, c in enumerate(t.columns)}
    # the suite scorers are never pooled: one column per run's scorer, labelled with the run
    assert "SyncC [scorer of run run1]" in cols and "SyncC [scorer of run run2]" in cols
    assert not any(title == "SyncC" for title in cols)
    frozen = next(r for r in t.rows if r.method == "frozen")
    assert frozen.cells[cols["SyncC [scorer of run run1]"]].text == "1.840"
    assert frozen.cells[cols["SyncC [scorer of run run2]"]].text == "7.190"
    assert frozen.cells[cols["SyncC [scorer of run run1]"]].n == 2
    # the published AV offset of the same requests is one column; +15 and -15 are 15 frames off, not 0
    off = frozen.cells[cols["|AV-offset|"]]
    assert off.text == "15.00" and off.spread == "\u00b1 0.000" and off.n == 2
    assert off.note.startswith("0 of 2 within \u00b11")
    mine = next(r for r in t.rows if r.method == "m").cells[cols["|AV-offset|"]]
    assert mine.text == "0.5000" and mine.note.startswith("2 of 2 within \u00b11") and mine.best
    # the same in the page and in the long export
    out = build_report([a, b], tmp_path / "out")
    html = out.read_text()
    assert "SyncC [scorer of run run1]" in html and "|AV-offset|" in html
    records = (tmp_path / "out" / "tables" / "main_long.csv").read_text()
    assert "mean |value|" in records


def test_runs_sharing_one_trained_scorer_pool_it(tmp_path):
    a = _suite_run(tmp_path, "run1", "1" * 64, 2.0, 3.0)
    b = _suite_run(tmp_path, "run2", "1" * 64, 2.0, 3.0)
    t = main_table(per_request(load_bundle([a, b]).results))
    assert [c.title for c in t.columns if c.metric == "SyncC"] == ["SyncC"]


def test_datasets_and_budgets_get_their_own_columns_unless_pooled(tmp_path):
    def one(name, dataset, budget, value):
        rows = [row("m", "PSNR", value, run_id=name, dataset=dataset), row("frozen", "PSNR", 20.0, run_id=name,
                                                                           dataset=dataset)]
        m = manifest(name, "hw", "cpu", config={"dataset": dataset, "budget": budget},
                     dataset={"name": dataset, "sync_protocol": "tracked"})
        return write_run(tmp_path / name, rows, m)

    runs = [one("a", "demo", "quick", 30.0), one("b", "shared", "quick", 20.0), one("c", "demo", "full", 34.0)]
    bundle = load_bundle(runs)
    t = main_table(per_request(bundle.results))
    titles = [c.title for c in t.columns]
    assert titles == ["PSNR [demo, budget quick]", "PSNR [shared, budget quick]", "PSNR [demo, budget full]"]
    m = next(r for r in t.rows if r.method == "m")
    assert [c.text for c in m.cells] == ["30.00", "20.00", "34.00"]
    assert any("each dataset gets its own columns" in n for n in bundle.notes)
    pooled = main_table(per_request(bundle.results, pool=("datasets", "budgets")))
    assert [c.title for c in pooled.columns] == ["PSNR"]
    assert next(r for r in pooled.rows if r.method == "m").cells[0].text == "28.00"
    with pytest.raises(ValueError, match="only"):
        per_request(bundle.results, pool=("hardware",))
    html = build_report(runs, tmp_path / "out", config=ReportConfig(pool=("datasets",))).read_text()
    assert "PSNR [budget quick]" in html and "PSNR [budget full]" in html


def test_variants_of_one_method_are_never_pooled_and_every_place_names_them(tmp_path):
    """nerf_head on the mel front end and on HuBERT are two methods to every table (issue 14)."""
    def one(name, front_end, value):
        v = f"front end: {front_end}"
        rows = [row("nerf_head", "PSNR", value, run_id=name, variant=v), row("frozen", "PSNR", 20.0, run_id=name)]
        m = manifest(name, "hw", "cpu", methods={"nerf_head": {"available": True, "variant": v, "fits": [],
                                                              "spec": {"kind": "3d", "fit_scope": "subject"}}})
        return write_run(tmp_path / name, rows, m)

    runs = [one("a", "mel", 30.0), one("b", "hubert", 34.0)]
    bundle = load_bundle(runs)
    t = main_table(per_request(bundle.results))
    cells = {r.method: r.cells[0].text for r in t.rows}
    assert cells["nerf_head [front end: mel]"] == "30.00" and cells["nerf_head [front end: hubert]"] == "34.00"
    assert "nerf_head" not in cells
    # the manifest entries follow the label: the 2D-vs-3D table still knows the kind of each
    assert set(bundle.methods_manifest()) == {"nerf_head [front end: mel]", "nerf_head [front end: hubert]"}
    html = build_report(runs, tmp_path / "out").read_text()
    decision = _section(html, 'id="decision"')
    assert "nerf_head [front end: mel]" in decision and "nerf_head [front end: hubert]" in decision
    assert decision.count("3D") >= 2


def test_fps_cells_say_when_the_machine_was_busy(tmp_path):
    busy = {"stages": {"model": 1.0}, "frames": 10,
            "load": {"load1_before": 7.9, "load1_after": 8.1, "cores": 2, "busy": True}}
    idle = {"stages": {"model": 1.0}, "frames": 10,
            "load": {"load1_before": 0.5, "load1_after": 1.0, "cores": 2, "busy": False}}
    rows = [row("m", "fps", 3.0, clip="a", extra=busy), row("m", "fps", 4.0, clip="b", extra=idle)]
    t = main_table(per_request(frame(rows)))
    assert t.rows[0].cells[0].note == "1 of 2 timed on a busy machine (load 8.1 on 2 cores)"
    run = write_run(tmp_path / "r", rows, manifest("r", "hw", "cpu"))
    hw = _section(build_report([run]).read_text(), 'id="hardware-table"')
    assert "timed on a busy machine" in hw


# ------------------------------------------------------------------------------------------ 2D vs 3D


def test_decision_table_lists_both_kinds_with_the_reason_one_has_no_results(fixture_report):
    decision = _section(fixture_report.read_text(), 'id="decision-table"')
    nerf = re.search(r'data-method="nerf_head">(.*?)</tr>', decision, flags=re.S)
    assert nerf and '<span class="badge kind">3D</span>' in nerf.group(1)
    assert "not run / unavailable: not implemented yet" in nerf.group(1)
    assert '<span class="badge kind">2D</span>' in decision


def test_a_kind_missing_from_the_manifests_still_gets_a_row(tmp_path):
    from reports.decision import decision_plain, decision_table, hardware_section
    from reports.tables import collapse_uniform

    run = write_run(tmp_path / "r", [row("reference", "PSNR", 40.0), row("m", "PSNR", 30.0)],
                    manifest("r", "hw", "cpu", methods={"m": {"available": True, "spec": {"kind": "2d"}}}))
    bundle = load_bundle([run])
    pr = per_request(bundle.results)
    table = collapse_uniform(main_table(pr))
    dt = decision_table(table, pr, bundle, hardware_section(pr, bundle))
    kinds = {r.kind: r for r in dt.rows}
    assert set(kinds) == {"2D", "3D"}
    assert kinds["3D"].unavailable.startswith("not run / unavailable: no 3D method in these runs")
    assert "nerf_head" in kinds["3D"].unavailable   # the registered 3D methods are named
    plain = decision_plain(dt)
    assert any(r[1] == "3D" and "not run" in r[2] for r in plain.rows)


def test_paper_table_cites_the_shipped_data_file(fixture_report):
    html = fixture_report.read_text()
    paper = _section(html, 'id="paper-table"')
    assert "REFERENCE.md" not in html
    assert "reports/published/wav2lip_lrs2.csv" in paper and "Table 1 (LRS2)" in paper


def test_versions_of_mixed_rows_are_noted(tmp_path):
    rows = [row("m", "PSNR", 30.0, clip="a"), row("m", "PSNR", 31.0, clip="b")]
    df = frame(rows)
    df.loc[0, "commit"], df.loc[1, "commit"] = "a" * 40, "b" * 40
    df.loc[0, "versions"] = json.dumps({"method": "m@1#x"})
    df.loc[1, "versions"] = json.dumps({"method": "m@2#x"})
    from bench.results import write_parquet

    (tmp_path / "r").mkdir()
    write_parquet(tmp_path / "r" / "results.parquet", df)
    from bench import manifest as mf

    mf.write(tmp_path / "r" / "manifest.json", manifest("r", "hw", "cpu"))
    notes = load_bundle([tmp_path / "r"]).notes
    assert any("2 commits" in n for n in notes) and any("different method / metric" in n for n in notes)


def test_hardware_section_says_what_precision_each_network_ran_at(tmp_path):
    """fps differs by up to 2x between bf16 and fp32 on one machine: the report prints each
    component's precision from the manifest next to the speeds, per machine, escaped."""
    fp32 = {"name": "fp32", "requested": "auto", "reason": "no native bf16 <AVX2>", "device": "cpu"}
    bf16 = {"name": "bf16", "requested": "auto", "reason": "native bf16", "device": "cpu"}
    methods = {"nerf_head": {"available": True, "variant": "front end: mel", "spec": {"kind": "3d"},
                             "precision": {"train": fp32, "generate": {**fp32, "reason": "fp32 for a faithful result"}}},
               "frozen": {"available": True, "spec": {"kind": "baseline"}}}
    a = write_run(tmp_path / "a", [row("reference", "PSNR", 40.0, run_id="a"), row("nerf_head", "PSNR", 30.0, hardware="hw1", run_id="a")],
                  manifest("a", "hw1", "zen3", methods=methods,
                           metrics={"sync_suite": {"available": True, "precision": {"scorer": fp32}}}))
    b_methods = {"nerf_head": {**methods["nerf_head"], "precision": {"train": bf16, "generate": bf16}}}
    b = write_run(tmp_path / "b", [row("reference", "PSNR", 40.0, hardware="hw2", run_id="b"), row("nerf_head", "PSNR", 31.0, hardware="hw2", run_id="b")],
                  manifest("b", "hw2", "sapphire", methods=b_methods))
    html = build_report([a, b], tmp_path / "report").read_text()
    items = re.findall(r"<li><strong>([^<]+)</strong> on ([^:]+): ([^<]+)</li>",
                       _section(html, 'id="precision-list"', "</ul>"))
    assert ("nerf_head [front end: mel]", "zen3", "train fp32 (no native bf16 &lt;AVX2&gt;); "
            "generate fp32 (fp32 for a faithful result)") in items
    assert ("nerf_head [front end: mel]", "sapphire", "train bf16 (native bf16); generate bf16 (native bf16)") in items
    assert ("metric sync_suite", "zen3", "scorer fp32 (no native bf16 &lt;AVX2&gt;)") in items
    assert not any(name == "frozen" for name, _, _ in items)   # no network, nothing to say
