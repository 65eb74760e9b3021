"""Declarative, cached preparation stages and the `PreparedClip` that methods and metrics read.

A stage is a pure function of (clip media, upstream stage outputs, typed config) that writes files
into a folder. Its cache key is the hash of the clip's content, its config, its code `version` and
its upstream keys, so changing any of them recomputes it and everything downstream, and nothing else.
Stages are registered by name in `STAGES` with a lazy "module:function" entry, so asking for
"normalise" never imports HuBERT.

Two levels. A clip stage ("clip", the default) is computed per clip. A subject stage ("subject") is
computed once per subject from the subject's source clips and read by every clip of that subject
through the same `PreparedClip.stage(name)`: one 3DMM identity and camera, one background plate,
one head-crop frame of reference for the train, val and test segments of one video. The Recipe
learns the subjects from the clips it is given (`Recipe(..., clips=dataset.clips)`); the source
clips of a subject are its train-split clips (the frames a person-specific method may learn
from; nothing of a test segment leaks into what every segment shares), or all of its clips when
it has no train clip. A clip the Recipe was not given is a subject of its own. A subject stage's
key hashes its config, version, the subject's name, the content of every source clip and the
upstream keys (of every source clip for clip stages), so adding or changing a training segment
recomputes it and the clip stages that read it, and nothing else.

Timing. Every computed entry records `timing.json` (wall seconds of the stage function, and the
parts a stage timed itself with `ctx.timed(name)`); for `per_request` stages (audio features a
deployed system computes from each request's driving audio) the runner adds those seconds to the
request's fps timings, so the fps metric sees the same code that produced the features.
"""

from __future__ import annotations

import contextlib
import os
import importlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from bench.availability import Availability
from bench.cache import Cache, content_key, file_sha256
from bench.progress import Progress
from data_recipes.clip import Clip
from data_recipes.models import ModelPool


@dataclass(frozen=True)
class StageSpec:
    """A preparation stage.

    `entry` is "module:function"; the function takes a `StageContext` and writes its outputs into
    `ctx.out_dir`. `config` is "module:Class" of its config dataclass (defaults = the documented recipe).
    Bump `version` whenever the stage's output for the same inputs changes.
    `availability` is an optional "module:function" taking the config and returning `Availability`.
    `level`: "clip" (per clip) or "subject" (once per subject from its source clips; see the module
    docstring); a subject stage may require clip stages (it gets them for every source clip in
    `ctx.clip_inputs`) and subject stages; a clip stage may require subject stages (`ctx.inputs`).
    `per_request`: the stage is part of what a deployed system runs for every request from its
    driving audio (mel, HuBERT, f0); its measured seconds count into the request's fps.
    """

    name: str
    description: str
    entry: str
    config: str
    version: str = "1"
    requires: tuple[str, ...] = ()
    availability: str | None = None
    level: Literal["clip", "subject"] = "clip"
    per_request: bool = False
    config_from: str | None = None  # share another stage's config (a subject stage and its clip stage)


@dataclass(frozen=True)
class NoConfig:
    """For stages without options."""


class StageOutput:
    """A finished stage's folder: arrays as .npy, metadata as .json, anything else by name."""

    def __init__(self, stage: str, key: str, folder: Path):
        self.stage, self.key, self.folder = stage, key, folder

    def path(self, name: str) -> Path:
        return self.folder / name

    def array(self, name: str, mmap: bool = False) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)

    def json(self, name: str = "meta") -> Any:
        return json.loads((self.folder / f"{name}.json").read_text())

    def __repr__(self) -> str:
        return f"StageOutput({self.stage!r}, {self.folder})"


def save_array(folder: Path, name: str, value: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", np.ascontiguousarray(value), allow_pickle=False)


def save_json(folder: Path, name: str, value: Any) -> None:
    (folder / f"{name}.json").write_text(json.dumps(value, indent=1, sort_keys=True))


@dataclass
class StageContext:
    """What a stage function receives.

    Clip stage: `clip` / `prepared` is the clip, `inputs` its required stages (a required subject
    stage is the subject's output). Subject stage: `subject` names it, `clips` are its source clips
    (train first; `clip` / `prepared` the first of them), `clip_inputs[name]` the outputs of a
    required clip stage for each of `clips` in order, `inputs` the required subject stages.
    `timed(name)` times a part of the work (e.g. excluding a model load) into `timing.json`.
    `device`: the run's device ("cpu", "cuda", "cuda:1"), where model stages run; `models`: the
    recipe's `ModelPool`, so a model is loaded once and reused across clips (never per clip).
    """

    clip: Clip
    config: Any
    inputs: Mapping[str, StageOutput]
    out_dir: Path
    progress: Progress
    prepared: "PreparedClip"
    subject: str | None = None
    clips: tuple["PreparedClip", ...] = ()
    clip_inputs: Mapping[str, tuple[StageOutput, ...]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    models: ModelPool = field(default_factory=ModelPool)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


class StageUnavailable(RuntimeError):
    """A stage cannot run here (missing weights or package); the message says why."""


def _stage(name: str, description: str, entry: str, config: str, requires: tuple[str, ...] = (),
           availability: str | None = None, version: str = "1", level: Literal["clip", "subject"] = "clip",
           per_request: bool = False, config_from: str | None = None) -> StageSpec:
    return StageSpec(name, description, entry, config, version, requires, availability, level, per_request,
                     config_from)


# The recipe. Entries and configs are "module:attr" strings, imported only when a stage runs.
STAGES: dict[str, StageSpec] = {s.name: s for s in (
    _stage("normalise", "25 fps frame map into the source video; 16 kHz mono float32 audio of the segment",
           "data_recipes.media:normalise_stage", "data_recipes.configs:NormaliseConfig", version="2"),
    _stage("faces", "per-frame face box, 478 and 68 landmarks, head pose, blendshapes; gaps filled or marked",
           "data_recipes.faces.stage:faces_stage", "data_recipes.faces.stage:FacesConfig",
           requires=("normalise",), availability="data_recipes.faces.stage:faces_availability",
           version="2"),  # 2: every clip starts after a reset frame (landmarker reused across clips)
    _stage("wav2lip_crops", "Wav2Lip face boxes (official pads, 5-frame smoothing) for 96x96 crops",
           "data_recipes.crops.wav2lip:wav2lip_crops_stage", "data_recipes.crops.wav2lip:Wav2LipCropConfig",
           requires=("faces",), version="2"),  # 2: + detector_boxes, official smoothing of < 5 boxes
    _stage("head_frame", "the subject's head-crop frame of reference: one crop box (or one crop side) from its "
           "training clips' face boxes", "data_recipes.crops.head:head_frame_stage",
           "data_recipes.crops.head:HeadCropConfig", requires=("faces",), level="subject",
           config_from="head_crops"),
    _stage("head_crops", "stable 512x512 head crop transform per frame (invertible), in the subject's frame of reference",
           "data_recipes.crops.head:head_crops_stage", "data_recipes.crops.head:HeadCropConfig",
           requires=("faces", "head_frame"), version="2"),  # 2: the subject's frame of reference
    _stage("plate", "the subject's background plate (median of its training clips' background pixels)",
           "data_recipes.segmentation:plate_stage", "data_recipes.segmentation:SegmentationConfig",
           requires=("faces", "head_crops"), level="subject", config_from="segmentation"),
    _stage("segmentation", "head / neck-torso / background masks in head-crop space against the subject's plate",
           "data_recipes.segmentation:segmentation_stage", "data_recipes.segmentation:SegmentationConfig",
           requires=("faces", "head_crops", "plate"), version="3"),  # 3: the subject's plate
    _stage("mel", "Wav2Lip 80-band mel spectrogram at 80 frames/s (official hparams)",
           "data_recipes.audio.mel:mel_stage", "data_recipes.audio.mel:MelConfig", requires=("normalise",),
           per_request=True, version="2"),  # 2: the original's float32 arithmetic (was float64, <= 2e-7 apart)
    _stage("hubert", "HuBERT-large hidden states (1024-d, 50 Hz) from a local model folder",
           "data_recipes.audio.hubert:hubert_stage", "data_recipes.audio.hubert:HubertConfig",
           requires=("normalise",), availability="data_recipes.audio.hubert:hubert_availability", per_request=True),
    _stage("f0", "pitch by Praat autocorrelation (GeneFace++ settings), aligned to frames",
           "data_recipes.audio.pitch:f0_stage", "data_recipes.audio.pitch:PitchConfig", requires=("normalise",),
           per_request=True),
    _stage("threedmm_identity", "the subject's 3DMM: model, one global identity and the camera, fitted to its "
           "training clips", "data_recipes.threedmm.stage:threedmm_identity_stage",
           "data_recipes.threedmm.stage:ThreeDMMConfig", requires=("faces",), level="subject",
           availability="data_recipes.threedmm.stage:threedmm_availability", config_from="threedmm"),
    _stage("threedmm", "per-frame 3DMM expression and pose with the subject's identity and camera fixed",
           "data_recipes.threedmm.stage:threedmm_stage", "data_recipes.threedmm.stage:ThreeDMMConfig",
           requires=("faces", "threedmm_identity"), availability="data_recipes.threedmm.stage:threedmm_availability",
           version="2"),  # 2: identity and model from the subject stage
)}


def stage_spec(name: str) -> StageSpec:
    if name not in STAGES:
        import difflib

        hint = difflib.get_close_matches(name, list(STAGES), n=1)
        raise KeyError(f"unknown stage {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                       + f" (known: {', '.join(sorted(STAGES))})")
    return STAGES[name]


def audio_stages(names: Sequence[str]) -> list[str]:
    """Those of `names` that read only audio (normalise and the per-request audio features, with
    nothing between them that needs frames): what an audio-only driving clip can be prepared for."""
    def audio(n: str) -> bool:
        spec = stage_spec(n)
        return (n == "normalise" or spec.per_request) and all(audio(d) for d in spec.requires)

    return [n for n in names if audio(n)]


def _load(entry: str) -> Callable[..., Any]:
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def stage_order(names: Sequence[str]) -> list[str]:
    """The stages and everything they require, upstream first."""
    order: list[str] = []

    def visit(n: str, stack: tuple[str, ...]) -> None:
        if n in order:
            return
        if n in stack:
            raise ValueError(f"stage cycle: {' -> '.join(stack + (n,))}")
        for dep in stage_spec(n).requires:
            visit(dep, stack + (n,))
        order.append(n)

    for n in names:
        visit(n, ())
    return order


class Recipe:
    """Runs stages for clips through the cache. Thread-safe per (clip, stage).

    clips: the dataset's clips, from which subject stages learn each subject's source clips (see
    the module docstring); more can be added with `add_clips`. device: where model stages run (the
    run's device); models: the pool that holds the models stages load (one is made when not given).
    """

    def __init__(self, cache: Cache, progress: Progress | None = None,
                 configs: Mapping[str, Any] | None = None, clips: Sequence[Clip] = (),
                 device: str = "cpu", models: ModelPool | None = None):
        self.cache = cache
        self.device = device  # the run's device: model stages run there (StageContext.device)
        self.models = models if models is not None else ModelPool(device)
        self.progress = progress or Progress.off()
        self._configs = dict(configs or {})
        self._keys: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._clips: dict[str, Clip] = {}
        self._by_subject: dict[str, list[Clip]] = {}
        self._subject_sorted: dict[str, tuple[Clip, ...]] = {}
        self._fingerprints: dict[Clip, tuple[tuple, dict[str, Any]]] = {}
        self._hardware: str | None = None
        self.add_clips(clips)

    def add_clips(self, clips: Sequence[Clip]) -> None:
        """Make `clips` known (by id) so that subject stages see every clip of their subject."""
        for c in clips:
            old = self._clips.get(c.id)
            if old is not None and old != c:
                raise ValueError(f"two different clips share the id {c.id!r}")
            if old is None:
                self._by_subject.setdefault(c.subject, []).append(c)
            self._clips[c.id] = c
        self._keys.clear()
        self._subject_sorted.clear()

    def subject_clips(self, clip: Clip) -> tuple[Clip, ...]:
        """Every known clip of `clip`'s subject, train first, then val, then test (given order within)."""
        if self._clips.get(clip.id) != clip:
            return (clip,)
        got = self._subject_sorted.get(clip.subject)   # indexed: a scan per call is quadratic on CMLR
        if got is None:
            rank = {"train": 0, "val": 1, "test": 2}
            got = tuple(sorted(self._by_subject.get(clip.subject, []), key=lambda c: rank.get(c.split, 3)))
            self._subject_sorted[clip.subject] = got
        return got

    def subject_sources(self, clip: Clip) -> tuple[Clip, ...]:
        """The clips a subject stage of `clip`'s subject is computed from: its train clips, or all of
        its clips when it has none (see the module docstring)."""
        every = self.subject_clips(clip)
        train = tuple(c for c in every if c.split == "train")
        return train or every

    def config(self, stage: str) -> Any:
        """The stage's config: the one given to the Recipe, else the stage's defaults. A stage with
        `config_from` shares the named stage's config."""
        spec = stage_spec(stage)
        name = spec.config_from or stage
        if name in self._configs:
            return self._configs[name]
        return _load(stage_spec(name).config)()

    def availability(self, stage: str) -> Availability:
        spec = stage_spec(stage)
        for dep in stage_order([stage]):
            dspec = stage_spec(dep)
            if dspec.availability:
                a = _load(dspec.availability)(self.config(dep))
                if not a.ok:
                    return Availability.no(f"stage '{dep}': {a.reason}") if dep != spec.name else a
        return Availability.yes()

    def clip_fingerprint(self, clip: Clip) -> dict[str, Any]:
        # Remembered per clip while its files keep their size and mtime: a run asks for it many times
        # per clip (stage keys, fit keys, generated-video keys), and on a 100k-clip dataset each
        # `file_sha256` (path resolution + memo read) would add minutes to planning.
        files = (clip.video, clip.audio)
        try:
            sig = tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(f) for f in files if f is not None))
        except OSError:
            sig = None
        memo = self._fingerprints.get(clip)
        if sig is not None and memo is not None and memo[0] == sig:
            return dict(memo[1])
        fp = {
            "video": file_sha256(clip.video),
            "audio": file_sha256(clip.audio) if clip.audio else None,
            "start": clip.start,
            "end": clip.end,
        }
        if sig is not None:
            self._fingerprints[clip] = (sig, fp)
        return dict(fp)

    def key(self, clip: Clip, stage: str) -> str:
        """The cache key of `stage` for `clip` (for a subject stage: of the clip's subject)."""
        spec = stage_spec(stage)
        if spec.level == "subject":
            # a known clip's sources are its subject's (fixed until add_clips, which clears the memo)
            known = self._clips.get(clip.id) == clip
            memo = ("subject\0" + clip.subject + ("" if known else "\0" + _clip_memo(clip)), stage)
        else:
            memo = (_clip_memo(clip), stage)
        if memo not in self._keys:
            sources = self.subject_sources(clip) if spec.level == "subject" else (clip,)
            if spec.level == "subject":
                upstream = [self.key(sources[0], d) if stage_spec(d).level == "subject"
                            else [self.key(c, d) for c in sources] for d in spec.requires]
                self._keys[memo] = content_key(
                    "subject-stage", spec.name, spec.version, self.config(stage), clip.subject,
                    [self.clip_fingerprint(c) for c in sources], upstream)
            else:
                upstream = [self.key(clip, d) for d in spec.requires]
                self._keys[memo] = content_key(
                    "stage", spec.name, spec.version, self.config(stage), self.clip_fingerprint(clip), upstream
                )
        return self._keys[memo]

    def prepare(self, clip: Clip) -> "PreparedClip":
        return PreparedClip(clip, self)

    def output(self, clip: Clip, stage: str) -> StageOutput:
        """The stage's output for `clip` (a subject stage: its subject's), computing it (and what it
        requires) if not cached."""
        spec = stage_spec(stage)
        if spec.level == "subject":
            return self._subject_output(clip, spec)
        inputs = {d: self.output(clip, d) for d in spec.requires}
        return self._compute(clip, spec, lambda tmp: StageContext(
            clip, self.config(stage), inputs, tmp, self.progress, self.prepare(clip), device=self.device,
            models=self.models))

    def _subject_output(self, clip: Clip, spec: StageSpec) -> StageOutput:
        key, namespace = self.key(clip, spec.name), f"stages/{spec.name}"
        if self.cache.has(namespace, key):   # done: skip gathering every source clip's inputs (O(subject))
            return StageOutput(spec.name, key, self.cache.entry(namespace, key))
        sources = self.subject_sources(clip)
        inputs = {d: self.output(sources[0], d) for d in spec.requires if stage_spec(d).level == "subject"}
        clip_inputs = {d: tuple(self.output(c, d) for c in sources)
                       for d in spec.requires if stage_spec(d).level != "subject"}
        prepared = tuple(self.prepare(c) for c in sources)
        return self._compute(clip, spec, lambda tmp: StageContext(
            sources[0], self.config(spec.name), inputs, tmp, self.progress, prepared[0], subject=clip.subject,
            clips=prepared, clip_inputs=clip_inputs, device=self.device, models=self.models))

    def _compute(self, clip: Clip, spec: StageSpec, make_ctx: Callable[[Path], StageContext]) -> StageOutput:
        key = self.key(clip, spec.name)
        namespace = f"stages/{spec.name}"
        with self._lock_for(key, spec.name):
            if not self.cache.has(namespace, key):
                avail = self.availability(spec.name)
                if not avail.ok:
                    what = f"subject '{clip.subject}'" if spec.level == "subject" else f"clip '{clip.id}'"
                    raise StageUnavailable(f"stage '{spec.name}' for {what} cannot run: {avail.reason}")
                fn = _load(spec.entry)
                with self.cache.write(namespace, key) as tmp:
                    ctx = make_ctx(tmp)
                    t0 = time.perf_counter()
                    fn(ctx)
                    seconds = time.perf_counter() - t0
                    _write_timing(tmp, seconds, ctx.timings, self.hardware_id() if spec.per_request else None)
        return StageOutput(spec.name, key, self.cache.entry(namespace, key))

    def hardware_id(self) -> str:
        """The hardware fingerprint id timings are measured on (memoised: it imports torch)."""
        if self._hardware is None:
            from bench.hardware import fingerprint

            self._hardware = str(fingerprint()["id"])
        return self._hardware

    def is_cached(self, clip: Clip, stage: str) -> bool:
        return self.cache.has(f"stages/{stage}", self.key(clip, stage))

    def request_seconds(self, clip: Clip, stage: str) -> dict[str, Any] | None:
        """What computing `stage` for `clip` cost when it was computed (`timing.json`), or None."""
        path = self.output(clip, stage).path("timing.json")
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def time_stage(self, clip: Clip, stage: str) -> dict[str, Any]:
        """Run a clip stage's code once more on `clip` into a throwaway folder and return its timing
        (as in `timing.json`); for per-request stages whose cached timing came from other hardware."""
        import tempfile

        spec = stage_spec(stage)
        if spec.level != "clip":
            raise ValueError(f"stage {stage!r} is a subject stage; only clip stages are timed per request")
        inputs = {d: self.output(clip, d) for d in spec.requires}
        fn = _load(spec.entry)
        with tempfile.TemporaryDirectory(prefix=f"time-{stage}-") as tmp:
            ctx = StageContext(clip, self.config(stage), inputs, Path(tmp), Progress.off(), self.prepare(clip),
                               device=self.device, models=self.models)
            t0 = time.perf_counter()
            fn(ctx)
            seconds = time.perf_counter() - t0
            _write_timing(Path(tmp), seconds, ctx.timings, self.hardware_id())
            return json.loads((Path(tmp) / "timing.json").read_text())

    def _lock_for(self, key: str, stage: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((key, stage), threading.Lock())


def _clip_memo(clip: Clip) -> str:
    return clip.id + "\0" + str(clip.video) + "\0" + str(clip.start) + "\0" + str(clip.end)


def _write_timing(folder: Path, seconds: float, parts: Mapping[str, float], hardware: str | None) -> None:
    """timing.json: wall seconds of the stage function and its self-timed parts. The seconds the
    fps metric counts are the parts' sum when the stage timed parts (e.g. HuBERT without its model
    load), else the whole call; `hardware` says where it was measured (per-request stages only)."""
    timed = float(sum(parts.values())) if parts else float(seconds)
    info: dict[str, Any] = {"wall_seconds": float(seconds), "parts": {k: float(v) for k, v in parts.items()},
                            "seconds": timed, "threads": threading.active_count(), "hardware": hardware}
    (folder / "timing.json").write_text(json.dumps(info, indent=1, sort_keys=True))


class PreparedClip:
    """A clip seen through its cached stages. Frames and audio follow `bench.method` conventions.

    Stages are computed on first use (and cached); the runner prefetches the stages a method declares
    so that their cost shows in the "prepare" phase with progress bars, not inside `generate`.
    """

    def __init__(self, clip: Clip, recipe: Recipe):
        self.clip = clip
        self.recipe = recipe

    @property
    def id(self) -> str:
        return self.clip.id

    def stage(self, name: str) -> StageOutput:
        return self.recipe.output(self.clip, name)

    @property
    def meta(self) -> dict[str, Any]:
        return self.stage("normalise").json("meta")

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        m = self.meta
        return int(m["height"]), int(m["width"])

    def audio(self) -> np.ndarray:
        """float32 mono 16 kHz, exactly num_frames * 640 samples."""
        return self.stage("normalise").array("audio")

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames [start, stop) as uint8 RGB (H, W, 3), decoded as a stream."""
        from data_recipes.media import iter_normalised_frames

        return iter_normalised_frames(self.clip, self.stage("normalise"), start, stop)

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames [start, stop) as one uint8 RGB array (T, H, W, 3)."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        h, w = self.size
        out = np.empty((max(stop - start, 0), h, w, 3), dtype=np.uint8)
        n = 0
        for n, frame in enumerate(self.iter_frames(start, stop), start=1):
            out[n - 1] = frame
        if n != len(out):
            raise RuntimeError(f"clip {self.clip.id!r}: decoded {n} frames, expected {len(out)}")
        return out

    def __repr__(self) -> str:
        return f"PreparedClip({self.clip.id!r})"
