"""The metric contract: what the runner hands a metric and what it gets back.

Every metric is a pure function on arrays (in its own module) plus a thin `Metric` class that the
runner builds once per run and calls once per generated video. A metric family may report several
values (the sync metric gives LSE-D, LSE-C and the AV offset); each value is one results row.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Sequence

import numpy as np

from bench.availability import Availability

if TYPE_CHECKING:
    from bench.cache import Cache
    from bench.method import Budget
    from bench.progress import Progress
    from data_recipes.recipe import PreparedClip

Status = Literal["ok", "unavailable", "failed", "too_short", "not_applicable"]
Better = Literal["higher", "lower", "zero", ""]


@dataclass(frozen=True)
class ValueSpec:
    """One reported number. `better`: "higher", "lower", "zero" (closest to 0 is best, e.g. AV offset)."""

    name: str
    better: Better
    unit: str
    description: str


@dataclass(frozen=True)
class MetricSpec:
    """A metric family, readable without loading any model.

    needs_ground_truth: only scored on self-driven requests (cross-driven ones have no real frames);
    stages: recipe stages of the target clip the metric reads (e.g. "faces" for LMD);
    fit_scope: "dataset" if the metric trains its own model on the dataset's training clips;
    version: stamped on every result row, so a resume recomputes parts scored by an older version.
    """

    name: str
    description: str
    values: tuple[ValueSpec, ...]
    config: type
    needs_ground_truth: bool = False
    needs_audio: bool = False
    stages: tuple[str, ...] = ()
    fit_scope: Literal["none", "dataset"] = "none"
    published: bool = True   # False for the suite's own scorers, which never carry a published name
    version: str = "1"       # bump when scores change for the same inputs and config (resume recomputes)


@dataclass(frozen=True)
class MetricContext:
    work_dir: Path
    cache: "Cache"
    progress: "Progress"
    device: str = "cpu"
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    """One generated video to score.

    generated / ground_truth: uint8 RGB (T, H, W, 3), same T (the runner cuts both to the common
    prefix); ground_truth is None for cross-driven requests. The runner passes lazy videos
    (`data_recipes.frames.Frames`: shape, len, slicing, iteration, `chunks`) so that no whole video
    is in memory; a metric reads them frame by frame or in bounded blocks and never converts a whole
    video to an array (issue 16); `bench score` passes lazy videos too. Arrays work as well (tests). audio: driving audio,
    float32 mono 16 kHz, exactly T * 640 samples. timings: the method's per-stage seconds for this video.
    """

    request_id: str
    kind: Literal["self", "cross"]
    generated: Any           # np.ndarray | data_recipes.frames.Frames, uint8 (T, H, W, 3)
    ground_truth: Any        # the same, or None
    audio: np.ndarray
    target: "PreparedClip"
    sync_protocol: Literal["lrs", "tracked"] = "tracked"
    timings: Mapping[str, float] = field(default_factory=dict)
    fps: int = 25
    sample_rate: int = 16000
    # The file metrics that score files (LSE) read: the mp4 delivered for the generated video, or the
    # real video's own file (metrics.sync.delivery); None outside the runner.
    video_file: Path | None = None
    # Per-sample results several metrics share (see `generated_faces`); not part of its identity.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


def faces_config(sample: Sample) -> Any:
    """The "faces" stage config of the sample's recipe (its defaults when the target has no recipe),
    so faces found in generated frames are found the way the ground truth's were."""
    recipe = getattr(sample.target, "recipe", None)
    if recipe is not None:
        return recipe.config("faces")
    from data_recipes.faces.stage import FacesConfig

    return FacesConfig()


def generated_faces(sample: Sample, progress: "Progress | None" = None) -> Any:
    """The face track (`data_recipes.faces.FaceTrack`) of `sample.generated`, detected once per sample:
    LMD, LSE (tracked protocol) and the suite scorer all need it, and face tracking is the most
    expensive part of scoring after the networks."""
    if "faces" not in sample.memo:
        from data_recipes.faces import detect

        # the target's recipe holds the run's landmarker: built once, not once per sample
        models = getattr(getattr(sample.target, "recipe", None), "models", None)
        sample.memo["faces"] = detect(sample.generated, faces_config(sample), progress, models=models)
    return sample.memo["faces"]


@dataclass(frozen=True)
class Score:
    """A value with its status. Only status "ok" carries a number; everything else carries a reason."""

    value: float = math.nan
    status: Status = "ok"
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def ok(value: float, **extra: Any) -> "Score":
        return Score(float(value), "ok", "", extra)

    @staticmethod
    def missing(status: Status, reason: str, **extra: Any) -> "Score":
        if status == "ok":
            raise ValueError("a missing score cannot have status ok")
        return Score(math.nan, status, reason, extra)


class Metric(abc.ABC):
    spec: ClassVar[MetricSpec]

    def __init__(self, config: Any, context: MetricContext):
        self.config = config
        self.context = context

    @classmethod
    def availability(cls, config: Any) -> Availability:
        """Whether the metric can be computed here (weights present, packages importable)."""
        return Availability.yes()

    def fit(self, clips: Sequence["PreparedClip"], budget: "Budget") -> dict[str, Any]:
        """Only for fit_scope="dataset": train the metric's own model on the train-split `clips`
        (val-split clips may follow, for evaluation only); returns a summary for the manifest."""
        return {}

    def weights_used(self) -> list[dict[str, str]]:
        """[{"role", "path", "sha256", "origin"}] for the manifest."""
        return []

    @abc.abstractmethod
    def score(self, sample: Sample) -> dict[str, Score]:
        """Scores keyed by ValueSpec.name, one for each of `spec.values`."""
