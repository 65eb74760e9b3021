"""The main results table: method x metric cells with mean, spread, n, status and the best mark.

Rows of the results schema are first reduced to one value per (method, metric, request) so that two
runs of the same requests on different machines do not double n; speed (fps) keeps one value per
machine because it is a property of the hardware. Cells then summarise those per-request values
with `reports.stats.summarise`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from reports.format import ARROWS, BETTER_WORDS, STATUS_LABELS, fmt_number, status_text
from reports.stats import Summary, all_inf, summarise

REFERENCE = "reference"
SPEED_FAMILIES = ("fps",)
# Column order of families in every table (unknown families follow in order of appearance).
FAMILY_ORDER = ("lse", "sync", "sync_suite", "psnr", "ssim", "lpips_alex", "lpips_vgg", "lpips", "lmd", "fps")
METHOD_ORDER = ("reference", "frozen")  # baselines first, then methods alphabetically
KEYS = ["method", "metric", "kind", "request_id", "hw_key"]


def is_speed(family: str) -> bool:
    return family in SPEED_FAMILIES


def per_request(df):
    """One row per (method, metric, kind, request, machine-for-speed): value = mean of the ok values.

    A request scored ok in any run counts as ok; otherwise the first run's status and reason stay.
    Columns: those of the results schema plus `hw_key` ("" for non-speed metrics).
    """
    import numpy as np

    d = df.copy()
    d["hw_key"] = np.where(d["family"].isin(SPEED_FAMILIES), d["hardware"].astype(object), "")
    if not d.duplicated(KEYS).any():  # one run (the usual case): already one row per request
        return d.reset_index(drop=True)
    d["_ok"] = d["status"] == "ok"
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

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.metric, self.kind, self.hardware)

    @property
    def title(self) -> str:
        t = self.metric
        if self.kind:
            t += f" ({self.kind})"
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
    for metric in metrics:
        sub = pr[pr["metric"] == metric]
        family = str(sub["family"].iloc[0])
        unit = str(sub["unit"].iloc[0] or "")
        better = str(sub["better"].iloc[0] or "")
        published = bool(sub["published"].all())
        if is_speed(family):
            machines = _unique(sub["hw_key"])
            if len(machines) > 1:
                for hw in machines:
                    cols.append(Column(metric, family, unit, better, published, None, str(hw),
                                       hardware_labels.get(str(hw), str(hw))))
            else:
                cols.append(Column(metric, family, unit, better, published))
            continue
        kinds = [k for k in ("self", "cross") if (sub["kind"] == k).any()]
        for kind in (kinds if len(kinds) > 1 else [None]):
            cols.append(Column(metric, family, unit, better, published, kind))
    order = {m: i for i, m in enumerate(metrics)}
    kind_rank = {None: 0, "self": 0, "cross": 1}
    cols.sort(key=lambda c: (rank[c.family], order[c.metric], kind_rank.get(c.kind, 2)))  # stable: machines keep order
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
    s = summarise(ok["value"].to_numpy(dtype=float))
    notes = [missing_note] if missing_note else []
    if all_inf(s):
        return Cell("identical", "identical (inf)", n=s.n_total, note=", ".join(notes), summary=s,
                    tooltip=f"all {s.n_inf} values are +inf: generated frames identical to ground truth")
    if s.n_inf:
        notes.append(f"{s.n_inf} identical (inf) not in mean")
    spread = f"\u00b1 {fmt_number(s.std)}" if not math.isnan(s.std) else ""
    tip = f"n={s.n_total}, mean={fmt_number(s.mean)}"
    if not math.isnan(s.std):
        tip += f", std={fmt_number(s.std)}, 95% CI [{fmt_number(s.ci_low)}, {fmt_number(s.ci_high)}]"
    return Cell("ok", fmt_number(s.mean), spread=spread, n=s.n_total, note=", ".join(notes), tooltip=tip, summary=s)


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

    roles: "reference" (never compared), "baseline" (compared, never marked) or "method". Needs
    at least two comparable rows, and the best method must be at least as good as every baseline:
    when the floor beats every method, no method is the one a reader should pick.
    """
    from dataclasses import replace

    scores = [None if role == "reference" else _score_for_best(c, better) for c, role in zip(cells, roles)]
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
               baselines: frozenset[str] = frozenset()) -> Table:
    """Method x metric table from per-request rows (see `per_request`).

    `baselines` (methods of kind "baseline", e.g. `frozen`) are compared but never marked best
    (see `mark_best`).
    """
    cols = columns_for(pr, hardware_labels)
    methods = method_order(_unique(pr["method"])) if len(pr) else []
    index = RowIndex(pr)
    grid = [[make_cell(index.rows(c, m)) for c in cols] for m in methods]
    roles = ["reference" if m == REFERENCE else "baseline" if m in baselines else "method" for m in methods]
    for j, col in enumerate(cols):
        marked = mark_best([grid[i][j] for i in range(len(methods))], roles, col.better)
        for i in range(len(methods)):
            grid[i][j] = marked[i]
    rows = tuple(Row(m, m == REFERENCE, tuple(grid[i])) for i, m in enumerate(methods))
    notes = []
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
    rows = tuple(Row(r.method, r.is_reference, tuple(r.cells[j] for j in keep)) for r in table.rows)
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
                "method": row.method, "is_reference": row.is_reference, "metric": col.metric,
                "kind": col.kind or "", "hardware": col.hardware or "", "unit": col.unit,
                "better": col.better, "published": col.published, "status": cell.status,
                "text": cell.text, "reason": cell.reason, "n": cell.n,
                "mean": s.mean if s else math.nan, "std": s.std if s else math.nan,
                "ci95_low": s.ci_low if s else math.nan, "ci95_high": s.ci_high if s else math.nan,
                "n_inf": s.n_inf if s else 0, "best": cell.best, "note": cell.note,
            })
    return out
