"""The one place where reports turn per-clip values into a summary (n, mean, spread).

Every table, plot and export goes through `summarise`, so the aggregation rules (and the switch to
the suite-wide `metrics.aggregate` once it exists) live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    """Summary of the `ok` values of one group (e.g. one method x one metric).

    n: values counted (finite and +/-inf); n_inf: how many of them are infinite (PSNR of identical
    frames); mean/std/ci_low/ci_high are over the finite values (NaN when there are none; std and
    the CI need two); all_inf: every counted value is +inf (the reference row's PSNR).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    n_inf: int = 0

    @property
    def all_inf(self) -> bool:
        return self.n > 0 and self.n_inf == self.n

    @property
    def ci_half(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0


def summarise(values: Sequence[float]) -> Summary:
    """n, mean, sample std (ddof 1) and Student-t 95% CI of the mean; NaNs dropped, infs counted apart."""
    import numpy as np

    v = np.asarray(list(values), dtype=np.float64)
    v = v[~np.isnan(v)]
    finite = v[np.isfinite(v)]
    n_inf = int(len(v) - len(finite))
    if len(finite) == 0:
        nan = math.nan
        mean = math.inf if n_inf and np.all(v > 0) else nan
        return Summary(int(len(v)), mean, nan, nan, nan, n_inf)
    mean = float(finite.mean())
    if len(finite) < 2:
        return Summary(int(len(v)), mean, math.nan, math.nan, math.nan, n_inf)
    from scipy import stats

    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(finite) - 1)) * std / math.sqrt(len(finite))
    return Summary(int(len(v)), mean, std, mean - half, mean + half, n_inf)
