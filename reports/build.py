"""`bench report runs/<id> [runs/<id2> ...]`: one self-contained report.html with its assets.

The page needs no network and no JavaScript: charts are inline SVG, frames are PNG files and videos
are mp4 files in `<out>/assets/`, the stylesheet is inlined, and a Content-Security-Policy forbids
scripts and any remote fetch. Every string that comes from a run (clip ids, paths, configs, reasons)
reaches the page through Jinja with autoescaping on; nothing is marked safe.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.media import MediaConfig


@dataclass(frozen=True)
class ReportConfig:
    """title: page title; media: frame strips and videos; max_training_charts: curves drawn;
    pool: what the user asks to pool across runs ("datasets", "budgets"; by default nothing is:
    see docs/reports.md, merge rules; suite scorers and machines are never pooled)."""

    title: str = "talkbench report"
    media: MediaConfig = field(default_factory=MediaConfig)
    max_training_charts: int = 12
    pool: tuple[str, ...] = ()


def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,                    # everything, whatever the template's extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _run_info(run) -> dict[str, Any]:
    from reports.load import section

    m = run.manifest
    ds = section(m, "dataset")
    git = section(m, "git")
    return {
        "run_id": run.run_id, "root": str(run.root), "status": m.get("status", "unknown"),
        "created": m.get("created"), "finished": m.get("finished"),
        "command": " ".join(str(a) for a in m.get("command") or []),
        "git": f"{git.get('commit') or 'unknown'}" + (" (dirty)" if git.get("dirty") else ""),
        "history": _history(m),
        "stages": section(m, "stages"),
        "version": m.get("talkbench_version"),
        "dataset": ds.get("name", run.dataset_name), "dataset_description": ds.get("description", ""),
        "dataset_source": ds.get("source", ""), "dataset_hash": ds.get("content_hash", ""),
        "splits": section(ds, "splits"), "pairs": ds.get("pairs"), "sync_protocol": ds.get("sync_protocol"),
        "hardware": run.hardware.get("label") or run.hardware_id,
        "phases": section(m, "phases"),
        "config": json.dumps(m.get("config", {}), indent=1, sort_keys=True, default=str),
        "packages": section(m, "packages"),
        "metrics": section(m, "metrics"),
        "rows": len(run.results),
        "notes": list(run.notes),
    }


def _history(m) -> list[str]:
    """One line per invocation: when, at which commit (the manifest's git is the latest one's)."""
    out = []
    for h in m.get("history") or []:
        if not isinstance(h, dict):
            continue
        git = h.get("git") if isinstance(h.get("git"), dict) else {}
        commit = str(git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
        out.append(f"#{h.get('invocation') or '?'} {h.get('started') or ''} at {commit}"
                   + (f" ({h['note']})" if h.get("note") else ""))
    return out


def baseline_methods(bundle) -> frozenset[str]:
    """Methods whose manifest spec says kind "baseline" (reference, frozen, ...)."""
    from reports.plots import spec_of

    return frozenset(name for name, entries in bundle.methods_manifest().items()
                     if any(spec_of(e).get("kind") == "baseline" for _, e in entries))


def build_report(run_dirs: list[Path], out_dir: Path | None = None, progress=None,
                 config: ReportConfig | None = None) -> Path:
    """Write `<out_dir>/report.html` (default out_dir: `<first run>/report`) and return its path."""
    from bench.cache import atomic_write_text
    from bench.progress import Progress
    from reports import decision, flags as flagging, inputs, media, paper, plots, tables
    from reports.load import load_bundle

    cfg = config or ReportConfig()
    progress = progress or Progress.off()
    run_dirs = [Path(d) for d in run_dirs]
    bundle = load_bundle(run_dirs)  # first: a wrong folder must not get a report/ created in it
    out_dir = Path(out_dir) if out_dir is not None else run_dirs[0] / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    pr = tables.per_request(bundle.results, cfg.pool)
    flags = flagging.degenerate_methods(pr)
    labels = plots.hardware_labels(bundle)
    full = tables.main_table(pr, labels, baseline_methods(bundle), flags)
    table = tables.collapse_uniform(full)   # what the page and the paper exports show
    hw = decision.hardware_section(pr, bundle, flags)
    dt = decision.decision_table(table, pr, bundle, hw, flags)
    pt = paper.paper_table(pr, bundle, flags)
    training, training_notes = plots.training_curves(bundle, cfg.max_training_charts)
    sync_chart, sync_request = plots.sync_curve(bundle.results, flags=flags)
    strips, strip_notes = media.build_strips(bundle, [r.method for r in table.rows], out_dir, cfg.media, progress)

    export_links = _write_exports(out_dir / "tables", table, full, pr, hw, dt, pt, flags)

    context = {
        "title": cfg.title,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "runs": [_run_info(r) for r in bundle.runs],
        "datasets": bundle.dataset_names,
        "notes": list(bundle.notes),
        "table": table,
        "flags": flags,
        "bars": plots.metric_bars(table, flags),
        "speed_charts": plots.quality_vs_speed(table, pr, bundle, flags=flags),
        "distributions": plots.distributions(table, pr, flags),
        "sync_chart": sync_chart,
        "sync_request": sync_request,
        "training": training,
        "training_notes": training_notes,
        "strips": strips,
        "strip_notes": strip_notes,
        "hardware": hw,
        "decision": dt,
        "paper": pt,
        "paper_unverified": paper.UNVERIFIED,
        "exports": export_links,
        "input_checks": inputs.input_checks(bundle.runs),
    }
    html = _env().get_template("report.html").render(**context)
    path = out_dir / "report.html"
    atomic_write_text(path, html)
    progress.log(f"report written to {path}")
    return path


def _write_exports(folder: Path, table, full, pr, hw, dt, pt, flags) -> list[dict[str, Any]]:
    """Tables as CSV / Markdown / LaTeX (+ long CSVs); returns [{title, files: {format: href}}]."""
    from reports import decision, exports, paper
    from reports.tables import cell_export_text

    caption = "Results per method (mean \u00b1 std, n)" + "".join(f"; {c.text}" for c in table.collapsed)
    caption += "".join(f"; {m}: {f.reason}" for m, f in flags.items())

    def label(r) -> str:
        if r.is_reference:
            return r.method + " (real video)"
        return r.method + (" (degenerate output)" if r.flag else "")

    main_plain = exports.PlainTable(
        "main", caption,
        ("method",) + tuple(c.export_title for c in table.columns),
        tuple((label(r),) + tuple(cell_export_text(c) for c in r.cells) for r in table.rows))
    links = []
    for title, plain in (("Main table", main_plain), ("Hardware (fps per machine)", decision.hardware_plain(hw)),
                         ("2D vs 3D decision table", decision.decision_plain(dt)),
                         ("Wav2Lip LRS2 paper table", paper.paper_plain(pt))):
        files = exports.write_table(folder, plain)
        links.append({"title": title, "files": {k: f"tables/{v}" for k, v in files.items()}})
    from reports.tables import table_records

    exports.write_records(folder / "main_long.csv", table_records(full))
    cols = ["method", "metric", "family", "kind", "request_id", "clip_id", "audio_clip", "subject", "hw_key",
            "ctx_label", "value", "status", "reason", "unit", "better", "published", "n_frames", "commit"]
    exports.write_records(folder / "per_request.csv",
                          [{c: r[c] for c in cols} for r in pr[cols].to_dict("records")] if len(pr) else [])
    links.append({"title": "Every cell with mean, std and 95% CI", "files": {"CSV": "tables/main_long.csv"}})
    links.append({"title": "Per-request values (one row per method x metric x request)",
                  "files": {"CSV": "tables/per_request.csv"}})
    return links
