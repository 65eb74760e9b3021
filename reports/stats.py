"""The one place where reports turn per-clip values into a summary (n, mean, spread).

Every table, plot and export goes through `summarise`, so the aggregation rules live in one place.
The rules are those of `metrics.aggregate` (the suite-wide aggregation): NaN dropped; infinite
values counted apart (`n_inf`) and kept out of mean / std / CI; all-infinite is "identical (inf)";
sample std (ddof 1); Student-t 95% CI of the mean (n >= 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    """n: finite values used by mean/std/CI; n_inf: infinite values (reported, not averaged)."""

    n: int
    n_inf: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def n_total(self) -> int:
        return self.n + self.n_inf

    @property
    def all_inf(self) -> bool:
        return self.n == 0 and self.n_inf > 0


def summarise(values: Sequence[float]) -> Summary:
    """Summary of the ok values of one group (method x metric column)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    finite = v[np.isfinite(v)]
    n_inf = int(len(v) - len(finite))
    nan = math.nan
    if len(finite) == 0:
        signs = set(np.sign(v).tolist())
        mean = float(v[0]) if n_inf and len(signs) == 1 else nan
        return Summary(0, n_inf, mean, nan, nan, nan)
    mean = float(finite.mean())
    if len(finite) < 2:
        return Summary(1, n_inf, mean, nan, nan, nan)
    from scipy import stats

    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(finite) - 1)) * std / math.sqrt(len(finite))
    return Summary(int(len(finite)), n_inf, mean, std, mean - half, mean + half)
