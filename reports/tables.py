"""The main results table: method x metric cells with mean, spread, n, status and the best mark.

Rows of the results schema are first reduced to one value per (method, metric, request, context) so
that two runs of the same requests on different machines do not double n; speed (fps) keeps one
value per machine because it is a property of the hardware. The context keeps apart what must not
be pooled (docs/reports.md, "Merge rules"): different datasets and training budgets, and the values
of different suite-trained scorers (each run trains its own). Cells then summarise those
per-request values with `reports.stats.summarise`; signed values (better = "zero", e.g. the AV
offset) are summarised by their magnitude and the share within +-1, never by a signed mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from reports.format import ARROWS, BETTER_WORDS, STATUS_LABELS, fmt_number, status_text
from reports.stats import Summary, all_inf, summarise

REFERENCE = "reference"
SPEED_FAMILIES = ("fps",)
# Column order of families in every table (unknown families follow in order of appearance).
FAMILY_ORDER = ("lse", "sync", "sync_suite", "psnr", "ssim", "lpips_alex", "lpips_vgg", "lpips", "lmd", "fps")
METHOD_ORDER = ("reference", "frozen")  # baselines first, then methods alphabetically
KEYS = ["method", "metric", "kind", "request_id", "hw_key", "ctx_key"]
# Families that are checks, not results: read by reports/flags.py, never a table column.
HIDDEN_FAMILIES = ("output_check",)
# What a report may be asked to pool (ReportConfig.pool); everything else stays apart.
POOLABLE = ("datasets", "budgets")
SIGNED_WITHIN = 1.0   # a signed value (AV offset, frames) counts as "in sync" within +-1


def is_speed(family: str) -> bool:
    return family in SPEED_FAMILIES


def _join(parts: list, sep: str):
    """Row-wise join of string series, skipping empty pieces."""
    import pandas as pd

    out = pd.Series([""] * len(parts[0]), index=parts[0].index, dtype=object)
    for p in parts:
        p = p.astype(str)
        out = out.where(p == "", out.where(out == "", out + sep) + p)
    return out


def add_context(d, pool: Sequence[str] = ()):
    """`ctx_key` / `ctx_label` per row: what must not be pooled with rows of another context.

    - datasets: several datasets in the frame -> each its own context (unless "datasets" in pool);
    - budgets: several training budgets (column `budget`, from the manifests) -> each its own
      (unless "budgets" in pool);
    - suite scorers: unpublished rows of a family scored by several trained scorers (column `scorer`
      from `reports.load.merge`, else one per run id) -> each scorer its own, labelled by run.
    """
    import numpy as np
    import pandas as pd

    bad = [p for p in pool if p not in POOLABLE]
    if bad:
        raise ValueError(f"cannot pool {bad}: only {list(POOLABLE)} (suite scorers and machines never pool)")
    keys, labels = [], []
    if "datasets" not in pool and d["dataset"].nunique() > 1:
        keys.append("ds=" + d["dataset"].astype(str))
        labels.append(d["dataset"].astype(str))
    if "budget" in d.columns and "budgets" not in pool and d["budget"].astype(str).replace("", np.nan).nunique() > 1:
        keys.append("budget=" + d["budget"].astype(str))
        labels.append("budget " + d["budget"].astype(str))
    unpublished = ~d["published"].astype(bool)
    if unpublished.any():
        if "scorer" in d.columns:
            scorer = d["scorer"].astype(str)
            label = d["scorer_label"].astype(str) if "scorer_label" in d.columns else "scorer " + scorer
        else:
            scorer = d["family"].astype(str) + "|run:" + d["run_id"].astype(str)
            label = "scorer of run " + d["run_id"].astype(str)
        counts = scorer[unpublished].groupby(d.loc[unpublished, "family"]).nunique()
        several = unpublished & d["family"].isin([f for f, n in counts.items() if n > 1])
        if several.any():
            keys.append(pd.Series(np.where(several, "scorer=" + scorer, ""), index=d.index))
            labels.append(pd.Series(np.where(several, label, ""), index=d.index))
    if not keys:
        d["ctx_key"], d["ctx_label"] = "", ""
        return d
    d["ctx_key"] = _join(keys, "|")
    d["ctx_label"] = _join(labels, ", ")
    return d


def per_request(df, pool: Sequence[str] = ()):
    """One row per (method, metric, kind, request, machine-for-speed, context): value = mean of the
    ok values (of their magnitudes for signed metrics: +15 and -15 are not "0").

    A request scored ok in any run counts as ok; otherwise the first run's status and reason stay.
    Columns: those of the results schema plus `hw_key` ("" for non-speed metrics) and `ctx_key` /
    `ctx_label` (see `add_context`).
    """
    import numpy as np

    d = df.copy()
    d["hw_key"] = np.where(d["family"].isin(SPEED_FAMILIES), d["hardware"].astype(object), "")
    d = add_context(d, pool)
    if not d.duplicated(KEYS).any():  # one run (the usual case): already one row per request
        return d.reset_index(drop=True)
    d["_ok"] = d["status"] == "ok"
    signed = d["better"] == "zero"
    d.loc[signed & d["_ok"], "value"] = d.loc[signed & d["_ok"], "value"].abs()
    ok_mean = d[d["_ok"]].groupby(KEYS, sort=False)["value"].mean()
    first = d.sort_values("_ok", ascending=False, kind="stable").drop_duplicates(KEYS, keep="first")
    first = first.set_index(KEYS)
    first.loc[ok_mean.index, "value"] = ok_mean
    first.loc[ok_mean.index, "status"] = "ok"
    first.loc[ok_mean.index, "reason"] = ""
    out = first.reset_index().drop(columns=["_ok"])
    return out


def _unique(series) -> list[str]:
    """Distinct values in order of appearance (pandas' unique: fast on arrow-backed strings)."""
    return [str(v) for v in series.unique()]


def method_order(methods: Sequence[str]) -> list[str]:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(dict.fromkeys(methods), key=lambda m: (rank.get(m, len(rank)), m))


@dataclass(frozen=True)
class Column:
    """One table column: a metric value, optionally for one request kind or one machine."""

    metric: str
    family: str
    unit: str
    better: str
    published: bool
    kind: str | None = None          # "self" / "cross" when the metric has rows of both kinds
    hardware: str | None = None      # speed columns when several machines are merged
    hardware_label: str = ""
    context: str | None = None       # dataset / budget / suite scorer when several are merged
    context_label: str = ""

    @property
    def key(self) -> tuple[str, str | None, str | None, str | None]:
        return (self.metric, self.kind, self.hardware, self.context)

    @property
    def signed(self) -> bool:
        """Closest-to-0 values (AV offset): the cell summarises their magnitude."""
        return self.better == "zero"

    @property
    def title(self) -> str:
        t = f"|{self.metric}|" if self.signed else self.metric
        if self.kind:
            t += f" ({self.kind})"
        if self.context:
            t += f" [{self.context_label or self.context}]"
        return t

    @property
    def arrow(self) -> str:
        return ARROWS.get(self.better, "")

    @property
    def better_words(self) -> str:
        return BETTER_WORDS.get(self.better, "")

    @property
    def export_title(self) -> str:
        """Plain-text header for CSV / Markdown / LaTeX."""
        t = self.title + (f" {self.arrow}" if self.arrow else "")
        if self.unit:
            t += f" [{self.unit}]"
        if self.hardware:
            t += f" @ {self.hardware_label or self.hardware}"
        if not self.published:
            t += " (suite scorer)"
        return t


@dataclass(frozen=True)
class Cell:
    """A table cell. `text` is what the page shows as the value (and what tests compare)."""

    status: str                  # "ok", "identical", a results status, or "empty"
    text: str                    # the value ("6.386"), "identical (inf)", or the status label
    reason: str = ""             # why there is no value (non-ok cells)
    spread: str = ""             # "± 0.123" (sample std) or ""
    n: int = 0
    note: str = ""               # "+2 too short", "1 identical (inf) not in mean"
    tooltip: str = ""
    summary: Summary | None = None
    best: bool = False


@dataclass(frozen=True)
class Row:
    method: str
    is_reference: bool
    cells: tuple[Cell, ...]
    flag: str = ""               # why the method's output is degenerate (reports/flags.py), shown in full


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    collapsed: tuple["Collapsed", ...] = ()


@dataclass(frozen=True)
class Collapsed:
    """Columns in which every method has the same missing status and reason (e.g. LSE without the
    SyncNet weights): shown once under the table instead of as a wall of identical cells."""

    metrics: tuple[str, ...]
    status: str
    reason: str

    @property
    def label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def text(self) -> str:
        return f"{', '.join(self.metrics)}: {status_text(self.status, self.reason)}"


def _family_rank(families: Sequence[str]) -> dict[str, int]:
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    for f in families:
        rank.setdefault(f, len(rank))
    return rank


def columns_for(pr, hardware_labels: dict[str, str] | None = None) -> list[Column]:
    """Columns in family order; kinds split when a metric has rows of both; speed split by machine."""
    hardware_labels = hardware_labels or {}
    if not len(pr):
        return []
    metrics = _unique(pr["metric"])
    families = _unique(pr["family"])
    rank = _family_rank(families)
    cols: list[Column] = []
    has_ctx = "ctx_key" in pr.columns
    for metric in metrics:
        msub = pr[pr["metric"] == metric]
        family = str(msub["family"].iloc[0])
        if family in HIDDEN_FAMILIES:
            continue
        unit = str(msub["unit"].iloc[0] or "")
        better = str(msub["better"].iloc[0] or "")
        contexts = _unique(msub["ctx_key"]) if has_ctx else [""]
        for ctx in contexts:
            sub = msub[msub["ctx_key"] == ctx] if len(contexts) > 1 else msub
            published = bool(sub["published"].all())
            c_key = ctx if len(contexts) > 1 else None
            c_label = str(sub["ctx_label"].iloc[0]) if c_key is not None else ""
            if is_speed(family):
                machines = _unique(sub["hw_key"])
                if len(machines) > 1:
                    for hw in machines:
                        cols.append(Column(metric, family, unit, better, published, None, str(hw),
                                           hardware_labels.get(str(hw), str(hw)), c_key, c_label))
                else:
                    cols.append(Column(metric, family, unit, better, published, context=c_key, context_label=c_label))
                continue
            kinds = [k for k in ("self", "cross") if (sub["kind"] == k).any()]
            for kind in (kinds if len(kinds) > 1 else [None]):
                cols.append(Column(metric, family, unit, better, published, kind, context=c_key, context_label=c_label))
    order = {m: i for i, m in enumerate(metrics)}
    kind_rank = {None: 0, "self": 0, "cross": 1}
    # stable: machines and contexts keep their order of appearance
    cols.sort(key=lambda c: (rank[c.family], order[c.metric], kind_rank.get(c.kind, 2)))
    return cols


class RowIndex:
    """Per-request rows grouped once by (method, metric): large runs (CMLR: 20k clips x methods x
    metrics) would otherwise be scanned once per table cell."""

    def __init__(self, pr):
        self.empty = pr.iloc[0:0]
        self.groups = {(str(m), str(k)): g for (m, k), g in pr.groupby(["method", "metric"], sort=False)} \
            if len(pr) else {}

    def rows(self, col: Column, method: str):
        sub = self.groups.get((method, col.metric), self.empty)
        if col.kind:
            sub = sub[sub["kind"] == col.kind]
        if col.hardware:
            sub = sub[sub["hw_key"] == col.hardware]
        if col.context is not None:
            sub = sub[sub["ctx_key"] == col.context]
        return sub


def column_rows(pr, col: Column, method: str):
    """Rows of one method in one column (use `RowIndex` when asking for many cells)."""
    return RowIndex(pr[(pr["method"] == method) & (pr["metric"] == col.metric)]).rows(col, method)


def make_cell(rows) -> Cell:
    """Summarise one method x column: numbers from ok rows, otherwise the dominant status and reason."""
    if not len(rows):
        return Cell("empty", "\u2014", tooltip="no rows for this method and metric")
    is_ok = (rows["status"] == "ok").to_numpy(dtype=bool)
    ok, others = rows[is_ok], rows[~is_ok]
    # counts in order of first appearance, so ties resolve to the first status / reason seen
    other_counts = {str(k): int(v) for k, v in others["status"].value_counts(sort=False).items()}
    missing_note = ", ".join(f"+{c} {STATUS_LABELS.get(s, s)}" for s, c in sorted(other_counts.items()))
    if not len(ok):
        status = max(other_counts, key=lambda k: other_counts[k])
        reason_counts = others[others["status"] == status]["reason"].value_counts(sort=False)
        reason = str(max(reason_counts.index, key=lambda k: reason_counts[k])) if len(reason_counts) else ""
        distinct = len(reason_counts)
        tip = f"{len(others)} rows, none ok" + (f"; {distinct} different reasons" if distinct > 1 else "")
        return Cell(status, STATUS_LABELS.get(status, status), reason=reason, n=0, tooltip=tip)
    values = ok["value"].to_numpy(dtype=float)
    signed = str(rows["better"].iloc[0]) == "zero"
    if signed:  # +15 and -15 are two videos far out of sync, not one in sync on average
        values = abs(values)
    s = summarise(values)
    notes = [missing_note] if missing_note else []
    if all_inf(s):
        return Cell("identical", "identical (inf)", n=s.n_total, note=", ".join(notes), summary=s,
                    tooltip=f"all {s.n_inf} values are +inf: generated frames identical to ground truth")
    if s.n_inf:
        notes.append(f"{s.n_inf} identical (inf) not in mean")
    if signed:
        finite = values[~(values == math.inf)]
        within = int((finite <= SIGNED_WITHIN).sum())
        notes.insert(0, f"{within} of {len(finite)} within \u00b1{SIGNED_WITHIN:g}")
    busy = _busy_note(ok) if str(rows["family"].iloc[0]) in SPEED_FAMILIES else ""
    if busy:
        notes.append(busy)
    spread = f"\u00b1 {fmt_number(s.std)}" if not math.isnan(s.std) else ""
    what = "mean |value|" if signed else "mean"
    tip = f"n={s.n_total}, {what}={fmt_number(s.mean)}"
    if not math.isnan(s.std):
        tip += f", std={fmt_number(s.std)}, 95% CI [{fmt_number(s.ci_low)}, {fmt_number(s.ci_high)}]"
    return Cell("ok", fmt_number(s.mean), spread=spread, n=s.n_total, note=", ".join(notes), tooltip=tip, summary=s)


def _busy_note(ok) -> str:
    """"2 of 3 timed on a busy machine (load 7.9 on 2 cores)" from fps rows' extra["load"]."""
    import json

    busy, peak, cores = 0, 0.0, 0
    for text in ok["extra"]:
        try:
            load = json.loads(str(text)).get("load") or {}
        except (ValueError, AttributeError):
            continue
        if load.get("busy"):
            busy += 1
            readings = [x for x in (load.get("load1_before"), load.get("load1_after")) if isinstance(x, (int, float))]
            if readings and max(readings) > peak:
                peak, cores = max(readings), int(load.get("cores") or 0)
    if not busy:
        return ""
    return f"{busy} of {len(ok)} timed on a busy machine (load {peak:.1f} on {cores} cores)"


def _score_for_best(cell: Cell, better: str) -> float | None:
    s = cell.summary
    if s is None or cell.status not in ("ok", "identical"):
        return None
    value = math.inf if all_inf(s) else s.mean
    if math.isnan(value):
        return None
    if better == "higher":
        return -value
    if better == "lower":
        return value
    if better == "zero":
        return abs(value)
    return None


def mark_best(cells: list[Cell], roles: list[str], better: str) -> list[Cell]:
    """Mark the best cell(s) among rows of role "method".

    roles: "reference" (never compared), "degenerate" (a broken output, reports/flags.py: never
    compared, never marked), "baseline" (compared, never marked) or "method". Needs at least two
    comparable rows, and the best method must be at least as good as every baseline: when the
    floor beats every method, no method is the one a reader should pick.
    """
    from dataclasses import replace

    scores = [None if role in ("reference", "degenerate") else _score_for_best(c, better)
              for c, role in zip(cells, roles)]
    if sum(s is not None for s in scores) < 2:
        return cells
    methods = [s for s, role in zip(scores, roles) if s is not None and role == "method"]
    if not methods:
        return cells
    best = min(methods)
    if any(s is not None and role == "baseline" and s < best and not math.isclose(s, best, rel_tol=1e-12)
           for s, role in zip(scores, roles)):
        return cells
    return [replace(c, best=True) if role == "method" and s is not None
            and (s == best or math.isclose(s, best, rel_tol=1e-12)) else c
            for c, s, role in zip(cells, scores, roles)]


def main_table(pr, hardware_labels: dict[str, str] | None = None,
               baselines: frozenset[str] = frozenset(), flags: Mapping[str, Any] | None = None) -> Table:
    """Method x metric table from per-request rows (see `per_request`).

    `baselines` (methods of kind "baseline", e.g. `frozen`) are compared but never marked best;
    `flags` (method -> reports.flags.Flag: degenerate outputs) are never compared nor marked, and
    their rows carry the reason (see `mark_best`).
    """
    flags = flags or {}
    cols = columns_for(pr, hardware_labels)
    shown = pr[~pr["family"].isin(list(HIDDEN_FAMILIES))] if len(pr) else pr
    methods = method_order(_unique(shown["method"])) if len(shown) else []
    index = RowIndex(pr)
    grid = [[make_cell(index.rows(c, m)) for c in cols] for m in methods]
    roles = ["reference" if m == REFERENCE else "degenerate" if m in flags else "baseline" if m in baselines
             else "method" for m in methods]
    for j, col in enumerate(cols):
        marked = mark_best([grid[i][j] for i in range(len(methods))], roles, col.better)
        for i in range(len(methods)):
            grid[i][j] = marked[i]
    rows = tuple(Row(m, m == REFERENCE, tuple(grid[i]), flags[m].reason if m in flags else "")
                 for i, m in enumerate(methods))
    notes = []
    if flags:
        notes.append("Rows marked 'degenerate output' produced videos without a detectable face (or with a flat "
                     "face region) in most requests: their numbers are shown but never marked best.")
    if any(c.signed for c in cols):
        notes.append(f"|value| columns (closest to 0 is better, e.g. the AV offset in frames) show the mean "
                     f"magnitude and how many videos are within \u00b1{SIGNED_WITHIN:g}; a signed mean would let "
                     "+15 and -15 read as perfectly in sync.")
    if any(c.context for c in cols):
        notes.append("Columns marked [..] hold one dataset, training budget or suite-trained scorer each: "
                     "those are never pooled (docs/reports.md, merge rules).")
    if any(not c.published for c in cols):
        notes.append("Columns marked 'suite scorer' come from a model the suite trained itself: "
                     "they are not the published metric of that name and are not comparable to papers.")
    if any(c.kind for c in cols):
        notes.append("Metrics scored on both self-driven (own audio) and cross-driven (other audio) "
                     "requests are shown per kind.")
    return Table(tuple(cols), rows, tuple(notes))


def collapse_uniform(table: Table) -> Table:
    """The table without columns whose every filled cell has one and the same non-ok status and
    reason; those columns are listed in `collapsed` (grouped by status and reason)."""
    keep: list[int] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for j, col in enumerate(table.columns):
        filled = [r.cells[j] for r in table.rows if r.cells[j].status != "empty"]
        kinds = {(c.status, c.reason) for c in filled}
        if filled and len(kinds) == 1 and filled[0].status not in ("ok", "identical"):
            names = groups.setdefault(next(iter(kinds)), [])
            if col.metric not in names:
                names.append(col.metric)
        else:
            keep.append(j)
    rows = tuple(Row(r.method, r.is_reference, tuple(r.cells[j] for j in keep), r.flag) for r in table.rows)
    collapsed = tuple(Collapsed(tuple(m), st, reason) for (st, reason), m in groups.items())
    notes = table.notes if any(table.columns[j].kind for j in keep) else tuple(
        n for n in table.notes if "per kind" not in n)
    return Table(tuple(table.columns[j] for j in keep), rows, notes, table.collapsed + collapsed)


def cell_export_text(cell: Cell) -> str:
    """The cell as one plain string for Markdown / LaTeX: value, spread, n and notes."""
    if cell.status not in ("ok", "identical"):
        return status_text(cell.status, cell.reason) if cell.reason else cell.text
    parts = [cell.text]
    if cell.spread:
        parts.append(cell.spread)
    parts.append(f"(n={cell.n})")
    if cell.note:
        parts.append(f"[{cell.note}]")
    return " ".join(parts)


def table_records(table: Table) -> list[dict[str, Any]]:
    """Long-form records (one per cell) for the CSV export."""
    out = []
    for row in table.rows:
        for col, cell in zip(table.columns, row.cells):
            s = cell.summary
            out.append({
                "method": row.method, "is_reference": row.is_reference, "degenerate": row.flag,
                "metric": col.metric, "statistic": "mean |value|" if col.signed else "mean",
                "kind": col.kind or "", "hardware": col.hardware or "", "context": col.context_label, "unit": col.unit,
                "better": col.better, "published": col.published, "status": cell.status,
                "text": cell.text, "reason": cell.reason, "n": cell.n,
                "mean": s.mean if s else math.nan, "std": s.std if s else math.nan,
                "ci95_low": s.ci_low if s else math.nan, "ci95_high": s.ci_high if s else math.nan,
                "n_inf": s.n_inf if s else 0, "best": cell.best, "note": cell.note,
            })
    return out
