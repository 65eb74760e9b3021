"""Declarative, cached preparation stages and the `PreparedClip` that methods and metrics read.

A stage is a pure function of (clip media, upstream stage outputs, typed config) that writes files
into a folder. Its cache key is the hash of the clip's content, its config, its code `version` and
its upstream keys, so changing any of them recomputes it and everything downstream, and nothing else.
Stages are registered by name in `STAGES` with a lazy "module:function" entry, so asking for
"normalise" never imports HuBERT.
"""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from bench.availability import Availability
from bench.cache import Cache, content_key, file_sha256
from bench.progress import Progress
from data_recipes.clip import Clip


@dataclass(frozen=True)
class StageSpec:
    """A preparation stage.

    `entry` is "module:function"; the function takes a `StageContext` and writes its outputs into
    `ctx.out_dir`. `config` is "module:Class" of its config dataclass (defaults = the documented recipe).
    Bump `version` whenever the stage's output for the same inputs changes.
    `availability` is an optional "module:function" taking the config and returning `Availability`.
    """

    name: str
    description: str
    entry: str
    config: str
    version: str = "1"
    requires: tuple[str, ...] = ()
    availability: str | None = None


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
    """What a stage function receives."""

    clip: Clip
    config: Any
    inputs: Mapping[str, StageOutput]
    out_dir: Path
    progress: Progress
    prepared: "PreparedClip"


class StageUnavailable(RuntimeError):
    """A stage cannot run here (missing weights or package); the message says why."""


def _stage(name: str, description: str, entry: str, config: str, requires: tuple[str, ...] = (),
           availability: str | None = None, version: str = "1") -> StageSpec:
    return StageSpec(name, description, entry, config, version, requires, availability)


# The recipe. Entries and configs are "module:attr" strings, imported only when a stage runs.
STAGES: dict[str, StageSpec] = {s.name: s for s in (
    _stage("normalise", "25 fps frame map into the source video; 16 kHz mono float32 audio of the segment",
           "data_recipes.media:normalise_stage", "data_recipes.configs:NormaliseConfig", version="2"),
    _stage("faces", "per-frame face box, 478 and 68 landmarks, head pose, blendshapes; gaps filled or marked",
           "data_recipes.faces.stage:faces_stage", "data_recipes.faces.stage:FacesConfig",
           requires=("normalise",), availability="data_recipes.faces.stage:faces_availability"),
    _stage("wav2lip_crops", "Wav2Lip face boxes (official pads, 5-frame smoothing) for 96x96 crops",
           "data_recipes.crops.wav2lip:wav2lip_crops_stage", "data_recipes.crops.wav2lip:Wav2LipCropConfig",
           requires=("faces",), version="2"),  # 2: + detector_boxes, official smoothing of < 5 boxes
    _stage("head_crops", "stable 512x512 head crop transform per frame (invertible)",
           "data_recipes.crops.head:head_crops_stage", "data_recipes.crops.head:HeadCropConfig",
           requires=("faces",)),
    _stage("segmentation", "head / neck-torso / background masks in head-crop space and a background plate",
           "data_recipes.segmentation:segmentation_stage", "data_recipes.segmentation:SegmentationConfig",
           requires=("faces", "head_crops"), version="2"),
    _stage("mel", "Wav2Lip 80-band mel spectrogram at 80 frames/s (official hparams)",
           "data_recipes.audio.mel:mel_stage", "data_recipes.audio.mel:MelConfig", requires=("normalise",)),
    _stage("hubert", "HuBERT-large hidden states (1024-d, 50 Hz) from a local model folder",
           "data_recipes.audio.hubert:hubert_stage", "data_recipes.audio.hubert:HubertConfig",
           requires=("normalise",), availability="data_recipes.audio.hubert:hubert_availability"),
    _stage("f0", "pitch by Praat autocorrelation (GeneFace++ settings), aligned to frames",
           "data_recipes.audio.pitch:f0_stage", "data_recipes.audio.pitch:PitchConfig", requires=("normalise",)),
    _stage("threedmm", "landmark-based 3DMM fit: global identity, per-frame expression and pose, camera",
           "data_recipes.threedmm.stage:threedmm_stage", "data_recipes.threedmm.stage:ThreeDMMConfig",
           requires=("faces",), availability="data_recipes.threedmm.stage:threedmm_availability"),
)}


def stage_spec(name: str) -> StageSpec:
    if name not in STAGES:
        import difflib

        hint = difflib.get_close_matches(name, list(STAGES), n=1)
        raise KeyError(f"unknown stage {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                       + f" (known: {', '.join(sorted(STAGES))})")
    return STAGES[name]


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
    """Runs stages for clips through the cache. Thread-safe per (clip, stage)."""

    def __init__(self, cache: Cache, progress: Progress | None = None,
                 configs: Mapping[str, Any] | None = None):
        self.cache = cache
        self.progress = progress or Progress.off()
        self._configs = dict(configs or {})
        self._keys: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def config(self, stage: str) -> Any:
        """The stage's config: the one given to the Recipe, else the stage's defaults."""
        if stage in self._configs:
            return self._configs[stage]
        return _load(stage_spec(stage).config)()

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
        return {
            "video": file_sha256(clip.video),
            "audio": file_sha256(clip.audio) if clip.audio else None,
            "start": clip.start,
            "end": clip.end,
        }

    def key(self, clip: Clip, stage: str) -> str:
        memo = (clip.id + "\0" + str(clip.video) + "\0" + str(clip.start) + "\0" + str(clip.end), stage)
        if memo not in self._keys:
            spec = stage_spec(stage)
            upstream = [self.key(clip, d) for d in spec.requires]
            self._keys[memo] = content_key(
                "stage", spec.name, spec.version, self.config(stage), self.clip_fingerprint(clip), upstream
            )
        return self._keys[memo]

    def prepare(self, clip: Clip) -> "PreparedClip":
        return PreparedClip(clip, self)

    def output(self, clip: Clip, stage: str) -> StageOutput:
        """The stage's output for `clip`, computing it (and what it requires) if not cached."""
        spec = stage_spec(stage)
        inputs = {d: self.output(clip, d) for d in spec.requires}
        key = self.key(clip, stage)
        namespace = f"stages/{stage}"
        with self._lock_for(key, stage):
            if not self.cache.has(namespace, key):
                avail = self.availability(stage)
                if not avail.ok:
                    raise StageUnavailable(f"stage '{stage}' for clip '{clip.id}' cannot run: {avail.reason}")
                fn = _load(spec.entry)
                with self.cache.write(namespace, key) as tmp:
                    fn(StageContext(clip, self.config(stage), inputs, tmp, self.progress, self.prepare(clip)))
        return StageOutput(stage, key, self.cache.entry(namespace, key))

    def is_cached(self, clip: Clip, stage: str) -> bool:
        return self.cache.has(f"stages/{stage}", self.key(clip, stage))

    def _lock_for(self, key: str, stage: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((key, stage), threading.Lock())


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
