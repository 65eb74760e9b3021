"""The report's "Input checks" section: each run's per-clip quality gates (data_recipes/quality.py)
as stored in its manifest (`input_checks`), compact: the clips that are not all "ok", one badge per
gate, and how many passed everything. Read defensively: an older manifest without checks adds no
section."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

GATES = ("media", "audio", "faces", "face_size", "length")   # the column order; others follow
_LABEL = {"face_size": "face size"}


def _value(gate: Mapping[str, Any]) -> str:
    """A short value for the badge: dBFS, face fraction, pixels, frames."""
    v, name = gate.get("value"), gate.get("name")
    if not isinstance(v, (int, float)):
        return ""
    if name == "audio":
        return f"{v:.0f} dBFS"
    if name == "faces":
        return f"{v:.0%}"
    if name == "face_size":
        return f"{v:.0f} px"
    if name == "length":
        return f"{v:.0f} fr"
    return f"{v:g}"


def input_checks(runs: Sequence[Any]) -> dict[str, Any] | None:
    """{"columns", "rows": [{"run", "clip", "status", "cells": {gate: {status, text, reason}},
    "reasons": [lines]}], "passed", "total"}, or None when no run recorded checks."""
    rows: list[dict[str, Any]] = []
    names: list[str] = list(GATES)
    total = passed = 0
    found = False
    for run in runs:
        checks = run.manifest.get("input_checks") if isinstance(run.manifest, Mapping) else None
        if not isinstance(checks, Mapping):
            continue
        found = True
        for clip, entry in checks.items():
            if not isinstance(entry, Mapping):
                continue
            gates = [g for g in entry.get("gates") or [] if isinstance(g, Mapping) and g.get("name")]
            total += 1
            status = str(entry.get("status") or "ok")
            if status == "ok":
                passed += 1
                continue
            cells = {}
            for g in gates:
                name = str(g["name"])
                if name not in names:
                    names.append(name)
                cells[name] = {"status": str(g.get("status") or "ok"), "text": _value(g),
                               "reason": str(g.get("reason") or "")}
            rows.append({"run": run.run_id, "clip": str(clip), "status": status, "cells": cells,
                         "reasons": [f"{g['name']}: {g.get('reason', '')}" for g in gates
                                     if g.get("status") in ("warning", "failed")]})
    if not found:
        return None
    rows.sort(key=lambda r: (r["status"] != "failed", r["run"], r["clip"]))
    return {"columns": [(n, _LABEL.get(n, n)) for n in names], "rows": rows, "passed": passed, "total": total,
            "several_runs": len({r["run"] for r in rows}) > 1}
