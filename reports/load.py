"""Reading one or several run folders into one `Bundle` that the report sections read.

Manifests are read defensively (runs may be unfinished, written by an older runner, or edited by
hand): every key is optional and a missing one becomes a visible note, never a crash. Results go
through `bench.results.load_run`, which checks the schema version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench.results import method_label

UNKNOWN_HARDWARE = "unknown"


@dataclass(frozen=True)
class Run:
    """One run folder: its manifest (possibly empty) and results frame (bench.results schema)."""

    root: Path
    manifest: Mapping[str, Any]
    results: Any  # pandas.DataFrame
    notes: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        rid = self.manifest.get("run_id")
        if rid:
            return str(rid)
        ids = self.results["run_id"].dropna().unique() if len(self.results) else []
        return str(ids[0]) if len(ids) else self.root.name

    @property
    def hardware(self) -> Mapping[str, Any]:
        hw = self.manifest.get("hardware")
        return hw if isinstance(hw, Mapping) else {}

    @property
    def hardware_id(self) -> str:
        hid = self.hardware.get("id")
        if hid:
            return str(hid)
        ids = self.results["hardware"].dropna().unique() if len(self.results) else []
        return str(ids[0]) if len(ids) else UNKNOWN_HARDWARE

    @property
    def budget(self) -> str:
        """The training budget the run was made with ("" when the manifest does not say)."""
        config = self.manifest.get("config")
        return str(config.get("budget") or "") if isinstance(config, Mapping) else ""

    def scorer_id(self, family: str) -> str:
        """Which trained scorer a suite metric of this run used: the digests of its weights where the
        manifest records them (two runs sharing one trained scorer may pool), else the run itself."""
        entry = section(section(self.manifest, "metrics"), family)
        digests = sorted(str(w.get("sha256")) for w in entry.get("weights") or []
                         if isinstance(w, Mapping) and w.get("sha256"))
        return "weights:" + ",".join(d[:12] for d in digests) if digests else "run:" + self.run_id

    @property
    def dataset_name(self) -> str:
        ds = section(self.manifest, "dataset")
        if ds.get("name"):
            return str(ds["name"])
        names = self.results["dataset"].dropna().unique() if len(self.results) else []
        return str(names[0]) if len(names) else "unknown"


@dataclass(frozen=True)
class Bundle:
    """Several runs merged: `results` is their concatenation (row order: run by run)."""

    runs: tuple[Run, ...]
    results: Any  # pandas.DataFrame
    hardware: Mapping[str, Mapping[str, Any]]   # hardware id -> fingerprint (first manifest that has it)
    notes: tuple[str, ...] = field(default=())

    def hardware_label(self, hardware_id: str) -> str:
        hw = self.hardware.get(hardware_id, {})
        label = hw.get("label") if isinstance(hw, Mapping) else None
        return str(label) if label else f"machine {hardware_id}"

    @property
    def dataset_names(self) -> list[str]:
        return sorted({r.dataset_name for r in self.runs})

    def methods_manifest(self) -> dict[str, list[tuple[Run, Mapping[str, Any]]]]:
        """method name -> [(run, that run's manifest entry)] in run order."""
        out: dict[str, list[tuple[Run, Mapping[str, Any]]]] = {}
        for run in self.runs:
            for name, entry in section(run.manifest, "methods").items():
                if isinstance(entry, Mapping):
                    label = method_label(str(name), str(entry.get("variant") or ""))
                    out.setdefault(label, []).append((run, entry))
        return out


def section(manifest: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """manifest[key] when it is a mapping, else {} (old or partial manifests)."""
    value = manifest.get(key) if isinstance(manifest, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def read_manifest(run_dir: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}, (f"{run_dir}: no manifest.json; hardware, configs and fits are unknown",)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {}, (f"{path}: unreadable manifest ({e}); hardware, configs and fits are unknown",)
    if not isinstance(data, dict):
        return {}, (f"{path}: manifest is not a JSON object",)
    notes = []
    if data.get("status") not in (None, "complete"):
        notes.append(f"run {data.get('run_id', run_dir)} has status {data.get('status')!r}: results may be partial")
    return data, tuple(notes)


def load_run_dir(run_dir: Path) -> Run:
    from bench.results import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run folder")
    manifest, notes = read_manifest(run_dir)
    results = load_run(run_dir)
    if not len(results):
        notes = notes + (f"{run_dir}: no results yet",)
    return Run(run_dir, manifest, results, notes)


def merge(runs: list[Run]) -> Bundle:
    """Concatenate runs; rows without a hardware id take their manifest's."""
    import pandas as pd

    from bench.results import to_frame

    frames = []
    hardware: dict[str, Mapping[str, Any]] = {}
    notes: list[str] = []
    scorers: dict[str, list[str]] = {}   # scorer id -> run ids using it
    for run in runs:
        notes.extend(run.notes)
        df = run.results.copy()
        if len(df):
            missing = df["hardware"].isna() | (df["hardware"] == "")
            df.loc[missing, "hardware"] = run.hardware_id
        df["budget"] = run.budget
        df["scorer"] = ""
        if len(df):
            unpublished = ~df["published"].astype(bool)
            for family in df.loc[unpublished, "family"].unique():
                sid = f"{family}|{run.scorer_id(str(family))}"
                df.loc[unpublished & (df["family"] == family), "scorer"] = sid
                scorers.setdefault(sid, []).append(run.run_id)
        frames.append(df)
        hardware.setdefault(run.hardware_id, run.hardware)
        for hid, fp in section(run.manifest, "machines").items():   # a merged run of several machines
            if isinstance(fp, Mapping):
                hardware.setdefault(str(hid), fp)
        notes.extend(_version_notes(run))
    results = pd.concat(frames, ignore_index=True) if frames else to_frame([])
    if len(results):
        # a method's variants (e.g. nerf_head's audio front end) are separate methods in every table
        variant = results["variant"].fillna("").astype(str)
        results["method"] = [method_label(str(m), v) for m, v in zip(results["method"], variant)]
        labels = {sid: "scorer of run" + ("s " if len(ids) > 1 else " ") + ", ".join(dict.fromkeys(ids))
                  for sid, ids in scorers.items()}
        results["scorer_label"] = results["scorer"].map(lambda s: labels.get(s, ""))
    datasets = sorted({r.dataset_name for r in runs})
    if len(datasets) > 1:
        notes.append("runs of different datasets are merged (" + ", ".join(datasets)
                     + "): each dataset gets its own columns")
    budgets = sorted({r.budget for r in runs if r.budget})
    if len(budgets) > 1:
        notes.append("runs with different training budgets are merged (" + ", ".join(budgets)
                     + "): each budget gets its own columns")
    commits = sorted({str((section(r.manifest, "git")).get("commit") or "unknown")[:10] for r in runs})
    if len(commits) > 1:
        notes.append("the runs were made at different commits (" + ", ".join(commits) + ")")
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        notes.append("the same run id appears more than once: " + ", ".join(sorted(set(ids))))
    return Bundle(tuple(runs), results, hardware, tuple(notes))


def _version_notes(run: Run) -> list[str]:
    """A run whose rows were made by several code versions says so (a resume after a pull)."""
    df = run.results
    if not len(df) or "versions" not in df.columns:
        return []
    out = []
    commits = [str(c) for c in df["commit"].unique() if str(c)]
    if len(commits) > 1:
        counts = df["commit"].value_counts()
        out.append(f"run {run.run_id}: rows were made at {len(commits)} commits ("
                   + ", ".join(f"{str(c)[:10]}: {int(counts[c])} rows" for c in commits) + ")")
    per_method = df.groupby("method")["versions"].nunique()
    mixed = [str(m) for m, n in per_method.items() if n > 1]
    if mixed:
        out.append(f"run {run.run_id}: rows of {', '.join(mixed)} were made under different method / metric / "
                   "stage versions (a resume recomputes such parts; these are from an older talkbench)")
    return out


def load_bundle(run_dirs: list[Path]) -> Bundle:
    if not run_dirs:
        raise ValueError("give at least one run folder")
    return merge([load_run_dir(Path(d)) for d in run_dirs])
