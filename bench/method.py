"""The `Method` interface every talking-head backend implements, and the values that cross it.

Conventions (every method, every direction):
- frames: numpy uint8, RGB colour order, shape (T, H, W, 3), C-contiguous;
- video rate: 25 frames per second; audio: float32 mono in [-1, 1] at 16 000 Hz;
- frame i of a clip covers audio samples [640 * i, 640 * (i + 1)).

Parts. A method is made of zero or more *parts* (`PartSpec`), each fitted separately with its own
scope and its own steps in the budget:
- a "dataset" part is fitted once, on the train clips of every subject (or loaded from a file the
  user or the registry gives: Wav2Lip's generator, GeneFace++'s audio-to-motion model);
- a "subject" part is fitted per person, after every dataset part, on that subject's clips only (a
  person-specific renderer). The runner fits subject s, then generates every request whose target
  is subject s, then moves to the next subject: a method keeps only the current subject's state.
A method without declared parts has one implicit part named "model" with the spec's `fit_scope`
(none: no part at all), fitted by `fit`; that is the whole contract of the methods written before
parts existed (the baselines, Wav2Lip).

Lifecycle, driven by `bench.runner`:
1. the runner builds ONE instance per method with its typed config and a `MethodContext`;
2. for every part, dataset parts first: `fit_part(part, clips, budget)` with the clips of the
   "train" split followed by those of the "val" split (`clip.split` tells them apart; val clips are
   for held-out evaluation and must never train weights). Before each call the runner sets
   `self.context` to a context whose `work_dir` is that part's own folder (keyed by method, config,
   part, seed and the clips' content, NOT by the budget: a larger budget continues the checkpoints
   found there). The default `fit_part` calls `fit(clips, budget)`; methods that declare parts
   override `fit_part`. It returns a `FitReport` (weights used and how they were obtained, steps);
3. `generate(request)` for every self-driven and cross-driven request; it returns frames plus timings.

Budgets (`Budget`, `bench run --budget`): a preset (quick | standard | full) that each part turns
into its own step count (`PartSpec.steps`), optional overrides `steps=N` (every part) and
`<method>.<part or counter>=N` (one part, or one of the networks a part trains, e.g.
`wav2lip.generator=50`), and `minutes=M`: a wall-clock ceiling for the whole run that the runner
shares out across the fits still to do (each fit gets `Budget.minutes` = its share; methods check
`budget.deadline()` between steps).
"""

from __future__ import annotations

import abc
import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Sequence

import numpy as np

from bench.availability import Availability

if TYPE_CHECKING:  # imported for annotations only; keeps `import bench.method` cheap
    from bench.cache import Cache
    from bench.progress import Progress
    from data_recipes.recipe import PreparedClip

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

FitScope = Literal["none", "dataset", "subject"]
PartScope = Literal["dataset", "subject"]


@dataclass(frozen=True)
class PartSpec:
    """One separately fitted piece of a method.

    name: used in budgets (`--budget <method>.<name>=N`), work folders and the manifest;
    scope: "dataset" (once, on the train clips of every subject, or loaded from a file) or "subject"
        (per person, after every dataset part);
    steps: the part's default step count for the quick / standard / full presets;
    counters: further step counters the part reads from the budget with
        `budget.resolve_steps(..., part=<counter>)`, for a part that trains several networks in one
        fit (Wav2Lip: "expert" and "generator"); each is settable as `<method>.<counter>=N`;
    description: one line for `bench list` and the manifest.
    """

    name: str
    scope: PartScope
    steps: tuple[int, int, int] = (0, 0, 0)
    counters: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.scope not in ("dataset", "subject"):
            raise ValueError(f"part {self.name!r}: scope must be 'dataset' or 'subject', got {self.scope!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"part name {self.name!r} must be an identifier (it appears in --budget)")


@dataclass(frozen=True)
class MethodSpec:
    """What a method is and what it needs, readable without importing its heavy code.

    `stages` are the data-recipe stages (see `data_recipes.recipe.STAGES`) the runner prepares for
    every clip the method sees. `extra` names the optional dependency group (`pip install
    talkbench[<extra>]`) it needs, if any. `fit_scope` says how often `fit` runs: "none" (no
    training), "dataset" (once on the dataset's training clips) or "subject" (once per person).
    `config` is the dataclass type of the method's typed config. `parts` are its separately fitted
    pieces (see `PartSpec` and the module docstring); without parts, `fit_scope` describes the one
    implicit part "model" (or no fitting at all for "none"); `fit_parts()` gives the parts either
    way, dataset parts first.
    """

    name: str
    description: str
    config: type
    stages: tuple[str, ...] = ("normalise",)
    extra: str | None = None
    needs_gpu: bool = False
    fit_scope: FitScope = "none"
    kind: Literal["baseline", "2d", "3d"] = "2d"
    per_subject_data: str = ""  # e.g. "3-5 min video of the person"; shown in the decision table
    cross_driven: bool = True   # False: only self-driven requests make sense (the real video)
    version: str = "1"          # bump when outputs change for the same inputs (invalidates caches)
    parts: tuple[PartSpec, ...] = ()

    def fit_parts(self) -> tuple[PartSpec, ...]:
        """The parts the runner fits, dataset parts first (declared order kept within a scope)."""
        if self.parts:
            return tuple(p for p in self.parts if p.scope == "dataset") + tuple(
                p for p in self.parts if p.scope == "subject")
        if self.fit_scope == "none":
            return ()
        return (PartSpec("model", self.fit_scope),)

    def budget_names(self) -> tuple[str, ...]:
        """Names accepted in `--budget <method>.<name>=N`: part names and their counters."""
        return tuple(n for p in self.fit_parts() for n in (p.name, *p.counters))


@dataclass(frozen=True)
class Budget:
    """How much training a method may do. Every training method honours it.

    Presets: "quick" (the demo: a few CPU minutes in all), "standard", "full" (the published recipe);
    each part turns the preset into its own steps (`PartSpec.steps`, or the method's schedule).
    `steps` overrides every part's steps; `part_steps` overrides one part or counter of one method,
    as ("<method>.<name>", N) pairs. `minutes` is a wall-clock ceiling checked between steps: on the
    command line it bounds the whole run, and the runner hands each fit a `Budget` whose `minutes`
    is that fit's share of what is left. `method` is set by the runner (`for_method`) so that
    `resolve_steps(..., part=...)` finds the method's own overrides.
    """

    preset: Literal["quick", "standard", "full"] = "quick"
    steps: int | None = None
    minutes: float | None = None
    part_steps: tuple[tuple[str, int], ...] = ()
    method: str | None = None

    @staticmethod
    def parse(text: str) -> "Budget":
        """`quick`, `standard`, `full`, `steps=500`, `minutes=10`, `<method>.<part>=N`, comma-joined,
        e.g. `standard,minutes=30,nerf_head.head=20000,wav2lip.generator=50`."""
        preset, steps, minutes = "quick", None, None
        per_part: dict[str, int] = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if part in ("quick", "standard", "full"):
                preset = part
            elif m := re.fullmatch(r"steps=(\d+)", part):
                steps = int(m.group(1))
            elif m := re.fullmatch(r"minutes=(\d+(?:\.\d+)?)", part):
                minutes = float(m.group(1))
            elif m := re.fullmatch(r"([A-Za-z0-9_-]+)\.([A-Za-z_][A-Za-z0-9_]*)=(\d+)", part):
                per_part[f"{m.group(1)}.{m.group(2)}"] = int(m.group(3))
            else:
                raise ValueError(
                    f"bad budget part {part!r}: use quick | standard | full | steps=N | minutes=M | "
                    "<method>.<part>=N"
                )
        return Budget(preset, steps, minutes, tuple(sorted(per_part.items())))  # type: ignore[arg-type]

    def for_method(self, method: str) -> "Budget":
        """This budget as one method sees it (its `<method>.<name>=N` overrides apply)."""
        return dataclasses.replace(self, method=method)

    def with_minutes(self, minutes: float | None) -> "Budget":
        return dataclasses.replace(self, minutes=minutes)

    def part_override(self, name: str) -> int | None:
        """The `<method>.<name>=N` override for the bound method, if any."""
        if self.method is None:
            return None
        return dict(self.part_steps).get(f"{self.method}.{name}")

    def resolve_steps(self, quick: int, standard: int, full: int, part: str | tuple[str, ...] | None = None) -> int:
        """The number of steps for this budget, given the method's own schedule per preset.

        part: the part or counter asking (or several names, the first override found wins: a
        network's counter, then its part); a `<method>.<name>=N` override wins over `steps=N`,
        which wins over the preset."""
        for name in ((part,) if isinstance(part, str) else (part or ())):
            if (n := self.part_override(name)) is not None:
                return n
        if self.steps is not None:
            return self.steps
        return {"quick": quick, "standard": standard, "full": full}[self.preset]

    def steps_for(self, part: PartSpec) -> int:
        """Steps of a declared part: its override, else `steps=N`, else its preset default."""
        return self.resolve_steps(*part.steps, part=part.name)

    def deadline(self, start: float | None = None) -> float | None:
        """time.monotonic() value after which training must stop, or None."""
        if self.minutes is None:
            return None
        return (time.monotonic() if start is None else start) + 60.0 * self.minutes

    def describe(self) -> str:
        parts = [self.preset]
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
        parts += [f"{k}={v}" for k, v in self.part_steps if self.method is None or k.startswith(self.method + ".")]
        if self.minutes is not None:
            parts.append(f"minutes={self.minutes:g}")
        return ",".join(parts)


@dataclass(frozen=True)
class MethodContext:
    """What the runner lends a method: where it may write, its device, progress, seeds."""

    work_dir: Path            # persistent, content-keyed folder for this method's fit (checkpoints)
    cache: "Cache"
    progress: "Progress"
    device: str = "cpu"       # "cpu" or "cuda[:k]"
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "amp"] = "fp32"  # what the run asked; resolve with bench.precision


@dataclass(frozen=True)
class WeightUse:
    """A weight file a method used, for the manifest: role, path, sha256 and how it was obtained."""

    role: str                 # e.g. "generator", "expert syncnet"
    path: str
    sha256: str
    origin: Literal["official", "user", "trained-by-suite", "bundled"]
    note: str = ""


@dataclass(frozen=True)
class FitReport:
    """What a fit did: which weights, how many steps, how long, and the logged curve for reports.

    steps: the steps the part's weights have been trained in all (0 for loaded weights);
    steps_by_part: the same per counter when the part trains several networks ({"expert": 40,
        "generator": 24}); the report shows it;
    resumed_from: per counter, the step found in the work folder and continued from (0 or absent:
        started fresh), so "train longer" is visible as a continuation;
    precision: per network use ("train", "generate", ...), the precision it ran at and why
        (`bench.precision.Precision.to_json()` plus the device); the manifest records it.
    """

    weights: tuple[WeightUse, ...] = ()
    steps: int = 0
    steps_by_part: Mapping[str, int] = field(default_factory=dict)
    resumed_from: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    budget: str = ""
    curves: Mapping[str, Sequence[Mapping[str, float]]] = field(default_factory=dict)
    notes: str = ""
    precision: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateRequest:
    """One video to make.

    `target` gives the identity (its frames, boxes, crops, fits); `driving` gives the audio (the same
    clip for a self-driven request, another clip for a cross-driven one). A method should return
    `num_frames` frames (= whole 25 fps frames covered by the driving audio) at the target's
    resolution; a faithful reimplementation whose published algorithm yields fewer (Wav2Lip's mel
    rule) may return fewer, and the runner scores the common prefix. If the target video is shorter
    than the driving audio, methods loop it as the original Wav2Lip does (frame i uses i % T).
    """

    id: str
    kind: Literal["self", "cross"]
    target: "PreparedClip"
    driving: "PreparedClip"
    seed: int = 0

    @property
    def num_frames(self) -> int:
        return self.driving.num_frames


@dataclass
class GenerateResult:
    """Frames (uint8 RGB, T x H x W x 3) and per-stage seconds, file IO excluded.

    `timings` keys are stage names such as "features", "model", "paste_back"; the fps metric divides
    the frame count by their sum. Per-request recipe stages the method reads from the driving clip
    (mel, HuBERT, f0: `StageSpec.per_request`) are computed by the recipe, not in `generate`; the
    runner adds their measured seconds as "stage:<name>" so fps counts everything a deployed system
    runs per request. `frames_without_face` counts frames passed through unchanged.

    `frames` is an array, or, for outputs that should not be held in memory (long or large videos),
    a lazy `data_recipes.frames.Frames` of the same shape: `ClipFrames` (frames of a prepared clip),
    `RepeatFrames`, or `FileFrames` of a lossless file the method wrote while generating (with
    `data_recipes.media.VideoWriter(..., lossless=True)`, into a temporary folder it hands over as
    `owned`: the runner copies the file into its cache and closes it). Memory then stays bounded by a
    window of frames whatever the clip's length and resolution (issue 16).
    """

    frames: Any   # np.ndarray | data_recipes.frames.Frames, uint8 (T, H, W, 3)
    timings: dict[str, float] = field(default_factory=dict)
    frames_without_face: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from data_recipes.frames import is_video

        f = self.frames
        if not is_video(f):
            raise TypeError(
                "GenerateResult.frames must be a uint8 array of shape (T, H, W, 3), got "
                f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}"
            )


class Method(abc.ABC):
    """Base class of every method. Subclasses set `spec` and implement `generate` (and `fit` if they train).

    Constructors must be cheap and must not load weights or touch the network; do that in `fit`
    (which runs before any `generate`, even for methods that do not train).
    """

    spec: ClassVar[MethodSpec]

    def __init__(self, config: Any, context: MethodContext):
        self.config = config
        self.context = context

    @classmethod
    def availability(cls, config: Any) -> Availability:
        """Whether the method can run here with this config (dependencies, weights, GPU)."""
        return Availability.yes()

    @classmethod
    def variant(cls, config: Any) -> str:
        """What of this config changes what the method's numbers mean, in a few words ("" when nothing
        does). Result rows carry it and reports show the method as "<name> [<variant>]", so numbers of
        two variants (say nerf_head on HuBERT vs on the mel front end) never share a table row."""
        return ""

    def fit(self, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        """Prepare to generate: load weights, or train on the train-split `clips` within `budget`
        (val-split clips, if any, are for evaluation only). Default: nothing.

        For a method without declared parts this fits its implicit part; methods with parts
        implement `fit_part` instead."""
        return FitReport(budget=budget.describe())

    def fit_part(self, part: PartSpec, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        """Fit one part (see `PartSpec`): dataset parts see the train + val clips of every subject,
        subject parts those of one subject (after every dataset part was fitted on this instance).
        `self.context.work_dir` is this part's folder; `budget.steps_for(part)` its steps and
        `budget.deadline()` its share of the run's minutes. Default: `fit(clips, budget)`, which is
        right for the implicit single part of methods that declare none."""
        return self.fit(clips, budget)

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> GenerateResult:
        """Make the frames for `request`; see `GenerateRequest` and `GenerateResult` for the contract."""
