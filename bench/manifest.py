"""The run manifest: what makes a run reproducible and its numbers interpretable.

Keys (schema_version 1): run_id, created, finished, status ("running" | "complete" | "interrupted" |
"failed"), command (argv), config (resolved RunConfig), seed, git {commit, dirty}, talkbench_version,
packages {name: version}, hardware (bench.hardware.fingerprint), dataset {name, argument,
content_hash, clips, splits, pairs, sync_protocol, source, description}, methods {name: {available,
reason, config, spec, fits: [...]}}, metrics {family: {available, reason, values, published,
weights, fit}}, weights [{role, path, sha256, origin, used_by}], phases {prepare, fit, generate,
score, report: seconds summed over every invocation of the run}, invocations (how many times the
command ran: >1 after a resume).
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import Any

from bench import __version__
from bench.cache import atomic_write_text

SCHEMA_VERSION = 1


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_info(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the suite runs from (None outside a git checkout)."""
    where = str(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def read(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write(path: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(manifest, indent=2, sort_keys=False, default=str))


def new(run_id: str, command: list[str], config: dict[str, Any], seed: int, hardware: dict[str, Any],
        packages: dict[str, str]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": now_iso(),
        "finished": None,
        "status": "running",
        "command": command,
        "config": config,
        "seed": seed,
        "git": git_info(),
        "talkbench_version": __version__,
        "packages": packages,
        "hardware": hardware,
        "dataset": {},
        "methods": {},
        "metrics": {},
        "weights": [],
        "phases": {},
        "invocations": 0,
    }


def add_phase(manifest: dict[str, Any], phase: str, seconds: float) -> None:
    manifest["phases"][phase] = round(manifest["phases"].get(phase, 0.0) + seconds, 3)


def record_weight(manifest: dict[str, Any], role: str, path: str, sha256: str, origin: str, used_by: str,
                  note: str = "") -> None:
    entry = {"role": role, "path": path, "sha256": sha256, "origin": origin, "used_by": used_by, "note": note}
    if entry not in manifest["weights"]:
        manifest["weights"].append(entry)
