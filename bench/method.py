"""The `Method` interface every talking-head backend implements, and the values that cross it.

Conventions (every method, every direction):
- frames: numpy uint8, RGB colour order, shape (T, H, W, 3), C-contiguous;
- video rate: 25 frames per second; audio: float32 mono in [-1, 1] at 16 000 Hz;
- frame i of a clip covers audio samples [640 * i, 640 * (i + 1)).

Lifecycle, driven by `bench.runner`:
1. the runner builds the method with its typed config and a `MethodContext`;
2. `fit(clips, budget)` once per fit scope (nothing, the dataset, or each subject) with the clips of
   the "train" split followed by those of the "val" split (`clip.split` tells them apart; val clips
   are for held-out evaluation and must never train weights); it returns a `FitReport` that says
   which weights were used and how they were obtained;
3. `generate(request)` for every self-driven and cross-driven request; it returns frames plus timings.
"""

from __future__ import annotations

import abc
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


@dataclass(frozen=True)
class MethodSpec:
    """What a method is and what it needs, readable without importing its heavy code.

    `stages` are the data-recipe stages (see `data_recipes.recipe.STAGES`) the runner prepares for
    every clip the method sees. `extra` names the optional dependency group (`pip install
    talkbench[<extra>]`) it needs, if any. `fit_scope` says how often `fit` runs: "none" (no
    training), "dataset" (once on the dataset's training clips) or "subject" (once per person).
    `config` is the dataclass type of the method's typed config.
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


@dataclass(frozen=True)
class Budget:
    """How much training a method may do. Every training method honours it.

    Presets: "quick" (the demo: a few CPU minutes in all), "standard", "full" (the published recipe).
    `steps` and `minutes` override the preset; `minutes` is a wall-clock ceiling checked between steps.
    """

    preset: Literal["quick", "standard", "full"] = "quick"
    steps: int | None = None
    minutes: float | None = None

    @staticmethod
    def parse(text: str) -> "Budget":
        """`quick`, `standard`, `full`, `steps=500`, `minutes=10`, or `standard,minutes=30`."""
        preset, steps, minutes = "quick", None, None
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if part in ("quick", "standard", "full"):
                preset = part
            elif m := re.fullmatch(r"steps=(\d+)", part):
                steps = int(m.group(1))
            elif m := re.fullmatch(r"minutes=(\d+(?:\.\d+)?)", part):
                minutes = float(m.group(1))
            else:
                raise ValueError(
                    f"bad budget part {part!r}: use quick | standard | full | steps=N | minutes=M"
                )
        return Budget(preset, steps, minutes)  # type: ignore[arg-type]

    def resolve_steps(self, quick: int, standard: int, full: int) -> int:
        """The number of steps for this budget, given the method's own schedule per preset."""
        if self.steps is not None:
            return self.steps
        return {"quick": quick, "standard": standard, "full": full}[self.preset]

    def deadline(self, start: float | None = None) -> float | None:
        """time.monotonic() value after which training must stop, or None."""
        if self.minutes is None:
            return None
        return (time.monotonic() if start is None else start) + 60.0 * self.minutes

    def describe(self) -> str:
        parts = [self.preset]
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
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
    precision: Literal["fp32", "bf16", "amp"] = "fp32"


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
    """What `fit` did: which weights, how many steps, how long, and the logged curve for reports."""

    weights: tuple[WeightUse, ...] = ()
    steps: int = 0
    seconds: float = 0.0
    budget: str = ""
    curves: Mapping[str, Sequence[Mapping[str, float]]] = field(default_factory=dict)
    notes: str = ""


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
    the frame count by their sum. `frames_without_face` counts frames passed through unchanged.
    """

    frames: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    frames_without_face: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 4 and f.shape[-1] == 3):
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

    def fit(self, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        """Prepare to generate: load weights, or train on the train-split `clips` within `budget`
        (val-split clips, if any, are for evaluation only). Default: nothing."""
        return FitReport(budget=budget.describe())

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> GenerateResult:
        """Make the frames for `request`; see `GenerateRequest` and `GenerateResult` for the contract."""
