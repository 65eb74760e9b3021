"""`bench run --shard i/N` and `bench merge`: one run split over N independent processes.

The split is a pure function of the run's requests, so every shard computes the same plan without
talking to the others:
- methods without subject parts: requests are dealt round-robin in sorted id order (shard of
  request k in that order = k mod N);
- methods with subject parts (a person-specific model): whole subjects, so a subject's fit and all
  its requests run in one shard; subjects go largest first (by request count, ties by name) to the
  least loaded shard (lowest index on ties).
Dataset-level fits (a part of scope "dataset", a metric that trains its scorer) are needed by every
shard. Shards that share one cache ($TALKBENCH_CACHE on a shared disk) share them: the first shard to
reach a fit takes its lock and trains, the others wait on the lock and then load the finished
checkpoints from the same fit folder, so every shard uses the same weights. Shards with separate
caches each train an identically seeded copy (equal on identical hardware and software; `bench
merge` notes it when the copies' weights differ).

A shard writes its own run folder, `<runs>/<run-id>.shard-<i>-of-<N>` (same run id and results as
the unsharded run for its requests); `merge` combines the N folders into `<runs>/<run-id>`: parts,
samples, cache references, and one manifest (phase times and invocations summed, fits and weights
united, every shard's hardware under `machines`). Rows keep the hardware they were made on, so
shards on different machines merge into one labelled run and fps is never pooled across machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


class ShardError(ValueError):
    """A bad --shard value or a set of folders that cannot be merged; the message says why."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """"i/N" with 0 <= i < N."""
        a, sep, b = str(text).partition("/")
        try:
            index, count = int(a), int(b)
        except ValueError:
            raise ShardError(f"--shard expects i/N (e.g. 0/4), got {text!r}") from None
        if not sep or count < 1 or not 0 <= index < count:
            raise ShardError(f"--shard {text}: need 0 <= i < N (shards are numbered from 0)")
        return cls(index, count)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def folder(self, run_id: str) -> str:
        return f"{run_id}.shard-{self.index}-of-{self.count}"


def deal(units: Mapping[str, int], count: int) -> dict[str, int]:
    """unit -> shard: heaviest first (ties by name) onto the least loaded shard (ties: lowest index).
    With equal weights this is round-robin in sorted order."""
    load = [0] * count
    out = {}
    for name, weight in sorted(units.items(), key=lambda kv: (-kv[1], kv[0])):
        i = min(range(count), key=lambda k: (load[k], k))
        out[name] = i
        load[i] += max(int(weight), 1)
    return out


@dataclass(frozen=True)
class Plan:
    """Which shard runs each request: by request id, or (subject-scope methods) by target subject."""

    shard: Shard
    by_request: Mapping[str, int]
    by_subject: Mapping[str, int]

    def mine(self, request_id: str, subject: str, by_subject: bool) -> bool:
        table, key = (self.by_subject, subject) if by_subject else (self.by_request, request_id)
        return table.get(key, -1) == self.shard.index


def plan(requests: Iterable[tuple[str, str]], shard: Shard) -> Plan:
    """requests: (request id, target subject) of the whole (unsharded) run."""
    reqs = list(requests)
    subjects: dict[str, int] = {}
    for _, s in reqs:
        subjects[s] = subjects.get(s, 0) + 1
    return Plan(shard, deal({rid: 1 for rid, _ in reqs}, shard.count), deal(subjects, shard.count))


# ------------------------------------------------------------------------------------------- merge


@dataclass
class MergeOutcome:
    out: Path
    parts: int = 0
    samples: int = 0
    results: Any = None
    notes: list[str] = field(default_factory=list)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.merge.tmp")
    try:
        os.link(src, tmp)           # same filesystem: no copy of the mp4s
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    for dirpath, _, files in os.walk(src):
        for f in files:
            s = Path(dirpath) / f
            _link_or_copy(s, dst / s.relative_to(src))


def _fits_key(f: Mapping[str, Any]) -> tuple[str, str]:
    return str(f.get("scope", "")), str(f.get("part", ""))


def merge_manifests(manifests: Sequence[tuple[Path, dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """One manifest for the merged run (see the module docstring) and notes on what differs."""
    notes: list[str] = []
    first = manifests[0][1]
    m = json.loads(json.dumps(first))
    m.pop("shard", None)
    m.pop("error", None)
    statuses = [x.get("status") for _, x in manifests]
    worst = [s for s in ("failed", "interrupted", "running") if s in statuses]
    m["status"] = worst[0] if worst else "complete"
    m["phases"] = {}
    m["invocations"] = 0
    m["history"] = []
    m["weights"] = []
    m["clip_errors"] = {}
    m["machines"] = {}
    m["merged_from"] = []
    m["created"] = min(str(x.get("created") or "") for _, x in manifests) or first.get("created")
    m["finished"] = max(str(x.get("finished") or "") for _, x in manifests) or None
    for root, x in manifests:
        shard = x.get("shard") or {}
        label = f"{shard.get('index')}/{shard.get('count')}" if shard else "unsharded"
        hw = x.get("hardware") or {}
        m["merged_from"].append({"folder": str(root), "shard": label, "status": x.get("status"),
                                 "hardware": hw.get("id"), "invocations": x.get("invocations")})
        if hw.get("id"):
            m["machines"].setdefault(str(hw["id"]), hw)
        for k, v in (x.get("phases") or {}).items():
            m["phases"][k] = round(m["phases"].get(k, 0.0) + float(v), 3)
        m["invocations"] += int(x.get("invocations") or 0)
        m["history"] += [{**h, "shard": label} for h in x.get("history") or []]
        for w in x.get("weights") or []:
            if w not in m["weights"]:
                m["weights"].append(w)
        m["clip_errors"].update(x.get("clip_errors") or {})
        for stage, entries in ((x.get("precision") or {}).get("stages") or {}).items():
            have = m.setdefault("precision", {}).setdefault("stages", {}).setdefault(stage, [])
            have += [e for e in entries if e not in have]
    # fits: one entry per (scope, part) - subject fits live in one shard each; a dataset fit is in every
    # shard, and with a shared cache it is one model (same weights digests); separate caches may differ
    methods: dict[str, Any] = {}
    for _, x in manifests:
        for name, entry in (x.get("methods") or {}).items():
            into = methods.setdefault(name, {**entry, "fits": []})
            for f in entry.get("fits") or []:
                same = next((g for g in into["fits"] if _fits_key(g) == _fits_key(f)), None)
                if same is None:
                    into["fits"].append(f)
                    continue
                a = sorted(w.get("sha256", "") for w in same.get("weights") or [])
                b = sorted(w.get("sha256", "") for w in f.get("weights") or [])
                if a != b:
                    notes.append(f"method {name}, fit {'/'.join(_fits_key(f))}: shards used different weights "
                                 "(separate caches trained their own copies)")
    m["methods"] = methods
    for name in list((first.get("metrics") or {})):
        digests = {json.dumps(sorted(w.get("sha256", "") for w in ((x.get("metrics") or {}).get(name) or {}).get(
            "weights") or [])) for _, x in manifests}
        if len(digests) > 1:
            notes.append(f"metric {name}: shards used different scorer weights (separate caches trained their own)")
    versions = {json.dumps(x.get("versions") or {}, sort_keys=True) for _, x in manifests}
    if len(versions) > 1:
        notes.append("shards ran under different method / metric / stage versions; rows carry their own")
    if len(m["machines"]) > 1:
        notes.append(f"shards ran on {len(m['machines'])} machines: rows keep their hardware and fps is "
                     "reported per machine")
    m["merge_notes"] = notes
    return m, notes


def merge(folders: Sequence[Path], out: Path | None = None, allow_missing: bool = False) -> MergeOutcome:
    """Combine shard run folders (or any run folders of one configuration) into `out` (default:
    `<runs>/<run-id>` beside the first). Rerunnable: the output is rebuilt from the shards."""
    from bench import manifest as mf
    from bench.cache import append_refs, read_refs
    from bench.layout import RunLayout
    from bench.locks import FileLock, LockBusy, describe_holder
    from bench.results import collect_parts, write_csv, write_parquet

    if not folders:
        raise ShardError("bench merge: name the shard run folders")
    manifests = []
    for f in folders:
        p = Path(f) / "manifest.json"
        if not p.is_file():
            raise ShardError(f"{f} is not a run folder (no manifest.json)")
        manifests.append((Path(f), mf.read(p)))
    identities = {x.get("identity") for _, x in manifests}
    if len(identities) != 1:
        raise ShardError("these folders hold runs of different configurations; only shards of one run merge: "
                         + ", ".join(f"{r} ({x.get('run_id')})" for r, x in manifests))
    shards = [x.get("shard") for _, x in manifests]
    counts = {s.get("count") for s in shards if s}
    if len(counts) > 1:
        raise ShardError(f"the folders are shards of different splits (N = {sorted(counts)})")
    if counts and not allow_missing:
        n = counts.pop()
        have = {s.get("index") for s in shards if s}
        missing = sorted(set(range(n)) - have)
        if missing:
            raise ShardError(f"shards {', '.join(f'{i}/{n}' for i in missing)} are missing "
                             "(merge them too, or pass --allow-missing for a partial result)")
    manifests.sort(key=lambda rx: ((rx[1].get("shard") or {}).get("index", -1), str(rx[0])))
    run_id = str(manifests[0][1].get("run_id"))
    out = Path(out) if out is not None else Path(folders[0]).parent / run_id
    if out.resolve() in {Path(f).resolve() for f in folders}:
        raise ShardError(f"the output {out} is one of the inputs; give --out")
    if (out / "manifest.json").is_file():
        prev = mf.read(out / "manifest.json")
        if prev.get("identity") not in identities or "merged_from" not in prev:
            raise ShardError(f"{out} holds another run; give --out")
    layout = RunLayout(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(layout.lock, f"bench merge {run_id}", wait=False)
    try:
        lock.acquire()
    except LockBusy as e:
        raise ShardError(f"{out} is in use ({describe_holder(e.holder)})") from None
    try:
        shutil.rmtree(out / "parts", ignore_errors=True)
        result = MergeOutcome(out)
        seen: dict[Path, Path] = {}
        for root, _ in manifests:
            for part in sorted((root / "parts").glob("*/*.parquet")):
                rel = part.relative_to(root)
                if rel in seen:
                    result.notes.append(f"{rel} is in {seen[rel]} and {root}: kept the first")
                    continue
                seen[rel] = root
                _link_or_copy(part, out / rel)
                result.parts += 1
            for sample in sorted((root / "samples").glob("*/*")):
                dst = out / sample.relative_to(root)
                if sample.is_dir() and not dst.exists():
                    _copy_tree(sample, dst)
                    result.samples += 1
        refs: dict[str, set[str]] = {}
        for root, _ in manifests:
            if (root / layout.cache_refs.name).is_file():
                for ns, keys in read_refs(root / layout.cache_refs.name).items():
                    refs.setdefault(ns, set()).update(keys)
        with contextlib.suppress(OSError):
            os.unlink(layout.cache_refs)
        if refs:
            append_refs(layout.cache_refs, refs)
        manifest, notes = merge_manifests(manifests)
        result.notes += notes
        results = collect_parts(out)
        write_parquet(layout.results_parquet, results)
        write_csv(layout.results_csv, results)
        mf.write(layout.manifest, manifest)
        result.results = results
        return result
    finally:
        lock.release()
