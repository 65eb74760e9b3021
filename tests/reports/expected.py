"""Expected main-table cell text, computed straight from a results frame (independent of reports/).

The rules restated from the report's documentation, implemented here again with plain pandas/numpy:
- one column per metric; split into "self" and "cross" columns when the metric has rows of both
  kinds (speed never splits by kind); one run = one machine, so no per-machine split here;
- value: mean of the status-ok finite values with 4 significant digits but at most 4 decimals;
  spread: "± " + sample std (ddof 1) in the same format, only with two or more values;
  n: number of ok values; every ok value infinite: "identical (inf)";
- no ok value: the status label of the most common status, and the most common reason;
- a column in which every method's cell has no value and the same status and reason is not shown
  as cells but once under the table: "<metrics>: <status label> for every method (<reason>)";
- the output_check family (a check of the video, not a result) is no column;
- closest-to-0 values (better == "zero", the AV offset) are summarised by their magnitude.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

LABELS = {"unavailable": "unavailable", "failed": "failed", "too_short": "too short",
          "not_applicable": "not applicable"}


def sig4(x: float) -> str:
    decimals = min(max(3 - math.floor(math.log10(abs(x))), 0), 4) if x != 0 else 3
    return f"{x:.{decimals}f}"


def expected_table(df) -> tuple[dict[tuple[str, str, str], dict[str, str]], set[tuple[frozenset, str, str]]]:
    """Shown cells {(method, metric, kind or ""): {"v", "sp", "n", "reason"}} and the collapsed
    columns {(metric names, status label, reason)}."""
    cells = expected_cells(df)
    columns: dict[tuple[str, str], list[dict[str, str]]] = {}
    for (method, metric, kind), cell in cells.items():
        columns.setdefault((metric, kind), []).append(cell)
    collapsed: dict[tuple[str, str], set[str]] = {}
    for (metric, kind), col in columns.items():
        if not any(c["n"] for c in col) and len({(c["v"], c["reason"]) for c in col}) == 1:
            collapsed.setdefault((col[0]["v"], col[0]["reason"][1:-1]), set()).add(metric)
            for key in [k for k in cells if (k[1], k[2]) == (metric, kind)]:
                del cells[key]
    return cells, {(frozenset(m), label, reason) for (label, reason), m in collapsed.items()}


def expected_cells(df) -> dict[tuple[str, str, str], dict[str, str]]:
    """(method, metric, kind or "") -> {"v", "sp", "n", "reason"} for every cell with rows."""
    out = {}
    df = df[df["family"] != "output_check"]
    for metric, mdf in df.groupby("metric", sort=False):
        kinds = set(mdf["kind"])
        split = len(kinds) > 1 and mdf["family"].iloc[0] != "fps"
        groups = [(k, mdf[mdf["kind"] == k]) for k in sorted(kinds)] if split else [("", mdf)]
        for kind, kdf in groups:
            for method, rows in kdf.groupby("method", sort=False):
                ok = rows[rows["status"] == "ok"]["value"].to_numpy(dtype=float)
                if (rows["better"] == "zero").all():
                    ok = np.abs(ok)
                if len(ok):
                    finite = ok[np.isfinite(ok)]
                    if len(finite) == 0:
                        cell = {"v": "identical (inf)", "sp": "", "n": f"n={len(ok)}", "reason": ""}
                    else:
                        sp = f"\u00b1 {sig4(float(np.std(finite, ddof=1)))}" if len(finite) > 1 else ""
                        cell = {"v": sig4(float(np.mean(finite))), "sp": sp, "n": f"n={len(ok)}", "reason": ""}
                else:
                    status = Counter(rows["status"]).most_common(1)[0][0]
                    reason = Counter(rows[rows["status"] == status]["reason"]).most_common(1)[0][0]
                    cell = {"v": LABELS[status], "sp": "", "n": "", "reason": f"({reason})"}
                out[(str(method), str(metric), kind)] = cell
    return out
