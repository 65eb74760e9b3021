"""Degenerate outputs: methods whose videos are mostly not a talking face.

A flagged method is shown with its reason in every table and plot and is never marked best (see
`tables.mark_best`). The evidence, in order:

1. the `output_check` metric's per-video verdict (`metrics/output_check.py`: no face detected in
   most frames, or a flat face region) - flagged when more than half of the method's checked
   videos are degenerate;
2. for runs without that metric: face-tracking failures of the face-based metrics (tracked LSE,
   the suite scorer, LMD: "no face found ...") in more than half of the method's videos.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

CHECK_FAMILY = "output_check"
DEGENERATE = "degenerate"
FACE_FAMILIES = ("lse", "sync_suite", "lmd")
NO_FACE_WORDS = ("no face", "no frame with a face")
MARK = "\u26a0"  # the sign plots put before a flagged method's name


@dataclass(frozen=True)
class Flag:
    method: str
    reason: str          # the whole readable reason (tables show it in full)
    degenerate: int      # videos judged degenerate
    checked: int         # videos judged

    @property
    def short(self) -> str:
        return f"degenerate output ({self.degenerate} of {self.checked} videos)"


def _reasons(extra: str) -> list[str]:
    try:
        data = json.loads(str(extra))
    except ValueError:
        return []
    return [str(r) for r in data.get("reasons") or []]


def _from_check(rows) -> Flag | None:
    ok = rows[rows["status"] == "ok"]
    if not len(ok):
        return None
    bad = ok[ok["value"] >= 0.5]
    if 2 * len(bad) <= len(ok):
        return None
    per_video = [_reasons(extra) for extra in bad["extra"]]
    parts = []
    for key, label in (("no face", "no face detected in most frames"), ("flat", "a flat face region")):
        hits = [r for reasons in per_video for r in reasons if key in r]
        if hits:
            parts.append(f"{sum(any(key in r for r in v) for v in per_video)} with {label} (e.g. {hits[0]})")
    other = Counter(r for v in per_video for r in v if "no face" not in r and "flat" not in r)
    parts += [r for r, _ in other.most_common(1)]
    why = "; ".join(parts) or "degenerate video"
    method = str(rows["method"].iloc[0])
    return Flag(method, f"degenerate output in {len(bad)} of {len(ok)} videos: {why}", len(bad), len(ok))


def _from_face_failures(rows) -> Flag | None:
    """Fallback: face-based metrics failed to find a face in most of the method's videos."""
    face = rows[rows["family"].isin(list(FACE_FAMILIES))]
    if not len(face):
        return None
    requests = face["request_id"].nunique()
    reasons = face["reason"].astype(str).str.lower()
    no_face = face[(face["status"] == "failed") & reasons.map(lambda r: any(w in r for w in NO_FACE_WORDS))]
    hit = no_face["request_id"].nunique()
    if not requests or 2 * hit <= requests:
        return None
    why = Counter(str(r) for r in no_face["reason"]).most_common(1)[0][0]
    method = str(rows["method"].iloc[0])
    return Flag(method, f"degenerate output: no face found in {hit} of {requests} videos by the face-based "
                        f"metrics ({why})", hit, requests)


def degenerate_methods(pr) -> Mapping[str, Flag]:
    """method -> Flag for every flagged method, from per-request rows (`tables.per_request`)."""
    if not len(pr):
        return {}
    out: dict[str, Flag] = {}
    for method, rows in pr.groupby("method", sort=False):
        check = rows[(rows["family"] == CHECK_FAMILY) & (rows["metric"] == DEGENERATE)]
        flag = _from_check(check) if len(check[check["status"] == "ok"]) else _from_face_failures(rows)
        if flag is not None:
            out[str(method)] = flag
    return out


def display_name(method: str, flags: Mapping[str, Flag]) -> str:
    """The name plots show: flagged methods carry the warning sign."""
    return f"{MARK} {method}" if method in flags else method


def chart_notes(methods, flags: Mapping[str, Flag]) -> tuple[str, ...]:
    """One note per flagged method drawn in a chart (its reason, in full)."""
    return tuple(f"{MARK} {m}: {flags[m].reason}" for m in dict.fromkeys(methods) if m in flags)
