"""Aggregation of per-clip values into the numbers reports show: n, mean, std, 95% CI, median.

Rules (one (method, metric) at a time):
- missing values - NaN, or a row whose status is not "ok" (unavailable, failed, too short, ...) -
  are excluded and counted (`n_missing`); they never turn into zeros;
- infinite values (PSNR of a clip identical to its ground truth) are counted (`n_inf`) and kept out
  of mean / std / CI / median, which describe the finite values only. If every usable value is the
  same infinity (the `reference` row's PSNR), the mean and median are that infinity, std and CI are
  not computed, and the value is shown as "identical (inf)". A mix is shown with the count of
  infinite clips next to the finite statistics - never as a silent +inf average;
- std is the sample standard deviation (ddof = 1); the CI is mean +/- t(1 - alpha/2, n - 1) * std /
  sqrt(n) (Student's t; needs n >= 2).
Pure functions on numpy arrays and pandas frames; `Accumulator` is the thin collecting wrapper.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["finite", "mixed_inf", "all_inf", "empty"]


@dataclass(frozen=True)
class Summary:
    """Statistics of one (method, metric) over clips. NaN marks a statistic that is not defined."""

    n: int                 # finite values the statistics use
    n_inf: int             # +inf / -inf values (excluded from the statistics, reported)
    n_missing: int         # NaN or not-ok values (excluded, reported)
    mean: float
    std: float
    ci_low: float
    ci_high: float
    median: float
    kind: Kind
    confidence: float = 0.95

    @property
    def n_total(self) -> int:
        return self.n + self.n_inf + self.n_missing

    @property
    def ci_half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0

    def display(self, digits: int = 3) -> str:
        """One cell of a report table, e.g. "31.234 ± 0.512", "identical (inf)", "32.1 ± 0.4 (+2 inf)"."""
        if self.kind == "empty":
            return "n/a" + (f" ({self.n_missing} missing)" if self.n_missing else "")
        if self.kind == "all_inf":
            text = "identical (inf)" if self.mean > 0 else "-inf"
        else:
            text = f"{self.mean:.{digits}f}"
            if not math.isnan(self.ci_half_width):
                text += f" ± {self.ci_half_width:.{digits}f}"
            if self.n_inf:
                text += f" (+{self.n_inf} inf)"
        if self.n_missing:
            text += f" [{self.n_missing} missing]"
        return text


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of `values` (finite, n >= 2); NaNs otherwise."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(np.mean(values))
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sem
    return mean - half, mean + half


def summarize(values: Sequence[float] | np.ndarray, statuses: Sequence[str] | None = None,
              confidence: float = 0.95) -> Summary:
    """Summarise per-clip values of one (method, metric); see the module docstring for the rules.

    values: float per clip (NaN allowed). statuses: optional per-clip status strings; anything but
    "ok" counts as missing whatever its value.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    usable = ~np.isnan(v)
    if statuses is not None:
        st = np.asarray(list(statuses), dtype=object)
        if len(st) != len(v):
            raise ValueError(f"{len(v)} values but {len(st)} statuses")
        usable &= st == "ok"
    n_missing = int((~usable).sum())
    v = v[usable]
    inf = np.isinf(v)
    finite = v[~inf]
    n_inf = int(inf.sum())
    nan = math.nan
    if len(v) == 0:
        return Summary(0, 0, n_missing, nan, nan, nan, nan, nan, "empty", confidence)
    if len(finite) == 0:
        # every usable value infinite: the mean is that infinity if all agree in sign
        signs = set(np.sign(v[inf]).tolist())
        value = float(v[0]) if len(signs) == 1 else nan
        return Summary(0, n_inf, n_missing, value, nan, nan, nan, value, "all_inf", confidence)
    lo, hi = t_interval(finite, confidence)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else nan
    return Summary(len(finite), n_inf, n_missing, float(np.mean(finite)), std, lo, hi,
                   float(np.median(finite)), "mixed_inf" if n_inf else "finite", confidence)


def summarize_table(df: "pd.DataFrame", by: Sequence[str] = ("method", "metric"),
                    confidence: float = 0.95) -> "pd.DataFrame":
    """Summaries of a results table (bench.results schema: `value`, `status` and the `by` columns).

    Returns one row per group with the `by` columns, every `Summary` field and `display`.
    """
    import pandas as pd

    by = list(by)
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        statuses = group["status"].astype(str).tolist() if "status" in group else None
        s = summarize(group["value"].to_numpy(dtype=np.float64), statuses, confidence)
        rows.append({**dict(zip(by, key)), **asdict(s), "display": s.display()})
    columns = by + [f for f in Summary.__dataclass_fields__] + ["display"]
    return pd.DataFrame(rows, columns=columns)


@dataclass
class Accumulator:
    """Collects per-clip values keyed by (method, metric) and summarises them on demand."""

    confidence: float = 0.95
    _values: dict[tuple[str, str], list[tuple[float, str]]] = field(default_factory=dict)

    def add(self, method: str, metric: str, value: float, status: str = "ok") -> None:
        self._values.setdefault((method, metric), []).append((float(value), status))

    def extend(self, method: str, metric: str, values: Iterable[float], status: str = "ok") -> None:
        for v in values:
            self.add(method, metric, v, status)

    def summary(self, method: str, metric: str) -> Summary:
        items = self._values.get((method, metric), [])
        return summarize([v for v, _ in items], [s for _, s in items], self.confidence)

    def summaries(self) -> dict[tuple[str, str], Summary]:
        return {key: self.summary(*key) for key in sorted(self._values)}
