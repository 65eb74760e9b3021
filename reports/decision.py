"""Hardware section (fps per method per machine) and the 2D-vs-3D decision table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from bench.results import method_label
from reports.exports import PlainTable
from reports.format import fmt_number, fmt_seconds
from reports.load import Bundle, section
from reports.plots import fit_summary, spec_of, steps_text
from reports.tables import Cell, Table, cell_export_text, is_speed, make_cell, method_order

KIND_LABELS = {"baseline": "baseline", "2d": "2D", "3d": "3D"}
FIT_SCOPE_LABELS = {
    "none": "no",
    "dataset": "no (trained once per dataset)",
    "subject": "yes, per person",
}
ORIGIN_LABELS = {
    "official": "official weights",
    "user": "user-supplied weights",
    "trained-by-suite": "trained by the suite (not the official weights)",
    "bundled": "weights bundled with the suite",
}


@dataclass(frozen=True)
class Machine:
    id: str
    label: str
    details: tuple[tuple[str, str], ...]
    runs: tuple[str, ...]


@dataclass(frozen=True)
class HardwareSection:
    machines: tuple[Machine, ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]        # method, one fps cell per machine
    stages: tuple[tuple[str, str, str], ...]               # method, machine label, "model 12 ms, ..."
    flagged: tuple[str, ...] = ()                          # degenerate methods (reports/flags.py)
    precision: tuple[tuple[str, str, str], ...] = ()       # component, machine label, "generate fp32 (why); ..."


def _details(hw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    from bench.hardware import isa_summary

    gpu = hw.get("gpu")
    if isinstance(gpu, Mapping):
        gpu_text = f"{gpu.get('name', '?')} ({gpu.get('memory_gb', '?')} GB) x{gpu.get('count', 1)}"
    else:
        gpu_text = "none"
    cuda = hw.get("cuda") or ("none" if hw and not isinstance(gpu, Mapping) else None)
    family = (f"{hw.get('cpu_vendor') or '?'} family {hw.get('cpu_family') or '?'} model "
              f"{hw.get('cpu_model_number') or '?'}") if hw.get("fingerprint_version") else None
    isa = hw.get("cpu_isa")
    isa_text = None
    if isinstance(isa, Mapping):
        isa_text = isa_summary(dict(isa)) + " (" + (", ".join(k for k, v in isa.items() if v) or "none") + ")"
    keys = [("CPU", hw.get("cpu_model")), ("CPU family", family), ("CPU features", isa_text),
            ("cores", hw.get("cpu_cores")), ("memory", (
                f"{hw.get('memory_gb')} GB" if hw.get("memory_gb") is not None else None)), ("GPU", gpu_text),
            ("GPU driver", hw.get("gpu_driver") if isinstance(gpu, Mapping) else "none"),
            ("torch", hw.get("torch")), ("CUDA", cuda), ("platform", hw.get("platform"))]
    return tuple((k, "unknown" if v is None else str(v)) for k, v in keys)


def machines(bundle: Bundle) -> tuple[Machine, ...]:
    out = []
    for hid in dict.fromkeys(list(bundle.hardware) + [str(h) for h in bundle.results["hardware"].dropna().unique()]):
        runs = tuple(r.run_id for r in bundle.runs if r.hardware_id == hid)
        out.append(Machine(hid, bundle.hardware_label(hid), _details(bundle.hardware.get(hid, {})), runs))
    return tuple(out)


def _stage_text(rows) -> str:
    """Mean milliseconds per frame of each timed stage, from the fps rows' extra["stages"]."""
    totals: dict[str, float] = {}
    frames = 0
    for extra_text, n in zip(rows["extra"], rows["n_frames"]):
        try:
            extra = json.loads(str(extra_text))
        except ValueError:
            continue
        stages = extra.get("stages") or {}
        count = int(extra.get("frames") or n or 0)
        if not stages or count <= 0:
            continue
        frames += count
        for k, v in stages.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    if not frames:
        return ""
    return ", ".join(f"{k} {fmt_number(1000.0 * v / frames, sig=3)} ms" for k, v in totals.items()) + " per frame"


def hardware_section(pr, bundle: Bundle, flags: Mapping[str, Any] | None = None) -> HardwareSection:
    """fps per method per machine (machines never pool: each fingerprint id is its own column)."""
    ms = machines(bundle)
    speed = pr[pr["family"].map(is_speed)]
    methods = method_order([str(m) for m in speed["method"].unique()]) if len(speed) else []
    rows, stages = [], []
    for m in methods:
        cells = []
        for mach in ms:
            sub = speed[(speed["method"] == m) & (speed["hw_key"] == mach.id)]
            cells.append(make_cell(sub))
            ok = sub[sub["status"] == "ok"]
            text = _stage_text(ok) if len(ok) else ""
            if text:
                stages.append((m, mach.label, text))
        rows.append((m, tuple(cells)))
    return HardwareSection(ms, tuple(rows), tuple(stages), tuple(m for m in methods if m in (flags or {})),
                           precision_lines(bundle))


def precision_lines(bundle: Bundle) -> tuple[tuple[str, str, str], ...]:
    """What each network ran at, as the runs' manifests record it (bench.precision): fps at bf16 and
    at fp32 differ by up to 2x on one machine, so a speed is read next to its precision.
    (component, machine label, "generate fp32 (fp32 for a faithful result); train ..."), one line per
    distinct text."""
    out: dict[tuple[str, str, str], None] = {}
    for run in bundle.runs:
        machine = bundle.hardware_label(run.hardware_id)
        components = [(method_label(str(n), str(e.get("variant") or "")), e)
                      for n, e in section(run.manifest, "methods").items() if isinstance(e, Mapping)]
        components += [(f"metric {n}", e) for n, e in section(run.manifest, "metrics").items() if isinstance(e, Mapping)]
        for name, entry in components:
            used = entry.get("precision")
            parts = [f"{role} {p['name']}" + (f" ({p['reason']})" if p.get("reason") else "")
                     for role, p in (used.items() if isinstance(used, Mapping) else ())
                     if isinstance(p, Mapping) and p.get("name")]
            if parts:
                out[(name, machine, "; ".join(parts))] = None
    return tuple(out)


@dataclass(frozen=True)
class DecisionRow:
    method: str
    kind: str
    description: str
    quality: tuple[Cell, ...]
    fps: tuple[tuple[str, Cell], ...]          # machine label, cell
    training: str
    data_per_subject: str
    per_subject_training: str
    weights: str
    caveats: tuple[str, ...]
    flag: str = ""            # degenerate output: why (reports/flags.py)
    unavailable: str = ""     # "not run / unavailable: <reason>" for a method or kind without results


@dataclass(frozen=True)
class DecisionTable:
    quality_titles: tuple[str, ...]
    rows: tuple[DecisionRow, ...]


# Both kinds the decision is about: each always gets a row, with a reason when it has no results.
DECISION_KINDS = ("2d", "3d")


def _quality_columns(table: Table, limit: int = 6) -> list[int]:
    """Non-speed columns, cross-driven sync preferred to self-driven (the harder, relevant test)."""
    picked = [j for j, c in enumerate(table.columns) if not is_speed(c.family) and c.kind in (None, "cross")]
    return picked[:limit]  # the page's table: columns without any value are already collapsed


def _training_text(entries: Sequence[tuple[Any, Mapping[str, Any]]], bundle: Bundle) -> tuple[str, list[str], list[str]]:
    """Training time with its hardware, plus budgets and weight origins seen in the fits."""
    parts, budgets, origins = [], [], []
    for run, entry in entries:
        fs = fit_summary(entry.get("fits") or [])
        budgets += fs["budgets"]
        origins += fs["origins"]
        if fs["steps"] > 0 or fs["seconds"] > 60:
            parts.append(f"{fmt_seconds(fs['seconds'])} for {steps_text(fs)} in {fs['count']} fit(s) "
                         f"on {bundle.hardware_label(run.hardware_id)}")
    text = "; ".join(parts) if parts else "none in this run"
    return text, sorted(set(budgets)), sorted(set(origins))


def decision_table(table: Table, pr, bundle: Bundle, hw: HardwareSection,
                   flags: Mapping[str, Any] | None = None) -> DecisionTable:
    flags = flags or {}
    manifest = bundle.methods_manifest()
    qcols = _quality_columns(table)
    rows = []
    for i, row in enumerate(table.rows):
        if row.is_reference:
            continue
        entries = manifest.get(row.method, [])
        entry = entries[0][1] if entries else {}
        spec = spec_of(entry)
        kind = KIND_LABELS.get(str(spec.get("kind", "")), str(spec.get("kind") or "unknown"))
        fit_scope = str(spec.get("fit_scope") or "")
        training, budgets, origins = _training_text(entries, bundle)
        hw_row = dict(hw.rows).get(row.method, ())
        fps = tuple((mach.label, cell) for mach, cell in zip(hw.machines, hw_row))
        caveats = _caveats(row.method, entries, spec, budgets, origins, pr, bundle)
        flag = flags[row.method].reason if row.method in flags else ""
        if flag:
            caveats.insert(0, flag)
        weights = "; ".join(ORIGIN_LABELS.get(o, o) for o in origins) or (
            "none used" if fit_scope == "none" else "not recorded")
        rows.append(DecisionRow(
            method=row.method, kind=kind, description=str(spec.get("description") or ""),
            quality=tuple(row.cells[j] for j in qcols), fps=fps, training=training,
            data_per_subject=str(spec.get("per_subject_data") or "not stated"),
            per_subject_training=FIT_SCOPE_LABELS.get(fit_scope, fit_scope or "unknown"),
            weights=weights, caveats=tuple(caveats), flag=flag))
    shown = {r.method for r in rows}
    rows += _rows_without_results(manifest, shown, len(qcols), {r.kind for r in rows})
    return DecisionTable(tuple(table.columns[j].export_title for j in qcols), tuple(rows))


def _unavailable_row(method: str, kind: str, description: str, why: str, n_quality: int,
                     spec: Mapping[str, Any] | None = None) -> DecisionRow:
    spec = spec or {}
    text = f"not run / unavailable: {why}"
    cell = Cell("unavailable", "not run", reason=why, tooltip=text)
    fit_scope = str(spec.get("fit_scope") or "")
    return DecisionRow(method=method, kind=kind, description=description, quality=(cell,) * n_quality, fps=(),
                       training="none in these runs",
                       data_per_subject=str(spec.get("per_subject_data") or "not stated"),
                       per_subject_training=FIT_SCOPE_LABELS.get(fit_scope, fit_scope or "unknown"),
                       weights="not used", caveats=(text,), unavailable=text)


def _rows_without_results(manifest, shown: set[str], n_quality: int, kinds_shown: set[str]) -> list[DecisionRow]:
    """A row for every method the manifests name that has no results (with the manifest's reason),
    and one for each of the 2D and 3D kinds that no method of these runs represents."""
    out: list[DecisionRow] = []
    kinds = set(kinds_shown)
    for method, entries in manifest.items():
        if method in shown or method == "reference":
            continue
        entry = entries[0][1]
        spec = spec_of(entry)
        raw_kind = str(spec.get("kind") or "")
        kind = KIND_LABELS.get(raw_kind, raw_kind or "unknown")
        reasons = [f"{e.get('reason')} (run {run.run_id})" if len(entries) > 1 else str(e.get("reason"))
                   for run, e in entries if e.get("available") is False and e.get("reason")]
        why = "; ".join(dict.fromkeys(reasons)) or "no results in these runs"
        out.append(_unavailable_row(method, kind, str(spec.get("description") or ""), why, n_quality, spec))
        kinds.add(kind)
    for raw in DECISION_KINDS:
        label = KIND_LABELS[raw]
        if label not in kinds:
            named = _registered_of_kind(raw)
            why = ("no " + label + " method in these runs" + (f" (known: {', '.join(named)})" if named else ""))
            out.append(_unavailable_row(f"({label} methods)", label, "", why, n_quality))
    return out


def _registered_of_kind(kind: str) -> list[str]:
    """Registered methods of `kind` (names only; a broken import never breaks the report)."""
    try:
        from bench.registry import method_registry

        reg = method_registry()
        out = []
        for name in reg.names():
            try:
                if reg.load(name).spec.kind == kind:
                    out.append(name)
            except Exception:
                continue
        return out
    except Exception:
        return []


def _caveats(method: str, entries, spec: Mapping[str, Any], budgets: list[str], origins: list[str],
             pr, bundle: Bundle) -> list[str]:
    out = []
    for run, entry in entries:
        if entry.get("available") is False:
            out.append(f"unavailable in run {run.run_id}: {entry.get('reason') or 'no reason given'}")
    if not entries:
        out.append("not described in any manifest (type, training and weights unknown)")
    short = [b for b in budgets if not b.startswith("full")]
    if short and "trained-by-suite" in origins:
        out.append("training budget " + ", ".join(short) + " (below the published recipe)")
    if spec.get("needs_gpu"):
        cpu_only = [m for m, hw in bundle.hardware.items() if isinstance(hw, Mapping) and not hw.get("gpu")]
        if cpu_only:
            out.append("needs a GPU for its intended speed; some machines here have none")
    mine = pr[pr["method"] == method]
    for status, label in (("failed", "failed"), ("too_short", "too short"), ("unavailable", "unavailable")):
        bad = mine[mine["status"] == status]
        if len(bad):
            names = ", ".join(dict.fromkeys(str(m) for m in bad["metric"]))
            out.append(f"{label}: {names} ({len(bad)} of {len(mine)} scores)")
    return out


def hardware_plain(hw: HardwareSection) -> PlainTable:
    headers = ("method",) + tuple(f"fps @ {m.label} [{m.id}]" for m in hw.machines)
    rows = tuple((m + (" (degenerate output)" if m in hw.flagged else ""),) + tuple(cell_export_text(c) for c in cells)
                 for m, cells in hw.rows)
    return PlainTable("hardware", "Generated frames per second (method compute only) per machine", headers, rows)


def decision_plain(dt: DecisionTable) -> PlainTable:
    fps_titles: list[str] = []
    for r in dt.rows:
        for label, _ in r.fps:
            if label not in fps_titles:
                fps_titles.append(label)
    headers = (("method", "type") + dt.quality_titles + tuple(f"fps @ {t}" for t in fps_titles)
               + ("training", "data per subject", "per-subject training", "weights", "caveats"))
    rows = []
    for r in dt.rows:
        fps = dict(r.fps)
        name = r.method + (" (degenerate output)" if r.flag else "")
        rows.append((name, r.kind) + tuple(r.unavailable or cell_export_text(c) for c in r.quality)
                    + tuple(cell_export_text(fps[t]) if t in fps else "\u2014" for t in fps_titles)
                    + (r.training, r.data_per_subject, r.per_subject_training, r.weights, "; ".join(r.caveats)))
    return PlainTable("decision", "2D vs 3D: quality, speed, training and data needs per method", headers, tuple(rows))

