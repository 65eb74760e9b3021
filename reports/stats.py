"""The one place where reports turn per-clip values into a summary: `metrics.aggregate`.

Every table, plot and export goes through `summarise`, so the report shows exactly the suite-wide
aggregation rules (see metrics/aggregate.py): NaN and not-ok values excluded; infinite values
counted (`n_inf`) and kept out of mean / std / CI; all-infinite shown as "identical (inf)"; sample
std (ddof 1); Student-t 95% CI of the mean.
"""

from __future__ import annotations

from typing import Sequence

from metrics.aggregate import Summary

__all__ = ["Summary", "summarise", "all_inf"]


def summarise(values: Sequence[float]) -> Summary:
    """Summary of the ok values of one group (one method x one table column)."""
    from metrics.aggregate import summarize

    return summarize(values)


def all_inf(s: Summary) -> bool:
    """Every value infinite (the real video's PSNR): shown as "identical (inf)", not as a number."""
    return s.kind == "all_inf"
