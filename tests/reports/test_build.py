"""build_report end to end on small run folders: escaping, merging machines, curves, decision table,
exports and progress."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from bench import manifest as mf
from bench.progress import Progress
from bench.results import write_parquet
from reports.build import _env, build_report
from tests.reports.rows import frame, row

TEMPLATES = Path(__file__).resolve().parents[2] / "reports" / "templates"
HOSTILE = '<img src=x onerror="alert(1)">'


def write_run(root: Path, rows, manifest: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_parquet(root / "results.parquet", frame(rows))
    mf.write(root / "manifest.json", manifest)
    return root


def manifest(run_id: str, hw_id: str, label: str, **extra) -> dict:
    m = {"schema_version": 1, "run_id": run_id, "status": "complete", "command": ["bench", "run"],
         "config": {"dataset": "demo"}, "hardware": {"id": hw_id, "label": label, "cpu_model": label,
                                                     "cpu_cores": 2, "gpu": None},
         "dataset": {"name": "demo", "sync_protocol": "tracked"}, "methods": {}, "metrics": {}}
    m.update(extra)
    return m


def test_templates_escape_everything():
    env = _env()
    assert env.autoescape is True
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text, path
    for path in (TEMPLATES.parent).glob("*.py"):
        assert "Markup(" not in path.read_text(), path


def test_user_data_is_escaped_everywhere(tmp_path):
    rows = [row("reference", "PSNR", 40.0, clip=HOSTILE), row(HOSTILE, "PSNR", 30.0, clip=HOSTILE),
            row(HOSTILE, "LSE-D", status="unavailable", reason=HOSTILE, clip=HOSTILE)]
    m = manifest("r<1>", "hw", HOSTILE, config={"note": HOSTILE, "path": "</pre><script>x()</script>"},
                 methods={HOSTILE: {"available": False, "reason": HOSTILE, "spec": {"description": HOSTILE,
                                                                                   "per_subject_data": HOSTILE}}})
    run = write_run(tmp_path / "run", rows, m)
    html = build_report([run]).read_text()
    assert "<img src=x" not in html and "<script" not in html.lower()
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;" in html


def test_default_folder_exports_and_links(tmp_path):
    run = write_run(tmp_path / "run", [row("reference", "PSNR", 40.0), row("m", "PSNR", 30.0)],
                    manifest("r1", "hw", "cpu"))
    path = build_report([run])
    assert path == run / "report" / "report.html"
    html = path.read_text()
    hrefs = re.findall(r'href="(tables/[^"]+)"', html)
    assert {"tables/main.csv", "tables/main.md", "tables/main.tex", "tables/per_request.csv"} <= set(hrefs)
    assert all((path.parent / h).is_file() for h in hrefs)
    md = (path.parent / "tables" / "main.md").read_text()
    assert "| reference (real video) | identical" not in md and "40.00" in md
    assert 'http-equiv="Content-Security-Policy"' in html and "script-src 'none'" in html
    # nothing is loaded from elsewhere (anchors may link out; sources and stylesheets may not)
    assert not re.search(r'\bsrc="[a-z]*:?//', html) and not re.search(r'<link[^>]*href="[a-z]*:?//', html)


def test_runs_from_two_machines_show_fps_per_machine(tmp_path):
    a = write_run(tmp_path / "a", [row("m", "PSNR", 30.0, hardware="h1", run_id="a"),
                                   row("m", "fps", 20.0, hardware="h1", run_id="a")],
                  manifest("a", "h1", "2-core CPU"))
    b = write_run(tmp_path / "b", [row("m", "PSNR", 30.0, hardware="h2", run_id="b"),
                                   row("m", "fps", 300.0, hardware="h2", run_id="b")],
                  manifest("b", "h2", "H200 GPU"))
    html = build_report([a, b], tmp_path / "out").read_text()
    head = html[html.index('id="hardware-table"'):]
    head = head[: head.index("</thead>")]
    assert "2-core CPU" in head and "H200 GPU" in head
    assert 'data-metric="fps" data-kind="" data-hw="h1"' in html and 'data-hw="h2"' in html
    assert "PSNR vs speed" in html


def test_training_and_sync_curves_are_drawn(tmp_path):
    curve = [9.0 - (0.2 * (15 - abs(i - 14))) for i in range(31)]  # minimum 9 - 0.2 * 15 = 6 at index 14
    rows = [row("m", "LSE-D", min(curve), extra={"curve": curve}), row("reference", "LSE-D", 6.0,
                                                                          extra={"curve": [8.0] * 31})]
    fits = [{"scope": "dataset", "part": "audio2motion", "steps": 200, "seconds": 1800.0, "budget": "quick",
             "weights": [{"role": "audio2motion", "origin": "trained-by-suite"}], "curves": {}},
            {"scope": "subject:obama", "part": "renderer", "steps": 200, "seconds": 1800.0, "budget": "quick",
             "steps_by_part": {"head": 150, "torso": 50}, "resumed_from": {"head": 100, "torso": 0},
             "weights": [{"role": "generator", "origin": "trained-by-suite"}],
             "curves": {"loss": [{"step": s, "l1": 1.0 / (s + 1), "sync": 0.7} for s in range(0, 200, 10)]}}]
    m = manifest("r1", "hw", "cpu", methods={"m": {"available": True, "fits": fits, "spec": {
        "kind": "3d", "fit_scope": "subject", "needs_gpu": True, "per_subject_data": "3-5 min video"}}})
    html = build_report([write_run(tmp_path / "r", rows, m)], tmp_path / "out").read_text()
    assert 'id="training"' in html and "m / subject:obama / renderer / loss" in html
    sync = html[html.index('id="sync-curve"'):]
    sync = sync[: sync.index("</section>")]
    assert sync.count("<polyline") == 2 and "m: min 6.000 at -1" in sync  # shift = index - 15
    decision = html[html.index('id="decision-table"'):]
    decision = decision[: decision.index("</table>")]
    for text in ("3D", "yes, per person", "3-5 min video",
                 "1.00 h for audio2motion 200, head 150, torso 50 steps (head continued from 100) in 2 fit(s)",
                 "trained by the suite", "training budget quick", "needs a GPU"):
        assert text in decision, text


def test_progress_reports_long_work(fixture_run, tmp_path):
    stream = io.StringIO()
    with Progress(mode="log", stream=stream) as progress:
        build_report([fixture_run], tmp_path / "out", progress=progress)
    log = stream.getvalue()
    assert "done report: frame strips" in log and "done report: side-by-side videos" in log
    assert (tmp_path / "out" / "tables" / "main.csv").is_file()


def test_missing_manifest_still_builds_with_a_note(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_parquet(run / "results.parquet", frame([row("m", "PSNR", 30.0)]))
    html = build_report([run]).read_text()
    assert "no manifest.json" in html


def test_unknown_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_report([tmp_path / "nope"])


def test_run_without_results_yet_builds_a_page_that_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    mf.write(run / "manifest.json", {"run_id": "r", "status": "running"})
    html = build_report([run]).read_text()
    assert "No results in these runs yet" in html and "status &#39;running&#39;" in html


def test_baseline_kind_in_the_manifest_keeps_a_method_from_best(tmp_path):
    rows = [row("frozen", "PSNR", 33.0), row("a", "PSNR", 30.0), row("b", "PSNR", 34.0)]
    spec = {"spec": {"kind": "baseline"}}
    run = write_run(tmp_path / "run", rows, manifest("r1", "hw", "cpu", methods={"frozen": spec}))
    html = build_report([run]).read_text()
    best_rows = re.findall(r'<th scope="row"><span class="method">([^<]+)</span>(?:(?!</tr>).)*?best-badge',
                           html, flags=re.S)
    assert best_rows == ["b"]
    # the same rows with frozen a baseline and beating b: no method is marked
    rows[2] = row("b", "PSNR", 31.0)
    run = write_run(tmp_path / "run2", rows, manifest("r2", "hw", "cpu", methods={"frozen": spec}))
    assert "best-badge" not in build_report([run]).read_text().split('id="main-table"')[1].split("</table>")[0]
