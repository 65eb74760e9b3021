"""Number and status formatting shared by the page and the exports (pure functions)."""

from __future__ import annotations

import math

STATUS_LABELS = {
    "ok": "ok",
    "unavailable": "unavailable",
    "failed": "failed",
    "too_short": "too short",
    "not_applicable": "not applicable",
}

ARROWS = {"higher": "\u2191", "lower": "\u2193", "zero": "\u21920", "": ""}
BETTER_WORDS = {"higher": "higher is better", "lower": "lower is better",
                "zero": "closest to 0 is better", "": ""}


def fmt_number(x: float, sig: int = 4, max_decimals: int = 4) -> str:
    """`sig` significant digits, but never more than `max_decimals` decimals nor fewer than 0.

    6.3861 -> "6.386", 35.6123 -> "35.61", 0.01782 -> "0.0178", 1234.5 -> "1234" (rounded half to
    even as Python's format does). NaN -> "n/a"; inf -> "inf".
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return f"{0:.{min(sig - 1, max_decimals)}f}"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = min(max(sig - 1 - magnitude, 0), max_decimals)
    text = f"{x:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def status_text(status: str, reason: str) -> str:
    """'unavailable (reason)', 'too short (reason)', 'failed (reason)'."""
    label = STATUS_LABELS.get(status, status)
    return f"{label} ({reason})" if reason else label


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "n/a"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"
