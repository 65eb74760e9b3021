"""The run manifest: what makes a run reproducible and its numbers interpretable.

Keys (schema_version 2): run_id, created, finished, status ("running" | "complete" | "interrupted" |
"failed"), command (argv), config (resolved RunConfig), seed, git {commit, dirty} of the latest
invocation, talkbench_version,
packages {name: version}, hardware (bench.hardware.fingerprint), dataset {name, argument,
content_hash, clips, splits, pairs, sync_protocol, source, description}, methods {name: {available,
reason, config, spec, fits: [...]}}, metrics {family: {available, reason, values, published,
weights, fit}}, weights [{role, path, sha256, origin, used_by}], phases {prepare, fit, generate,
score, report: seconds summed over every invocation of the run}, invocations (how many times the
command ran: >1 after a resume), history [{invocation, started, command, git, talkbench_version,
hardware, versions_digest}] (one entry per invocation, oldest first), stages {name: {version,
config, description}} (the recipe stages the run uses, with their settings), versions {method:
part versions} (what the result rows of each method are stamped with, see `part_versions`),
versions_seen [digest, ...] (every distinct versions set an invocation ran under).

Schema 1 manifests (no history / stages / versions) are upgraded in place by `begin_invocation`.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import Any

from bench import __version__
from bench.cache import atomic_write_text

SCHEMA_VERSION = 2


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
        "history": [],
        "stages": {},
        "versions": {},
        "versions_seen": [],
    }


def add_phase(manifest: dict[str, Any], phase: str, seconds: float) -> None:
    manifest["phases"][phase] = round(manifest["phases"].get(phase, 0.0) + seconds, 3)


def record_weight(manifest: dict[str, Any], role: str, path: str, sha256: str, origin: str, used_by: str,
                  note: str = "") -> None:
    entry = {"role": role, "path": path, "sha256": sha256, "origin": origin, "used_by": used_by, "note": note}
    if entry not in manifest["weights"]:
        manifest["weights"].append(entry)


# ------------------------------------------------------------------------------------------ versions


def _component(version: Any, config: Any) -> str:
    """"<version>#<8 hex of the config>": a code version and the settings it ran with."""
    from bench.cache import content_key
    from bench.config import to_jsonable

    return f"{version}#{content_key('settings', to_jsonable(config))[:8]}"


def stage_settings(names: list[str], recipe: Any) -> dict[str, dict[str, Any]]:
    """{stage: {version, config, description}} of `names` and everything they require."""
    from bench.config import to_jsonable
    from data_recipes.recipe import stage_order, stage_spec

    out = {}
    for name in stage_order(sorted(names)):
        spec = stage_spec(name)
        out[name] = {"version": spec.version, "config": to_jsonable(recipe.config(name)),
                     "description": spec.description}
    return out


def part_versions(method: Any, metrics: list[Any], stages: dict[str, dict[str, Any]]) -> str:
    """The versions string every result row of one (method, request) part carries.

    `method` and `metrics` are resolved entries with `.name`, `.spec` (None when not importable) and
    `.config`; a metric spec without a `version` counts as "1". `stages`: `stage_settings` of the
    stages this method and the metrics read. Compact, sorted JSON so equal versions give equal text.
    """
    def entry(r: Any) -> str:
        if r.spec is None:
            return "unavailable"
        return _component(getattr(r.spec, "version", "1"), r.config)

    data = {"method": f"{method.name}@{entry(method)}",
            "metrics": {m.name: entry(m) for m in metrics},
            "stages": {k: _component(v["version"], v["config"]) for k, v in sorted(stages.items())}}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def versions_digest(versions: dict[str, str]) -> str:
    from bench.cache import content_key

    return content_key("versions", versions)[:16]


def commit_text(git: dict[str, Any]) -> str:
    """"<sha>" or "<sha>+dirty" (a modified checkout), "" when unknown: the rows' commit field."""
    commit = git.get("commit") or ""
    return f"{commit}+dirty" if commit and git.get("dirty") else commit


def version_changes(old: str, new: str) -> list[str]:
    """What differs between two versions strings, readable: ["metric lse 1#ab -> 2#cd", ...]."""
    try:
        a, b = json.loads(old or "{}"), json.loads(new or "{}")
    except ValueError:
        return ["unreadable versions"]
    if not a:
        return ["made before rows carried versions"]
    out = []
    if a.get("method") != b.get("method"):
        out.append(f"method {a.get('method')} -> {b.get('method')}")
    for group, label in (("metrics", "metric"), ("stages", "stage")):
        ga, gb = a.get(group) or {}, b.get(group) or {}
        for k in sorted(set(ga) | set(gb)):
            if ga.get(k) != gb.get(k):
                out.append(f"{label} {k} {ga.get(k, 'absent')} -> {gb.get(k, 'absent')}")
    return out


def may_hold_other_versions(manifest: dict[str, Any], versions: dict[str, str]) -> bool:
    """False only when every earlier invocation ran under exactly `versions` (then no part of the run
    can be stale and a resume need not read the parts' footers). Call before `begin_invocation`."""
    return manifest.get("versions_seen") != [versions_digest(versions)]


def begin_invocation(manifest: dict[str, Any], command: list[str], hardware: dict[str, Any],
                     stages: dict[str, dict[str, Any]], versions: dict[str, str],
                     git: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start one invocation: the git commit of *this* invocation (not the first one's), a history
    entry, the stage settings and the versions the rows will carry. Upgrades schema 1 manifests."""
    git = git if git is not None else git_info()
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["invocations"] = int(manifest.get("invocations", 0)) + 1
    history = manifest.setdefault("history", [])
    if not history and manifest["invocations"] > 1:
        # an older manifest: its first invocations are known only by the commit it recorded then
        history.append({"invocation": None, "started": manifest.get("created"), "command": manifest.get("command"),
                        "git": manifest.get("git"), "talkbench_version": manifest.get("talkbench_version"),
                        "note": f"{manifest['invocations'] - 1} earlier invocation(s) recorded before history"})
    digest = versions_digest(versions)
    history.append({"invocation": manifest["invocations"], "started": now_iso(), "command": command, "git": git,
                    "talkbench_version": __version__, "hardware": hardware.get("id"), "versions_digest": digest})
    manifest["git"] = git
    manifest["talkbench_version"] = __version__
    manifest["stages"] = {**(manifest.get("stages") or {}), **stages}
    manifest["versions"] = dict(versions)
    seen = manifest.setdefault("versions_seen", [])
    if digest not in seen:
        seen.append(digest)
    return manifest
