"""The runner: dataset -> recipe stages -> fit -> generate (self and cross) -> metrics -> results.

Every (method, request) is finished as a unit: its video is generated (or read from the
content-addressed cache), scored by every metric, its preview samples written, and then its rows are
written atomically to `parts/<method>/<request_key>.parquet`. A rerun of the same command finds those
parts and skips them, so a crash or Ctrl-C loses at most the unit in flight. Generated frames are
cached losslessly by content (method, config, weights, request inputs, seed), so adding a metric and
rerunning under a new run id scores the same videos without regenerating them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from bench import malloc
from bench import manifest as mf
from bench.availability import Availability
from bench.cache import Cache, atomic_write_text, content_key
from bench.config import ConfigError, RunConfig, apply_overrides, split_overrides, to_jsonable
from bench.layout import GROUND_TRUTH, RunLayout, sampled_requests
from bench.method import (Budget, FitReport, GenerateRequest, GenerateResult, Method, MethodContext, MethodSpec,
                          PartSpec)
from bench.progress import Progress
from bench.registry import method_registry, metric_registry
from bench.results import ResultRow, collect_parts, extra_json, to_frame, write_csv, write_parquet
from data_recipes.clip import Clip, Dataset
from data_recipes.quality import InputUnusable
from data_recipes.recipe import PreparedClip, Recipe
from metrics.base import Metric, MetricContext, MetricSpec, Sample, Score

# The manifest and cache references are written at least this often while requests finish, so a
# killed invocation loses at most this much of its phase times (and a resume rewrites the references).
FLUSH_SECONDS = 10.0

# Stages prepared for every target clip whatever the methods need: faces give the mouth boxes of
# the report's frame strips. A clip where they fail still runs (the strip just has no zoom).
REPORT_STAGES = ("faces",)


class RunError(RuntimeError):
    """The run cannot start as configured; the message says why and what to change."""


class RunBusy(RunError):
    """Another process holds the run folder's lock (bench.locks); retrying later may succeed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler ending the job, `kill`): handled as Ctrl-C is, so the manifest says
    "interrupted" and a training fit checkpoints first (bench.trainer handles it inside `train`)."""

    signum = signal.SIGTERM


class _TerminateAsInterrupt:
    """Main thread only (Python's rule): SIGTERM raises Terminated; the previous handler is restored."""

    def __enter__(self) -> "_TerminateAsInterrupt":
        self._previous: Any = None
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum: int, frame: Any) -> None:
        raise Terminated(f"terminated by signal {signum}")

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)


class _FitFailed(RuntimeError):
    """A method's fit raised; the message is the reason written into its requests' rows."""


@dataclass
class Resolved:
    """A method or metric after resolution: its class, typed config and availability here."""

    name: str
    cls: Any
    config: Any
    availability: Availability
    spec: Any = None
    explicit: bool = False
    variant: str = ""     # methods: `Method.variant(config)`, carried by every result row


@dataclass(frozen=True)
class Request:
    id: str
    kind: str
    target: Clip
    driving: Clip


@dataclass
class RunOutcome:
    run_dir: Path
    results: Any
    manifest: dict[str, Any]
    report: Path | None = None
    skipped: int = 0
    done: int = 0


@dataclass
class _Phases:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, t0: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - t0


# ----------------------------------------------------------------------------------------- resolving


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _names(requested: Sequence[str], known: list[str]) -> tuple[list[str], bool]:
    if list(requested) == ["all"] or not requested:
        return known, False
    return list(dict.fromkeys(requested)), True


def resolve_methods(requested: Sequence[str], overrides: dict[str, dict[str, str]], device: str,
                    recipe: Recipe | None = None) -> list[Resolved]:
    reg = method_registry()
    names, explicit = _names(requested, reg.names())
    out = []
    for name in names:
        reg.entry(name)  # UnknownName with a suggestion
        try:
            cls = reg.load(name)
        except Exception as e:  # a broken optional dependency must not break the whole suite
            out.append(Resolved(name, None, None, Availability.no(f"cannot import: {type(e).__name__}: {e}"),
                                explicit=explicit))
            continue
        spec: MethodSpec = cls.spec
        config = apply_overrides(spec.config(), overrides.get(name, {}), f"method {name}")
        avail = cls.availability(config)
        if avail.ok and spec.needs_gpu and not device.startswith("cuda"):
            avail = Availability.no("needs a CUDA GPU (run with --device cuda on a GPU machine)")
        if avail.ok and recipe is not None:
            for stage in spec.stages:
                a = recipe.availability(stage)
                if not a.ok:
                    avail = Availability.no(f"recipe stage '{stage}' unavailable: {a.reason}")
                    break
        out.append(Resolved(name, cls, config, avail, spec, explicit, cls.variant(config)))
    return out


def resolve_metrics(requested: Sequence[str], overrides: dict[str, dict[str, str]]) -> list[Resolved]:
    reg = metric_registry()
    names, explicit = _names(requested, reg.names())
    out = []
    for name in names:
        reg.entry(name)
        try:
            cls = reg.load(name)
        except Exception as e:
            out.append(Resolved(name, None, None, Availability.no(f"cannot import: {type(e).__name__}: {e}"),
                                explicit=explicit))
            continue
        spec: MetricSpec = cls.spec
        config = apply_overrides(spec.config(), overrides.get(name, {}), f"metric {name}")
        spec = cls.spec_for(config) if hasattr(cls, "spec_for") else spec  # value names may follow the config
        out.append(Resolved(name, cls, config, cls.availability(config), spec, explicit))
    return out


def build_requests(dataset: Dataset, split: str, cross: bool) -> list[Request]:
    clips = tuple(c for c in dataset.split(split) if not c.audio_only)  # driving audio is never a target
    if not clips:
        have = sorted({c.split for c in dataset.clips})
        raise RunError(f"dataset {dataset.name!r} has no clips in split {split!r} (it has: {', '.join(have)})")
    requests = [Request(c.id, "self", c, c) for c in clips]
    if cross:
        in_split = {c.id for c in clips}
        for p in dataset.pairs:
            if p.video_clip in in_split:
                requests.append(Request(f"{p.video_clip} <- {p.audio_clip}", "cross",
                                        dataset.clip(p.video_clip), dataset.clip(p.audio_clip)))
    return requests


def dataset_options(limit: int | None, subjects: tuple[str, ...], test_seconds: float | None, pairs: str | None):
    from data_recipes.datasets import DatasetOptions

    return DatasetOptions(limit=limit, subjects=tuple(subjects), test_seconds=test_seconds, pairs=pairs)


def default_run_id(config: RunConfig) -> str:
    name = config.dataset.partition(":")[0]
    return f"{name}-{content_key('run', config.identity())[:10]}"


def dataset_summary(dataset: Dataset, recipe: Recipe, argument: str | None) -> dict[str, Any]:
    fingerprints = [[c.id, c.split, c.subject, recipe.clip_fingerprint(c)] for c in dataset.clips]
    splits: dict[str, int] = {}
    for c in dataset.clips:
        splits[c.split] = splits.get(c.split, 0) + 1
    return {
        "name": dataset.name, "argument": argument, "description": dataset.description,
        "content_hash": content_key("dataset", fingerprints, [[p.video_clip, p.audio_clip] for p in dataset.pairs]),
        "clips": len(dataset.clips), "splits": splits, "pairs": len(dataset.pairs),
        "sync_protocol": dataset.sync_protocol, "source": dataset.source, "notes": list(dataset.notes),
    }


# ------------------------------------------------------------------------------------------ rows


def _rows_for(scores: dict[str, Score], spec: MetricSpec, base: dict[str, Any], n_frames: int) -> list[ResultRow]:
    rows = []
    for v in spec.values:
        s = scores.get(v.name) or Score.missing("failed", f"metric returned no value for {v.name}")
        value = s.value if s.status == "ok" else float("nan")
        rows.append(ResultRow(**base, metric=v.name, family=spec.name, value=value, status=s.status,
                              reason=s.reason, unit=v.unit, better=v.better, published=spec.published,
                              n_frames=n_frames, extra=extra_json(dict(s.extra))))
    return rows


def _missing_rows(metrics: Iterable[Resolved], base: dict[str, Any], status: str, reason: str,
                  kind: str) -> list[ResultRow]:
    rows = []
    for m in metrics:
        if m.spec is None or (m.spec.needs_ground_truth and kind != "self"):
            continue
        rows.extend(_rows_for({v.name: Score.missing(status, reason) for v in m.spec.values}, m.spec, base, 0))
    return rows


def _write_part(layout: RunLayout, method: str, request_id: str, rows: list[ResultRow],
                stamp: dict[str, str] | None = None) -> None:
    path = layout.part(method, request_id)
    write_parquet(path, to_frame(rows), stamp)


# ------------------------------------------------------------------------------------------ samples


def strip_indices(num_frames: int, k: int) -> list[int]:
    """The same frame indices for every method: spread over the clip, away from the last frames
    (Wav2Lip's mel rule may return a few frames fewer)."""
    last = max(num_frames - 6, 0)
    return sorted({int(round(x)) for x in np.linspace(0, last, max(k, 1))})


def _mouth_boxes(target: PreparedClip, indices: list[int]) -> dict[str, list[float]]:
    try:
        if not target.recipe.is_cached(target.clip, "faces"):
            return {}
        lm = target.stage("faces").array("landmarks68", mmap=True)
    except Exception:
        return {}
    boxes = {}
    for i in indices:
        if i < len(lm) and not np.isnan(lm[i, 48:68]).any():
            pts = lm[i, 48:68]
            x1, y1 = pts.min(axis=0)
            x2, y2 = pts.max(axis=0)
            pad = 0.35 * max(x2 - x1, y2 - y1)
            boxes[str(i)] = [float(x1 - pad), float(y1 - pad), float(x2 + pad), float(y2 + pad)]
    return boxes


def write_samples(folder: Path, frames: Any, audio: np.ndarray | None, indices: list[int],
                  info: dict[str, Any], preview: bool) -> None:
    """Strip frames as PNG and a small browser-playable preview; sample.json written last.

    `frames`: an array or a lazy video (`data_recipes.frames`); only the strip frames are decoded
    into memory, and the preview is downscaled frame by frame as it is encoded."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    used = []
    picked = [min(i, len(frames) - 1) for i in indices] if len(frames) else []
    strip = frames[picked] if isinstance(frames, np.ndarray) else frames.take(picked)
    for i, frame in zip(indices, strip):
        name = f"frame_{i:05d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        files.append(name)
        used.append(i)
    video = None
    if preview and len(frames):
        try:
            from data_recipes.media import write_video

            small = _downscale(frames, 256)
            write_video(folder / "video.mp4", small, fps=25, audio=audio, sample_rate=16000)
            video = "video.mp4"
        except Exception as e:  # a preview is a convenience; never lose a scored result over it
            info = {**info, "video_error": f"{type(e).__name__}: {e}"}
    atomic_write_text(folder / "sample.json", json.dumps(
        {**info, "frame_indices": used, "files": files, "video": video}, indent=1, default=str))


def _downscale(frames: Any, max_side: int) -> Iterator[np.ndarray]:
    """The frames with their longer side at most `max_side`, one at a time (never the whole video)."""
    import cv2

    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    if scale >= 1:
        yield from iter(frames)
        return
    size = (max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2))
    for f in frames:
        yield cv2.resize(f, size, interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------ generated-video cache


def _save_generated(folder: Path, result: GenerateResult) -> None:
    """frames.mkv (lossless) + result.json. Frames are encoded as they are read; a lossless file the
    method already wrote (`FileFrames(lossless=True)`) is copied instead of decoded and re-encoded."""
    from data_recipes.frames import FileFrames
    from data_recipes.media import write_video

    frames = result.frames
    if isinstance(frames, FileFrames) and frames.lossless and frames.path.suffix == ".mkv":
        shutil.copyfile(frames.path, folder / "frames.mkv")
    else:
        write_video(folder / "frames.mkv", frames, fps=25, lossless=True)
    (folder / "result.json").write_text(json.dumps({
        "timings": result.timings, "frames_without_face": result.frames_without_face,
        "info": result.info, "shape": list(frames.shape)}, default=str))


def _load_generated(folder: Path) -> GenerateResult:
    """The cached video as a lazy `FileFrames` (decoded when read, never held whole); its frame count
    and size are checked against result.json by demuxing alone."""
    from data_recipes.frames import FileFrames
    from data_recipes.media import video_timeline

    meta = json.loads((folder / "result.json").read_text())
    path = folder / "frames.mkv"
    tl = video_timeline(path)
    shape = [len(tl.pts), tl.height, tl.width, 3]
    if shape != meta["shape"]:
        raise RuntimeError(f"cached video {folder} has shape {tuple(shape)}, expected {meta['shape']}")
    frames = FileFrames(path, *shape[:3], lossless=True)
    return GenerateResult(frames=frames, timings=meta["timings"], frames_without_face=meta["frames_without_face"],
                          info={**meta["info"], "from_cache": True})


# ---------------------------------------------------------------------------------------------- run


class Runner:
    """One invocation of `bench run`. Build with a RunConfig, call `run()`."""

    def __init__(self, config: RunConfig, command: list[str] | None = None, progress: Progress | None = None,
                 cache: Cache | None = None):
        self.config = config
        self.command = command if command is not None else list(sys.argv)
        self.progress = progress or Progress()
        self.cache = cache or Cache()
        self.device = resolve_device(config.device)
        self.phases = _Phases()
        self._train_deadline: float | None = None   # `minutes` bound all training; set at the first fit
        self._fits_left = 0
        self._stage_seconds: dict[tuple[str, str], float | None] = {}
        self._refs_pending: dict[str, set[str]] = {}   # cache entries used, not yet in cache-refs.gz
        self._last_flush = 0.0
        self._phases_before: dict[str, float] = {}

    # -- setup

    def _setup(self) -> None:
        from data_recipes.datasets import load, parse

        cfg = self.config
        try:
            self.overrides = split_overrides(cfg.overrides)
            Budget.parse(cfg.budget)
        except (ConfigError, ValueError) as e:
            raise RunError(str(e)) from e
        self.budget = Budget.parse(cfg.budget)
        _, self.dataset_argument = parse(cfg.dataset)
        self.dataset = load(cfg.dataset, dataset_options(cfg.limit, cfg.subjects, cfg.test_seconds, cfg.pairs))
        self.recipe = Recipe(self.cache, self.progress, clips=self.dataset.clips, device=self.device)
        self._precision = run_precision(cfg.precision, self.device, self.progress)
        self.methods = resolve_methods(cfg.methods, self.overrides, self.device, self.recipe)
        self.metrics = resolve_metrics(cfg.metrics, self.overrides)
        known = {m.name for m in self.methods} | {m.name for m in self.metrics}
        for owner in self.overrides:
            if owner not in known:
                raise RunError(f"--set {owner}.*: no method or metric named {owner!r} in this run")
        self._check_budget_names()
        bad = [m for m in self.methods if m.explicit and not m.availability.ok]
        if bad:
            raise RunError("; ".join(f"method {m.name!r} is unavailable: {m.availability.reason}" for m in bad))
        if not any(m.availability.ok for m in self.methods):
            raise RunError("no method is available to run")
        self.requests = build_requests(self.dataset, cfg.split, cfg.cross)
        self.run_id = cfg.run_id or default_run_id(cfg)
        # Over the whole run's requests, so every shard picks the same ones (bench.layout)
        self._sampled = sampled_requests([(r.id, r.kind) for r in self.requests], cfg.samples)
        self.shard_plan = None
        folder = self.run_id
        if cfg.shard:
            from bench.shard import Shard, ShardError, plan

            try:
                shard = Shard.parse(cfg.shard)
            except ShardError as e:
                raise RunError(str(e)) from e
            self.shard_plan = plan([(r.id, r.target.subject) for r in self.requests], shard)
            folder = shard.folder(self.run_id)
        self.layout = RunLayout(Path(cfg.runs_dir) / folder)

    def _fingerprint_all(self, workers: int) -> None:
        """Hash every clip's media once, up front, several files at once, with a bar: the recipe keeps
        each clip's fingerprint, so the stage, fit and video keys computed later cost nothing more
        (hashlib and file reads release the GIL; the on-disk memo serves the next run)."""
        from concurrent.futures import ThreadPoolExecutor

        clips = self.dataset.clips
        with self.progress.task(f"hashing the media of {len(clips)} clips", len(clips)) as bar, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash") as pool:
            for _ in pool.map(self.recipe.clip_fingerprint, clips, chunksize=64):
                bar.advance()

    def _in_shard(self, spec: MethodSpec, r: Request) -> bool:
        """Whether this process runs `r` for a method (always, unless --shard): subject-scope methods
        are split by the target's subject (its fit and requests together), others by request."""
        if self.shard_plan is None:
            return True
        by_subject = any(p.scope == "subject" for p in spec.fit_parts())
        return self.shard_plan.mine(r.id, r.target.subject, by_subject)

    def _open_manifest(self) -> dict[str, Any]:
        from bench.hardware import fingerprint, package_versions

        identity = content_key("run", self.config.identity())
        hardware = fingerprint()
        if self.layout.manifest.exists():
            m = mf.read(self.layout.manifest)
            if m.get("identity") != identity:
                raise RunError(f"{self.layout.root} holds a run made with a different configuration; "
                               "choose another --run-id or remove that folder")
            if m.get("hardware", {}).get("id") != hardware["id"]:
                old = m.get("hardware", {})
                why = ("its hardware fingerprint was made by an older talkbench" if
                       old.get("fingerprint_version") != hardware["fingerprint_version"] else
                       f"it was started on other hardware ({old.get('label')}, this is {hardware['label']})")
                raise RunError(f"{self.layout.root}: {why}; its timings would mix machines: use another --run-id")
            if (m.get("shard") or {}).get("label") != (self.shard_plan.shard.label if self.shard_plan else None):
                raise RunError(f"{self.layout.root} holds shard {(m.get('shard') or {}).get('label')} of this run, "
                               f"not {self.config.shard}; use another --run-id")
            self.progress.log(f"resuming run {self.run_id} ({self.layout.root})")
        else:
            m = mf.new(self.run_id, self.command, to_jsonable(self.config), self.config.seed, hardware,
                       package_versions())
            m["identity"] = identity
        if self.shard_plan is not None:
            sh = self.shard_plan.shard
            m["shard"] = {"index": sh.index, "count": sh.count, "label": sh.label,
                          "rule": "by request (round-robin over sorted ids); by subject for methods with "
                                  "subject parts (bench.shard)"}
        m["status"] = "running"
        # Phase times of earlier invocations; this one's are added at every manifest write, so a
        # killed invocation still leaves its time up to its last write (bench.manifest: phases).
        self._phases_before = {k: float(v) for k, v in (m.get("phases") or {}).items()}
        stages, self._versions = self._part_versions()
        self._scan_parts = mf.may_hold_other_versions(m, self._versions)
        mf.begin_invocation(m, self.command, hardware, stages, self._versions)
        self._commit = mf.commit_text(m["git"])
        m["device"] = self.device
        m["precision"] = {**self._precision, "stages": m.get("precision", {}).get("stages", {})}
        t0 = time.monotonic()
        self._fingerprint_all(max(4, 2 * self.config.workers))
        m["dataset"] = dataset_summary(self.dataset, self.recipe, self.dataset_argument)
        self.phases.add("plan", t0)
        for r in self.methods:
            entry = m["methods"].setdefault(r.name, {"fits": []})
            entry.update({"available": r.availability.ok, "reason": r.availability.reason,
                          "config": to_jsonable(r.config), "spec": _spec_json(r.spec), "variant": r.variant})
        for r in self.metrics:
            entry = m["metrics"].setdefault(r.name, {})
            entry.update({"available": r.availability.ok, "reason": r.availability.reason,
                          "config": to_jsonable(r.config),
                          "values": [dataclasses.asdict(v) for v in r.spec.values] if r.spec else [],
                          "published": bool(r.spec.published) if r.spec else True,
                          "description": r.spec.description if r.spec else ""})
        self.layout.root.mkdir(parents=True, exist_ok=True)
        mf.write(self.layout.manifest, m)
        return m

    def _part_versions(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """The run's stage settings, and per method the versions string its result rows carry
        (its version and config, every metric's, and the stages it and the metrics read)."""
        metric_stages = {s for m in self.metrics if m.spec is not None for s in m.spec.stages}
        common = {"normalise", *REPORT_STAGES, *metric_stages}
        stages = mf.stage_settings(sorted(common | {s for m in self.methods if m.spec for s in m.spec.stages}),
                                   self.recipe)
        versions = {}
        for m in self.methods:
            used = mf.stage_settings(sorted(common | set(m.spec.stages if m.spec else ())), self.recipe)
            versions[m.name] = mf.part_versions(m, self.metrics, used)
        return stages, versions

    def _write_part(self, method: str, request_id: str, rows: list[ResultRow]) -> None:
        """The part, stamped with this invocation's commit and versions (even when it has no rows)."""
        _write_part(self.layout, method, request_id, rows,
                    {"commit": self._commit, "versions": self._versions[method]})

    def _part_done(self, method: str, request_id: str) -> bool:
        """A part counts as done when it exists and was made under this invocation's versions; a part
        made under other versions is recomputed (its rows are replaced), never mixed with new ones."""
        path = self.layout.part(method, request_id)
        if not path.exists():
            return False
        if not self._scan_parts:
            return True
        from bench.results import part_versions

        found = part_versions(path)
        if found is not None and found[1] in ("", self._versions[method]):  # "": a part without rows
            return True
        changes = mf.version_changes(found[1] if found else "", self._versions[method])
        self.progress.log(f"note: {method} / {request_id!r}: made under other versions "
                          f"({'; '.join(changes) or 'unreadable part'}): recomputing")
        return False

    # -- phases

    def _prepare(self) -> dict[str, str]:
        """Run every needed stage (both cores); returns {clip id: error} for clips that cannot be prepared.

        Stages only the report uses (REPORT_STAGES) are optional: where they fail, the clip still runs.
        """
        from data_recipes.prepare import prepare_all, recorded_precisions
        from data_recipes.quality import consumer
        from data_recipes.recipe import audio_stages

        t0 = time.monotonic()
        active = [m for m in self.methods if m.availability.ok]
        # the input checks' length gate compares each clip with what these need (data_recipes.quality)
        consumers = [consumer(m.name, m.spec) for m in [*active, *(x for x in self.metrics if x.availability.ok)]]
        metric_stages = {s for m in self.metrics if m.availability.ok for s in m.spec.stages}
        needed: dict[str, tuple[Clip, set[str]]] = {}

        def need(clip: Clip, stages: Iterable[str]) -> None:
            needed.setdefault(clip.id, (clip, set()))[1].update(stages)

        mine: dict[str, Request] = {}   # this shard's requests (all of them unless --shard)
        for r in self.requests:
            ours = [m for m in active if self._in_shard(m.spec, r)]
            if not ours:
                continue
            mine[r.id] = r
            need(r.target, ("normalise", *metric_stages))
            need(r.driving, ("normalise",))
            for m in ours:
                need(r.target, m.spec.stages)
                need(r.driving, audio_stages(m.spec.stages) if r.driving.audio_only else m.spec.stages)
        fit_clips = self._fit_clips()
        for m in active:
            parts = m.spec.fit_parts()
            if parts:
                dataset_part = any(p.scope == "dataset" for p in parts)
                for c in fit_clips:   # a shard needs every clip for dataset parts, its subjects' otherwise
                    if dataset_part or self.shard_plan is None or self.shard_plan.mine("", c.subject, True):
                        need(c, m.spec.stages)
        for m in self.metrics:
            if m.availability.ok and m.spec.fit_scope == "dataset":
                for c in fit_clips:
                    need(c, ("normalise", *m.spec.stages))
        groups: dict[frozenset[str], list[Clip]] = {}
        for clip, stages in needed.values():
            groups.setdefault(frozenset(stages), []).append(clip)
        errors: dict[str, str] = {}
        checks: dict[str, Any] = {}
        for stages, clips in groups.items():
            report = prepare_all(self.recipe, clips, sorted(stages), self.config.workers, self.progress,
                                 consumers=consumers)
            errors.update(report)
            checks.update(report.checks)
        targets = list({r.target.id: r.target for r in mine.values() if r.target.id not in errors}.values())
        report = prepare_all(self.recipe, targets, list(REPORT_STAGES), self.config.workers, self.progress,
                             consumers=consumers)
        checks.update(report.checks)  # the targets' checks again, with their faces now known
        self._input_checks = checks
        self._manifest["input_checks"] = {cid: c.to_json() for cid, c in checks.items()}
        self.phases.add("prepare", t0)
        self._manifest["precision"]["stages"] = recorded_precisions(self.recipe, needed.values())
        for clip, stages in [*needed.values(), *((c, set(REPORT_STAGES)) for c in targets)]:
            for stage in _ordered(stages):
                self._ref(f"stages/{stage}", self.recipe.key(clip, stage))
        self._flush()
        return errors

    def _fit_metrics(self, manifest: dict[str, Any], clip_errors: dict[str, str]) -> dict[str, Metric]:
        instances: dict[str, Metric] = {}
        train = [c for c in self._fit_clips() if c.id not in clip_errors]
        for m in self.metrics:
            if not m.availability.ok:
                continue
            # Not keyed by the budget (a larger one continues the scorer's checkpoint, as method fits
            # do), but by whether the device does bf16 natively: "auto" resolves differently there.
            key = content_key("metric", m.name, getattr(m.spec, "version", "1"), to_jsonable(m.config),
                              self.config.seed,
                              [self.recipe.clip_fingerprint(c) for c in train] if m.spec.fit_scope == "dataset" else [],
                              self._precision["key"][1])
            ctx = MetricContext(work_dir=self.cache.scratch(f"metric-fits/{m.name}", key), cache=self.cache,
                                progress=self.progress, device=self.device, seed=self.config.seed)
            self._ref(f"metric-fits/{m.name}", key)
            metric = m.cls(m.config, ctx)
            if m.spec.fit_scope == "dataset":
                if not train:
                    m.availability = Availability.no("needs training clips in the dataset to train its scorer")
                    manifest["metrics"][m.name].update(available=False, reason=m.availability.reason)
                    continue
                t0 = time.monotonic()
                try:
                    with self._fit_lock(f"metric-fits/{m.name}", key, f"training metric {m.name}'s scorer"):
                        clips = [self.recipe.prepare(c) for c in train]
                        with malloc.training():
                            summary = metric.fit(clips, self._fit_budget(m.name))
                except Exception as e:
                    m.availability = Availability.no(f"training its scorer failed: {type(e).__name__}: {e}")
                    manifest["metrics"][m.name].update(available=False, reason=m.availability.reason)
                    self.progress.log(f"error: metric {m.name}: {m.availability.reason}")
                    continue
                finally:
                    self.phases.add("fit", t0)
                    self._fits_left = max(self._fits_left - 1, 0)
                manifest["metrics"][m.name]["fit"] = to_jsonable(summary)
            weights = metric.weights_used()
            manifest["metrics"][m.name]["weights"] = weights
            if hasattr(metric, "precision_used"):  # metrics with a network say what it runs at
                manifest["metrics"][m.name]["precision"] = to_jsonable(metric.precision_used())
            for w in weights:
                mf.record_weight(manifest, w.get("role", m.name), w.get("path", ""), w.get("sha256", ""),
                                 w.get("origin", ""), f"metric:{m.name}")
            instances[m.name] = metric
        return instances

    def _fit_lock(self, namespace: str, key: str, what: str):
        """The fit folder's inter-process lock: a second process (another run or shard on the same
        cache) waits here, then finds the finished checkpoints and continues or reuses them."""
        def waiting(holder: dict[str, Any]) -> None:
            from bench.locks import describe_holder

            self.progress.log(f"waiting: {what} is in progress in {describe_holder(holder)}; "
                              "its result will be reused")

        return self.cache.lock(namespace, key, f"bench run {self.run_id}: {what}", wait=True, on_wait=waiting)

    def _ref(self, namespace: str, key: str) -> None:
        """Record a cache entry this run uses (`cache-refs.gz`, what `bench cache --prune` keeps)."""
        self._refs_pending.setdefault(namespace, set()).add(key)

    def _flush(self, force: bool = True) -> None:
        """Write the manifest (this invocation's phase times added to the earlier ones) and the
        pending cache references. force=False: at most every FLUSH_SECONDS (called per request)."""
        now = time.monotonic()
        if not force and now - self._last_flush < FLUSH_SECONDS:
            return
        self._last_flush = now
        m = self._manifest
        current = dict(self.phases.seconds)
        m["phases"] = {k: round(self._phases_before.get(k, 0.0) + current.get(k, 0.0), 3)
                       for k in {*self._phases_before, *current}}
        if m.get("history"):
            m["history"][-1]["phases"] = {k: round(v, 3) for k, v in current.items()}
        mf.write(self.layout.manifest, m)
        if self._refs_pending:
            from bench.cache import append_refs

            append_refs(self.layout.cache_refs, self._refs_pending)
            self._refs_pending = {}

    def _fit_clips(self) -> list[Clip]:
        """What `fit` sees: the train split, then the val split (held-out evaluation only)."""
        return [*self.dataset.split("train"), *self.dataset.split("val")]

    def _groups(self, spec: MethodSpec) -> list[tuple[str, str | None, list[Request]]]:
        """(label, subject, requests): one group per subject when the method has subject parts
        (that subject's parts are fitted, then its requests generated), else one group."""
        reqs = [r for r in self.requests if (spec.cross_driven or r.kind == "self") and self._in_shard(spec, r)]
        parts = spec.fit_parts()
        if not any(p.scope == "subject" for p in parts):
            return [("dataset" if parts else "none", None, reqs)]
        return [(f"subject:{s}", s, [r for r in reqs if r.target.subject == s])
                for s in sorted({r.target.subject for r in reqs})]

    def _check_budget_names(self) -> None:
        """Every `<method>.<name>=N` in --budget names a part (or counter) of a method in this run."""
        specs = {m.name: m.spec for m in self.methods}
        for key, _ in self.budget.part_steps:
            method, _, name = key.partition(".")
            if method not in specs:
                raise RunError(f"--budget {key}: no method named {method!r} in this run "
                               f"(methods: {', '.join(specs)})")
            spec = specs[method]
            if spec is not None and name not in spec.budget_names():
                known = ", ".join(spec.budget_names()) or "none: it trains nothing"
                raise RunError(f"--budget {key}: method {method!r} has no part or counter {name!r} (known: {known})")

    def _count_fits(self, clip_errors: dict[str, str]) -> int:
        """Fits this invocation may still run (metric scorers, dataset parts, subject parts x subjects):
        the divisor that shares `minutes` out."""
        n = sum(1 for m in self.metrics if m.availability.ok and m.spec.fit_scope == "dataset")
        for m in self.methods:
            if not m.availability.ok:
                continue
            for label, subject, reqs in self._groups(m.spec):
                if not any(not self.layout.part(m.name, r.id).exists() for r in reqs):
                    continue
                n += sum(1 for p in m.spec.fit_parts() if p.scope == "subject")
            n += sum(1 for p in m.spec.fit_parts() if p.scope == "dataset")
        return n

    def _fit_budget(self, name: str) -> Budget:
        """The budget one fit gets: the run's, bound to `name`, with `minutes` = an equal share of the
        training time left across the fits still to do (minutes bound all training of the run)."""
        b = self.budget.for_method(name)
        if self.budget.minutes is None:
            return b
        if self._train_deadline is None:
            self._train_deadline = time.monotonic() + 60.0 * self.budget.minutes
        left = max(self._train_deadline - time.monotonic(), 0.0)
        return b.with_minutes(left / max(self._fits_left, 1) / 60.0)

    def _fit_part(self, m: Resolved, method: Method, part: PartSpec, label: str, clips: list[Clip],
                  upstream: list[str]) -> tuple[str, FitReport]:
        """Fit one part in its own work folder; the key (and so the folder) leaves the budget out, so a
        larger budget continues the checkpoints there. Raises _FitFailed with the reason."""
        key = content_key("fit", m.name, m.spec.version, to_jsonable(m.config), label, part.name, self.config.seed,
                          [self.recipe.clip_fingerprint(c) for c in clips], upstream, self._precision["key"])
        method.context = self._method_context(m.name, key)
        budget = self._fit_budget(m.name)
        t0 = time.monotonic()
        self._ref(f"fits/{m.name}", key)
        try:
            with self._fit_lock(f"fits/{m.name}", key, f"fit of {m.name} ({label}, part {part.name})"):
                prepared = [self.recipe.prepare(c) for c in clips]
                with malloc.training():
                    if part.name == "model" and not m.spec.parts:
                        report = method.fit(prepared, budget)
                    else:
                        report = method.fit_part(part, prepared, budget)
        except Exception as e:
            if not isinstance(e, InputUnusable):  # the input is at fault: the reason says it all
                traceback.print_exc(file=sys.stderr)
            raise _FitFailed(f"fit failed ({label}, part {part.name}): {type(e).__name__}: {e}") from e
        finally:
            self.phases.add("fit", t0)
            self._fits_left = max(self._fits_left - 1, 0)
        self._record_fit(m.name, label, report, part.name, budget)
        return key, report

    def _method_context(self, name: str, key: str) -> MethodContext:
        self._ref(f"fits/{name}", key)
        return MethodContext(work_dir=self.cache.scratch(f"fits/{name}", key), cache=self.cache,
                             progress=self.progress, device=self.device, seed=self.config.seed,
                             precision=self.config.precision)  # type: ignore[arg-type]

    def _run_method(self, m: Resolved, metrics: dict[str, Metric], clip_errors: dict[str, str],
                    outcome: RunOutcome) -> None:
        """Dataset parts once, then per group (subject): its subject parts, then its requests."""
        manifest = self._manifest
        pending = []
        for label, subject, reqs in self._groups(m.spec):
            todo = [r for r in reqs if not self._part_done(m.name, r.id)]
            outcome.skipped += len(reqs) - len(todo)
            todo = self._passing_input_checks(m, todo)
            if todo:
                pending.append((label, subject, todo))
        if not pending:
            return
        parts = m.spec.fit_parts()
        train = [c for c in self._fit_clips() if c.id not in clip_errors]
        base_key = content_key("fit", m.name, m.spec.version, to_jsonable(m.config), "none", self.config.seed,
                               self._precision["key"])
        method: Method = m.cls(m.config, self._method_context(m.name, base_key))

        def fail(todo: list[Request], reason: str) -> None:
            self.progress.log(f"error: method {m.name}: {reason}")
            for r in todo:
                self._write_part(m.name, r.id,
                                 _missing_rows(self.metrics, self._base(r, m), "failed", reason, r.kind))

        keys: list[str] = []
        weights: list[str] = []
        try:
            if not parts:  # nothing to train: fit still runs once (it loads what generate needs)
                t0 = time.monotonic()
                try:
                    with malloc.training():
                        report = method.fit([], self.budget.for_method(m.name))
                except Exception as e:
                    traceback.print_exc(file=sys.stderr)
                    raise _FitFailed(f"fit failed (none): {type(e).__name__}: {e}") from e
                finally:
                    self.phases.add("fit", t0)
                self._record_fit(m.name, "none", report, "", None)
                keys.append(base_key)
                weights += [w.sha256 for w in report.weights]
            for part in (p for p in parts if p.scope == "dataset"):
                key, report = self._fit_part(m, method, part, "dataset", train, keys)
                keys.append(key)
                weights += [w.sha256 for w in report.weights]
        except _FitFailed as e:
            fail([r for _, _, todo in pending for r in todo], str(e))
            return
        for label, subject, todo in pending:
            group_keys, group_weights = list(keys), list(weights)
            try:
                for part in (p for p in parts if p.scope == "subject"):
                    clips = [c for c in train if c.subject == subject]
                    key, report = self._fit_part(m, method, part, label, clips, list(group_keys))
                    group_keys.append(key)
                    group_weights += [w.sha256 for w in report.weights]
            except _FitFailed as e:
                fail(todo, str(e))
                continue
            fit_key = content_key("fits", group_keys)
            for r in self.progress.track(todo, f"{m.name}: generate + score ({label})"):
                self._run_request(m, method, r, fit_key, group_weights, metrics, clip_errors)
                outcome.done += 1
                self._flush(force=False)
            self._flush()

    def _passing_input_checks(self, m: Resolved, todo: list[Request]) -> list[Request]:
        """The requests whose target clip passes the input checks for method `m`; the others are
        written as failed with the gates' reason before any fit is spent on them (no face for a
        method that needs faces, too short for it: data_recipes.quality)."""
        from data_recipes.quality import blocking, needs_faces

        checks = getattr(self, "_input_checks", {})
        faces = needs_faces(m.spec.stages)
        passing = []
        for r in todo:
            why = blocking(checks.get(r.target.id), m.name, faces)
            if why is None:
                passing.append(r)
                continue
            reason = f"input check failed for clip {r.target.id!r}: {why}"
            self.progress.log(f"error: {m.name} on {r.id!r}: {reason}")
            self._write_part(m.name, r.id, _missing_rows(self.metrics, self._base(r, m), "failed", reason,
                                                         r.kind))
        return passing

    def _record_fit(self, method: str, scope: str, report: FitReport, part: str = "",
                    budget: Budget | None = None) -> None:
        """One manifest entry per (scope, part): steps trained (in all and per counter), where it
        continued from, the budget it was given (with its share of the run's minutes)."""
        manifest = self._manifest
        old = [f for f in manifest["methods"][method].get("fits", []) if (f.get("scope"), f.get("part", "")) == (scope, part)]
        fits = [f for f in manifest["methods"][method].get("fits", []) if f not in old]
        entry = {"scope": scope, "part": part, **to_jsonable(dataclasses.asdict(report))}
        if budget is not None:
            entry["minutes_share"] = budget.minutes
        # the latest report, plus what every invocation did (a resume continues or reuses the fit)
        earlier = (old[0].get("history") or [_fit_summary(old[0], None)]) if old else []
        entry["history"] = [*earlier, _fit_summary(entry, manifest.get("invocations"))]
        fits.append(entry)
        manifest["methods"][method]["fits"] = fits
        manifest["methods"][method].setdefault("precision", {}).update(to_jsonable(dict(report.precision)))
        for w in report.weights:
            mf.record_weight(manifest, w.role, w.path, w.sha256, w.origin, f"method:{method}", w.note)
        self._flush()

    def _base(self, r: Request, m: Resolved) -> dict[str, Any]:
        return {"run_id": self.run_id, "dataset": self.dataset.name, "split": self.config.split,
                "request_id": r.id, "kind": r.kind, "clip_id": r.target.id, "audio_clip": r.driving.id,
                "subject": r.target.subject, "method": m.name, "variant": m.variant,
                "hardware": self._manifest["hardware"]["id"],
                "commit": self._commit, "versions": self._versions[m.name]}

    def _run_request(self, m: Resolved, method: Method, r: Request, fit_key: str, weights_id: list[str],
                     metrics: dict[str, Metric], clip_errors: dict[str, str]) -> None:
        base = self._base(r, m)
        for clip in {r.target.id, r.driving.id}:
            if clip in clip_errors:
                reason = f"clip {clip!r}: {clip_errors[clip]}"
                self._write_part(m.name, r.id, _missing_rows(self.metrics, base, "failed", reason, r.kind))
                return
        target, driving = self.recipe.prepare(r.target), self.recipe.prepare(r.driving)
        request = GenerateRequest(r.id, r.kind, target, driving, seed=self.config.seed)  # type: ignore[arg-type]
        # The stage keys carry each input stage's version and config: a recipe change regenerates the
        # video instead of scoring the cached one made from the old inputs.
        gen_key = content_key("generate", m.name, m.spec.version, fit_key, weights_id, r.kind,
                              self.recipe.clip_fingerprint(r.target), self.recipe.clip_fingerprint(r.driving),
                              [[self.recipe.key(c, s) for s in m.spec.stages] for c in (r.target, r.driving)],
                              self.config.seed)
        self._ref(f"generated/{m.name}", gen_key)
        t0 = time.monotonic()
        try:
            result = self._generate(method, request, m.name, gen_key)
        except Exception as e:
            self.phases.add("generate", t0)
            reason = f"generate failed: {type(e).__name__}: {e}"
            self.progress.log(f"error: {m.name} on {r.id!r}: {reason}")
            if not isinstance(e, InputUnusable):
                traceback.print_exc(file=sys.stderr)
            self._write_part(m.name, r.id, _missing_rows(self.metrics, base, "failed", reason, r.kind))
            return
        self.phases.add("generate", t0)

        t0 = time.monotonic()
        n = min(len(result.frames), request.num_frames)
        generated = result.frames[:n]
        from data_recipes.frames import ClipFrames

        # lazy ground truth: decoded chunk by chunk by each metric, never held whole (issue 16)
        gt = ClipFrames(target, 0, n) if r.kind == "self" else None
        audio = driving.audio()[: n * 640]
        protocol = self.dataset.sync_protocol
        timings = {**self._request_stage_seconds(m, r.driving), **result.timings}
        from metrics.sync.delivery import try_deliver  # the mp4 LSE scores, kept in the samples folder

        video_file, delivered = try_deliver(self.layout.samples(m.name, r.id), generated, target, driving,
                                            real=m.name == "reference" and r.kind == "self")
        sample = Sample(r.id, r.kind, generated, gt, audio, target, protocol, timings,  # type: ignore[arg-type]
                        video_file=video_file)
        _attach_load(sample, result.info.get("load"))
        rows: list[ResultRow] = []
        for mm in self.metrics:
            if mm.spec is not None and mm.spec.needs_ground_truth and r.kind != "self":
                continue
            if mm.name not in metrics:
                rows.extend(_missing_rows([mm], base, "unavailable", mm.availability.reason or "not loaded", r.kind))
                continue
            try:
                scores = metrics[mm.name].score(sample)
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                self.progress.log(f"error: metric {mm.name} on {m.name}/{r.id!r}: {reason}")
                scores = {v.name: Score.missing("failed", reason) for v in mm.spec.values}
            rows.extend(_rows_for(scores, mm.spec, base, n))
        self.phases.add("score", t0)

        # Strips and previews only where the report can show them (bench.layout.sampled_requests) or
        # the result is suspect; every request keeps its delivered mp4 (what LSE scored) regardless.
        if r.id in self._sampled or _suspect(rows):
            indices = strip_indices(request.num_frames, self.config.strip_frames)
            info = {"request_id": r.id, "kind": r.kind, "clip_id": r.target.id, "audio_clip": r.driving.id,
                    "mouth_boxes": _mouth_boxes(target, indices), "frames_without_face": result.frames_without_face,
                    "n_frames": n}
            write_samples(self.layout.samples(m.name, r.id), generated, audio, indices,
                          {**info, "method": m.name, "variant": m.variant, **delivered}, self.config.preview_videos)
            if gt is not None and not (self.layout.samples(GROUND_TRUTH, r.id) / "sample.json").exists():
                write_samples(self.layout.samples(GROUND_TRUTH, r.id), gt, audio, indices,
                              {**info, "method": GROUND_TRUTH}, self.config.preview_videos)
        self._write_part(m.name, r.id, rows)

    def _request_stage_seconds(self, m: Resolved, driving: Clip) -> dict[str, float]:
        """Seconds of the method's per-request recipe stages (mel, HuBERT, f0) on the driving clip, as
        "stage:<name>" timings: a deployed system computes them from every request's audio, so fps
        counts them. They are the seconds the stage code took when it computed the cached entry
        (`timing.json`); an entry measured on other hardware is timed again with the same code."""
        from data_recipes.recipe import stage_spec

        out = {}
        for stage in m.spec.stages:
            if not stage_spec(stage).per_request:
                continue
            memo = (driving.id, stage)
            if memo not in self._stage_seconds:
                try:
                    info = self.recipe.request_seconds(driving, stage)
                    if info is None or info.get("hardware") != self.recipe.hardware_id():
                        info = self.recipe.time_stage(driving, stage)
                    self._stage_seconds[memo] = float(info["seconds"])
                except Exception as e:  # a missing timing must not lose the video's other scores
                    self.progress.log(f"note: no timing for stage {stage!r} of {driving.id!r}: {e}")
                    self._stage_seconds[memo] = None
            if self._stage_seconds[memo] is not None:
                out[f"stage:{stage}"] = self._stage_seconds[memo]
        return out

    def _generate(self, method: Method, request: GenerateRequest, name: str, key: str) -> GenerateResult:
        ns = f"generated/{name}"
        if self.cache.has(ns, key):
            try:
                return _load_generated(self.cache.entry(ns, key))
            except Exception as e:  # a damaged cache entry is regenerated, not trusted
                self.progress.log(f"note: cached video for {name}/{request.id!r} unreadable ({e}); regenerating")
                shutil.rmtree(self.cache.entry(ns, key), ignore_errors=True)
        _seed_everything(request.seed)
        from metrics.fps import load_average

        load_before = load_average()
        result = method.generate(request)
        # the load while this video was timed travels with it (cached videos keep their original)
        result.info["load"] = {"load1_before": load_before, "load1_after": load_average(),
                               "cores": _usable_cores(), "measured": "around generate"}
        from data_recipes.frames import FileFrames

        owned = isinstance(result.frames, FileFrames) and result.frames.owned is not None
        try:
            with self.cache.write(ns, key) as tmp:
                _save_generated(tmp, result)
        finally:
            if owned:
                result.frames.close()   # the method's temporary file: its copy is in the cache now
        if owned:   # scored from the (lossless, bit-equal) cache copy, as a stream
            return dataclasses.replace(result, frames=_load_generated(self.cache.entry(ns, key)).frames)
        return result

    # -- entry

    def run(self) -> RunOutcome:
        t_start = time.monotonic()
        malloc.apply(malloc.STREAMING)   # frame and metric buffers go back to the system when freed
        self._setup()
        # what a killed process left in the cache (its writer is gone); at most once an hour
        self.cache.sweep(min_age_s=600.0, throttle_s=3600.0)
        with self._run_lock(), _TerminateAsInterrupt():
            return self._run(t_start)

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[Any]:
        """The run folder's lock, held for the whole invocation: a second `bench run` of the same
        folder is refused (RunBusy) instead of doing every request a second time beside the first."""
        from bench.locks import FileLock, LockBusy, describe_holder

        self.layout.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.layout.lock, f"bench run {self.run_id}", wait=True, timeout=2.0,
                        warn=self.progress.log)
        try:
            lock.acquire()
        except LockBusy as e:
            raise RunBusy(f"{self.layout.root} is in use by another `bench run` ({describe_holder(e.holder)}); "
                          "wait for it to end (it resumes from what is done), or use another --run-id") from None
        try:
            yield lock
        finally:
            lock.release()

    def _run(self, t_start: float) -> RunOutcome:
        with self.progress:
            self._manifest = manifest = self._open_manifest()
            outcome = RunOutcome(self.layout.root, None, manifest)
            try:
                self.progress.log(f"run {self.run_id}: dataset {self.dataset.name} ({len(self.requests)} requests), "
                                  f"methods {', '.join(m.name for m in self.methods if m.availability.ok)}")
                for m in self.methods:
                    if not m.availability.ok:
                        self.progress.log(f"  unavailable method {m.name}: {m.availability.reason}")
                for m in self.metrics:
                    if not m.availability.ok:
                        self.progress.log(f"  unavailable metric {m.name}: {m.availability.reason}")
                clip_errors = self._prepare()
                manifest["clip_errors"] = clip_errors
                self._fits_left = self._count_fits(clip_errors)
                metrics = self._fit_metrics(manifest, clip_errors)
                for m in self.methods:
                    if m.availability.ok:
                        self._run_method(m, metrics, clip_errors, outcome)
                t0 = time.monotonic()
                results = collect_parts(self.layout.root)
                write_parquet(self.layout.results_parquet, results)
                write_csv(self.layout.results_csv, results)
                outcome.results = results
                self.phases.add("collect", t0)
            except KeyboardInterrupt:
                manifest["status"] = "interrupted"
                self._close_manifest(manifest, t_start)
                raise
            except BaseException as e:
                manifest["status"] = "failed"
                manifest["error"] = f"{type(e).__name__}: {e}"
                self._close_manifest(manifest, t_start)
                raise
            manifest["status"] = "complete"
            manifest.pop("error", None)
            self._close_manifest(manifest, t_start)
            if self.shard_plan is not None:
                self.progress.log(f"shard {self.shard_plan.shard.label} done; when every shard is, combine them: "
                                  f"bench merge {Path(self.config.runs_dir) / (self.run_id + '.shard-*')}")
            elif self.config.report:
                outcome.report = self._report()
            mf.write(self.layout.manifest, manifest)
        self.recipe.models.close()  # the landmarkers' native graphs; the pool would rebuild on reuse
        return outcome

    def _close_manifest(self, manifest: dict[str, Any], t_start: float) -> None:
        wall = round(time.monotonic() - t_start, 3)
        manifest["last_invocation"] = {"phases": {k: round(v, 3) for k, v in self.phases.seconds.items()},
                                       "wall_seconds": wall}
        manifest["finished"] = mf.now_iso()
        if manifest.get("history"):
            manifest["history"][-1].update(status=manifest.get("status"), finished=manifest["finished"],
                                           wall_seconds=wall)
        self._flush()   # phases = earlier invocations' + this one's
        self._phases_before = {k: float(v) for k, v in manifest["phases"].items()}
        self.phases.seconds.clear()

    def _report(self) -> Path | None:
        t0 = time.monotonic()
        try:
            from reports.build import build_report
        except ImportError as e:
            self.progress.log(f"note: no report written (reports unavailable: {e})")
            return None
        try:
            path = build_report([self.layout.root], progress=self.progress)
        except Exception as e:
            self.progress.log(f"error: report failed: {type(e).__name__}: {e} (results are saved; "
                              f"retry with `bench report {self.layout.root}`)")
            traceback.print_exc(file=sys.stderr)
            return None
        mf.add_phase(self._manifest, "report", time.monotonic() - t0)
        return path


def _suspect(rows: Sequence[ResultRow]) -> bool:
    """A request worth a look in the report: a failed value, or a degenerate output_check verdict."""
    return any(r.status == "failed" or (r.family == "output_check" and r.status == "ok" and r.value >= 0.5)
               for r in rows)


def _fit_summary(entry: dict[str, Any], invocation: Any) -> dict[str, Any]:
    """One invocation's line in a fit's history: steps reached, where it continued from, seconds."""
    return {"invocation": invocation, "steps": entry.get("steps"), "resumed_from": entry.get("resumed_from"),
            "seconds": entry.get("seconds"), "budget": entry.get("budget")}


def _ordered(stages: set[str]) -> list[str]:
    from data_recipes.recipe import stage_order

    return stage_order(sorted(stages))


def run_precision(requested: str, device: str, progress: Progress | None = None) -> dict[str, Any]:
    """The run's precision request for the manifest: what was asked, what the device does natively
    and what "auto" gives there (each component records what it actually ran at), plus `key`: what
    fit and generation cache keys hash, so a cached fit or video made at another precision is not
    reused. Warns once when an explicit request will be emulated (slow) on this device."""
    from bench.precision import capability, choose

    try:
        chosen = choose(device, requested, faithful=False)
    except ValueError as e:
        raise RunError(str(e)) from e
    cap = capability(device)
    if chosen.slow and progress is not None:
        progress.log(f"warning: --precision {requested}: {chosen.reason}")
    return {"requested": requested, "device": device, "capability": dataclasses.asdict(cap),
            "auto": choose(device, "auto", cap=cap, faithful=False).to_json(), "key": [requested, cap.native_bf16]}


def _spec_json(spec: Any) -> dict[str, Any]:
    if spec is None:
        return {}
    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "config"}
    return to_jsonable(d)


def _usable_cores() -> int:
    from bench.hardware import cores

    return cores()


def _attach_load(sample: Sample, load: Any) -> None:
    from metrics.fps import attach_load

    attach_load(sample, load if isinstance(load, dict) else None)


def _seed_everything(seed: int) -> None:
    """Methods should use their own generators; this is a safety net for those that do not."""
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def run(config: RunConfig, command: list[str] | None = None, progress: Progress | None = None,
        cache: Cache | None = None) -> RunOutcome:
    """Run the benchmark as configured; see the module docstring."""
    return Runner(config, command, progress, cache).run()
