"""Paper-table reproduction: published Wav2Lip LRS2 LSE numbers next to the suite's own.

The published numbers are data shipped with the package (reports/published/wav2lip_lrs2.csv, each
row with its source - paper and table, or issue thread - its URL and whether it was checked against
that source); this module only reads them and adds the suite's rows from LRS2 runs. The page cites
each row's own source and the data file, never a document outside the package.
The protocol follows the Wav2Lip paper: generated rows are cross-driven (audio of another clip,
the 14,239 LRS2 evaluation pairs); the real-video row is the reference on its own audio.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

from reports.exports import PlainTable
from reports.format import fmt_number
from reports.load import Bundle, section
from reports.tables import REFERENCE, Cell, cell_export_text, make_cell, method_order

PAPER_DATASET = "lrs2"
DATA_FILE = "reports/published/wav2lip_lrs2.csv"
UNVERIFIED = f"not checked against the source yet; as transcribed in {DATA_FILE}"
LSE_FAMILY = "lse"
VALUES = ("LSE-D", "LSE-C")


@dataclass(frozen=True)
class PublishedRow:
    key: str
    label: str
    group: str
    lse_d: float
    lse_c: float
    source: str
    url: str
    verified: bool
    note: str
    lse_d_text: str = ""   # as printed by the source (keeps its precision: 7.15 stays 7.15)
    lse_c_text: str = ""


@dataclass(frozen=True)
class SuiteRow:
    label: str
    method: str
    cells: tuple[Cell, ...]    # LSE-D, LSE-C
    protocol: str


@dataclass(frozen=True)
class PaperTable:
    title: str
    published: tuple[PublishedRow, ...]
    suite: tuple[SuiteRow, ...]
    note: str                  # why suite cells are empty, or the protocol used
    comparable: bool


def load_published(name: str = "wav2lip_lrs2.csv") -> tuple[PublishedRow, ...]:
    text = resources.files("reports.published").joinpath(name).read_text(encoding="utf-8")
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append(PublishedRow(r["key"], r["label"], r["group"], float(r["lse_d"]), float(r["lse_c"]),
                                 r["source"], r["url"], r["verified"].strip().lower() == "yes", r["note"],
                                 r["lse_d"].strip(), r["lse_c"].strip()))
    return tuple(rows)


def _protocol(bundle: Bundle) -> str:
    parts = []
    for run in bundle.runs:
        ds = section(run.manifest, "dataset")
        proto = ds.get("sync_protocol") or "unknown"
        pairs = ds.get("pairs")
        parts.append(f"run {run.run_id}: dataset {ds.get('name', run.dataset_name)}, sync protocol "
                     f"{proto!s}" + (f", {pairs} cross-driving pairs" if pairs is not None else ""))
    return "; ".join(parts)


def paper_table(pr, bundle: Bundle, flags=None) -> PaperTable:
    """Published rows plus one suite row per method of the runs (empty cells with a reason if not LRS2);
    degenerate methods (reports/flags.py) say so in their label."""
    flags = flags or {}
    published = load_published()
    if len(pr):
        pr = pr[~pr["family"].isin(["output_check"])]
    title = "Wav2Lip paper, Table 1: LSE on LRS2"
    datasets = bundle.dataset_names
    lse = pr[pr["family"] == LSE_FAMILY] if len(pr) else pr
    methods = method_order([str(m) for m in pr["method"].unique()]) if len(pr) else []
    if datasets != [PAPER_DATASET]:
        why = (f"this report's runs are on {', '.join(datasets)}, not LRS2: no suite numbers are comparable to "
               "this table (run `bench run --dataset lrs2` to fill it)")
        empty = tuple(SuiteRow(_label(m, flags), m, tuple(Cell("empty", "\u2014", tooltip=why) for _ in VALUES), "")
                      for m in methods)
        return PaperTable(title, published, empty, why, False)
    if not len(lse):
        why = "the published LSE metric (family 'lse', syncnet_v2.model) was not computed in these runs"
        empty = tuple(SuiteRow(_label(m, flags), m, tuple(Cell("empty", "\u2014", tooltip=why) for _ in VALUES), "")
                      for m in methods)
        return PaperTable(title, published, empty, why, False)
    rows = []
    for m in methods:
        mine = lse[lse["method"] == m]
        kind = "self" if m == REFERENCE or not (mine["kind"] == "cross").any() else "cross"
        mine = mine[mine["kind"] == kind]
        cells = tuple(make_cell(mine[mine["metric"] == v]) for v in VALUES)
        proto = ("own audio (real videos)" if m == REFERENCE else
                 "cross-driven pairs" if kind == "cross" else "self-driven only (paper uses cross-driven pairs)")
        rows.append(SuiteRow(_label(m, flags), m, cells, proto + (f"; {flags[m].reason}" if m in flags else "")))
    return PaperTable(title, published, tuple(rows), "suite: " + _protocol(bundle), True)


def _label(method: str, flags=None) -> str:
    if method == REFERENCE:
        return "Real videos (this suite)"
    return f"{method} (this suite)" + (", degenerate output" if method in (flags or {}) else "")


def paper_plain(pt: PaperTable) -> PlainTable:
    headers = ("row", "LSE-D \u2193", "LSE-C \u2191", "source")
    rows: list[tuple[str, ...]] = []
    for p in pt.published:
        src = p.source + (f" <{p.url}>" if p.url else "") + ("" if p.verified else f" ({UNVERIFIED})")
        rows.append((p.label, p.lse_d_text or fmt_number(p.lse_d), p.lse_c_text or fmt_number(p.lse_c), src))
    for s in pt.suite:
        rows.append((s.label,) + tuple(cell_export_text(c) for c in s.cells) + (s.protocol or pt.note,))
    return PlainTable("paper_wav2lip_lrs2", pt.title, headers, tuple(rows))

