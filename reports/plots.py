"""Which charts a report shows, built from the per-request rows, the main table and the manifests."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from reports.charts import (Bar, Chart, Group, Point, Series, bar_chart, box_chart, line_chart,
                            scatter_chart, series_class)
from reports.flags import chart_notes, display_name
from reports.format import fmt_number
from reports.load import Bundle, section
from reports.stats import all_inf, summarise
from reports.tables import REFERENCE, Column, RowIndex, Table, is_speed, method_order

SYNC_CURVE_FAMILIES = ("lse", "sync", "sync_suite")   # published scorer first
QUALITY_PREFERENCE = ("lse", "sync", "sync_suite", "psnr", "ssim", "lpips_alex", "lpips_vgg", "lmd")


def _method_classes(methods: Sequence[str]) -> dict[str, str]:
    """Stable colours: the real video is grey, every other method keeps its colour across charts."""
    out, i = {}, 0
    for m in methods:
        if m == REFERENCE:
            out[m] = "ref"
        else:
            out[m] = series_class(i)
            i += 1
    return out


def _axis_label(col: Column) -> str:
    arrow = f" {col.arrow}" if col.arrow else ""
    unit = f" [{col.unit}]" if col.unit else ""
    return f"{col.title}{arrow}{unit}"


def _with_notes(chart: Chart, methods: Sequence[str], flags: Mapping[str, Any]) -> Chart:
    """The chart with one note per flagged (degenerate) method it draws."""
    from dataclasses import replace

    notes = chart_notes(methods, flags)
    return replace(chart, notes=chart.notes + notes) if notes else chart


def metric_bars(table: Table, flags: Mapping[str, Any] | None = None) -> list[Chart]:
    """One bar chart per column: mean per method with its 95% CI as error bar; degenerate methods
    carry the warning sign and their reason under the chart."""
    flags = flags or {}
    classes = _method_classes([r.method for r in table.rows])
    charts = []
    for j, col in enumerate(table.columns):
        bars = []
        for row in table.rows:
            cell = row.cells[j]
            s = cell.summary
            name = display_name(row.method, flags)
            if s is None:
                bars.append(Bar(name, math.nan, cls=classes[row.method], tooltip=cell.text))
                continue
            mean = math.inf if all_inf(s) else s.mean
            bars.append(Bar(name, mean, s.ci_low, s.ci_high, classes[row.method], cell.tooltip))
        if not any(math.isfinite(b.mean) for b in bars):
            continue  # nothing to draw to scale (no values, or only 'identical (inf)')
        title = col.title + (f" @ {col.hardware_label}" if col.hardware else "")
        caption = ("mean per method" + (" of the magnitude" if col.signed else "")
                   + "; error bars: 95% CI of the mean"
                   + ("; suite scorer, not the published metric" if not col.published else ""))
        charts.append(_with_notes(bar_chart(title, bars, _axis_label(col), caption),
                                  [r.method for r in table.rows], flags))
    return charts


def _quality_column(table: Table, family: str) -> int | None:
    for j, col in enumerate(table.columns):
        if col.family == family and col.kind in (None, "self"):
            if any(r.cells[j].summary is not None and not r.is_reference for r in table.rows):
                return j
    return None


def quality_vs_speed(table: Table, pr, bundle: Bundle, max_charts: int = 2,
                     flags: Mapping[str, Any] | None = None) -> list[Chart]:
    """Quality (first sync metric, first image metric) against fps, one colour per machine."""
    flags = flags or {}
    speed_cols = [j for j, c in enumerate(table.columns) if is_speed(c.family)]
    if not speed_cols:
        return []
    picks: list[int] = []
    for group in (("lse", "sync", "sync_suite"), ("psnr", "ssim", "lpips_alex", "lpips_vgg", "lmd")):
        for fam in group:
            j = _quality_column(table, fam)
            if j is not None:
                picks.append(j)
                break
    charts = []
    for j in picks[:max_charts]:
        qcol = table.columns[j]
        points = []
        for row in table.rows:
            q = row.cells[j].summary
            if q is None or not math.isfinite(q.mean):
                continue
            speed = pr[(pr["method"] == row.method) & pr["family"].isin(["fps"]) & (pr["status"] == "ok")]
            for hw, sub in speed.groupby("hw_key", sort=False):
                s = summarise(sub["value"].astype(float).tolist())
                label = bundle.hardware_label(str(hw))
                points.append(Point(s.mean, q.mean, display_name(row.method, flags), label,
                                    f"{row.method} on {label}: {fmt_number(s.mean)} frames/s, "
                                    f"{qcol.title} {fmt_number(q.mean)}"))
        if points:
            chart = scatter_chart(f"{qcol.title} vs speed", points, "frames per second (log scale)",
                                  _axis_label(qcol), "one colour per machine; each point is a method")
            charts.append(_with_notes(chart, [r.method for r in table.rows], flags))
    return charts


def distributions(table: Table, pr, flags: Mapping[str, Any] | None = None) -> list[Chart]:
    """Per-clip values per method (box + every clip as a point; hover shows the clip). Signed
    values are drawn with their sign: the distribution is what their summary cell cannot show."""
    flags = flags or {}
    methods = [r.method for r in table.rows]
    classes = _method_classes(methods)
    charts = []
    index = RowIndex(pr)
    for col in table.columns:
        groups = []
        for m in methods:
            rows = index.rows(col, m)
            rows = rows[rows["status"] == "ok"]
            if not len(rows):
                continue
            values = rows["value"].to_numpy(dtype=float)
            tips = _ClipTips(rows["clip_id"].to_numpy(dtype=object), rows["audio_clip"].to_numpy(dtype=object), values)
            groups.append(Group(display_name(m, flags), values, tips, classes[m]))
        if not groups or max(len(g.values) for g in groups) < 2:
            continue
        name = col.title.replace(f"|{col.metric}|", f"{col.metric} (signed)") if col.signed else col.title
        title = name + (f" @ {col.hardware_label}" if col.hardware else "") + " per clip"
        axis = _axis_label(col).replace(f"|{col.metric}|", col.metric) if col.signed else _axis_label(col)
        chart = box_chart(title, groups, axis, "box: quartiles, whiskers 1.5 IQR; dots: clips")
        charts.append(_with_notes(chart, methods, flags))
    return charts


class _ClipTips:
    """Tooltip of each per-clip point, formatted only when a point is drawn (large runs)."""

    def __init__(self, clips, audios, values):
        self.clips, self.audios, self.values = clips, audios, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, k: int) -> str:
        clip, audio, v = str(self.clips[k]), str(self.audios[k]), float(self.values[k])
        return f"{clip} (audio: {audio}): {fmt_number(v)}" if clip != audio else f"{clip}: {fmt_number(v)}"


def training_curves(bundle: Bundle, max_charts: int = 12) -> tuple[list[Chart], list[str]]:
    """Loss curves logged by method fits (manifest `methods.<m>.fits[].curves`)."""
    charts: list[Chart] = []
    notes: list[str] = []
    total = 0
    for method, entries in sorted(bundle.methods_manifest().items()):
        for run, entry in entries:
            for fit in entry.get("fits") or []:
                if not isinstance(fit, Mapping):
                    continue
                for name, points in sorted((fit.get("curves") or {}).items()):
                    series = _curve_series(points)
                    if not series:
                        continue
                    total += 1
                    if len(charts) >= max_charts:
                        continue
                    part = f" / {fit['part']}" if fit.get("part") else ""
                    title = f"{method} / {fit.get('scope', '?')}{part} / {name}"
                    caption = (f"run {run.run_id} on {bundle.hardware_label(run.hardware_id)}; "
                               f"budget {fit.get('budget', '?')}, {fit.get('steps', '?')} steps")
                    positive = all(y > 0 for s in series for y in s.ys)
                    spread = _dynamic_range(series)
                    charts.append(line_chart(title, series, "step", name, caption,
                                             ylog=positive and spread > 50))
    if total > len(charts):
        notes.append(f"{total - len(charts)} more training curves are in the manifests (not drawn)")
    return charts, notes


def _dynamic_range(series: Sequence[Series]) -> float:
    ys = [y for s in series for y in s.ys if y > 0]
    return max(ys) / min(ys) if ys else 1.0


def _curve_series(points: Any) -> list[Series]:
    """[{"step": 0, "l1": 0.3, "sync": 0.7}, ...] -> one series per loss name."""
    if not isinstance(points, Sequence) or not points:
        return []
    names: list[str] = []
    for p in points:
        if isinstance(p, Mapping):
            names += [k for k in p if k != "step" and k not in names]
    out = []
    for i, name in enumerate(names):
        xs, ys = [], []
        for k, p in enumerate(points):
            if isinstance(p, Mapping) and isinstance(p.get(name), (int, float)):
                xs.append(float(p.get("step", k)))
                ys.append(float(p[name]))
        if xs:
            out.append(Series(name, tuple(xs), tuple(ys), series_class(i)))
    return out


def sync_curve_rows(df):
    """Rows whose extra carries a sync distance curve (31 values), ok only."""
    if not len(df):
        return df
    has = df["extra"].astype(str).str.contains('"curve"', regex=False) & (df["status"] == "ok")
    return df[has & df["family"].isin(list(SYNC_CURVE_FAMILIES))]


def sync_curve(df, clip_request: str | None = None,
               flags: Mapping[str, Any] | None = None) -> tuple[Chart | None, str]:
    """The 31-value sync distance curve of every method for one request (the best-covered one).

    Returns (chart, request id). The curve index i is the audio shift i - 15 frames; LSE-D is its
    minimum, the AV offset is 15 - argmin (syncnet_python, vshift 15).
    """
    rows = sync_curve_rows(df)
    if not len(rows):
        return None, ""
    fam = next(f for f in SYNC_CURVE_FAMILIES if (rows["family"] == f).any())
    rows = rows[rows["family"] == fam]
    if clip_request is None:
        counts = rows.groupby("request_id")["method"].nunique()
        kinds = rows.drop_duplicates("request_id").set_index("request_id")["kind"]
        order = sorted(counts.index, key=lambda r: (-int(counts[r]), kinds[r] != "self", str(r)))
        clip_request = str(order[0])
    sel = rows[rows["request_id"] == clip_request]
    if len(sel) and not bool(sel["published"].all()):
        # a suite-trained scorer is its run's own: curves of different runs' scorers are not drawn together
        sel = sel[sel["run_id"] == sel["run_id"].iloc[0]]
    sel = sel.drop_duplicates("method")
    methods = method_order(list(sel["method"]))
    classes = _method_classes(methods)
    series = []
    for m in methods:
        extra = json.loads(str(sel[sel["method"] == m]["extra"].iloc[0]))
        curve = [float(v) for v in extra.get("curve", [])]
        if not curve:
            continue
        half = (len(curve) - 1) // 2
        series.append(Series(display_name(m, flags or {}), tuple(float(i - half) for i in range(len(curve))),
                             tuple(curve), classes[m]))
    if not series:
        return None, ""
    first = sel.iloc[0]
    clip = str(first["clip_id"])
    audio = str(first["audio_clip"])
    title = f"Sync distance curve ({fam})"
    caption = (f"request {clip_request} - clip {clip}" + (f", audio of {audio}" if audio != clip else "")
               + "; mean SyncNet distance per audio shift; LSE-D = minimum, AV offset = -(shift at minimum)")
    chart = line_chart(title, series, "audio shift (frames)", "mean distance", caption, mark_min=True)
    return _with_notes(chart, methods, flags or {}), clip_request


def hardware_labels(bundle: Bundle) -> dict[str, str]:
    return {hid: bundle.hardware_label(hid) for hid in bundle.hardware}


def fit_summary(fits: Sequence[Any]) -> dict[str, Any]:
    """Sum of steps and seconds over a method's fits in one run, with the budgets and weight origins."""
    steps, seconds, budgets, origins = 0, 0.0, [], []
    by_part: dict[str, int] = {}     # what each part (or each network a part trains) was trained, in all
    resumed: dict[str, int] = {}     # where a fit continued from an earlier, smaller budget
    for f in fits:
        if not isinstance(f, Mapping):
            continue
        steps += int(f.get("steps") or 0)
        seconds += float(f.get("seconds") or 0.0)
        counters = f.get("steps_by_part") or {str(f.get("part") or "model"): int(f.get("steps") or 0)}
        for name, n in counters.items():
            by_part[str(name)] = by_part.get(str(name), 0) + int(n or 0)
        for name, n in (f.get("resumed_from") or {}).items():
            if int(n or 0) > 0:
                resumed[str(name)] = max(resumed.get(str(name), 0), int(n))
        if f.get("budget"):
            budgets.append(str(f["budget"]))
        for w in f.get("weights") or []:
            if isinstance(w, Mapping) and w.get("origin"):
                origins.append(str(w["origin"]))
    return {"steps": steps, "seconds": seconds, "budgets": sorted(set(budgets)),
            "origins": sorted(set(origins)), "count": len(fits), "by_part": by_part, "resumed": resumed}


def steps_text(summary: Mapping[str, Any]) -> str:
    """"expert 40, generator 24 steps (generator continued from 12)": what each part trained."""
    by_part = {k: v for k, v in (summary.get("by_part") or {}).items()}
    if not by_part:
        return f"{summary.get('steps', 0)} steps"
    text = ", ".join(f"{k} {v}" for k, v in sorted(by_part.items())) + " steps"
    resumed = summary.get("resumed") or {}
    if resumed:
        text += " (" + ", ".join(f"{k} continued from {v}" for k, v in sorted(resumed.items())) + ")"
    return text


def spec_of(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return section(entry, "spec")
