"""`lse`: the published LSE-D / LSE-C / AV offset with syncnet_python's `syncnet_v2.model`.

Without the weight file the metric is unavailable with the exact reason (what to put where); it is
never replaced by another network under this name (see `metrics.sync.suite` for the suite's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.availability import Availability
from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec, generated_faces
from metrics.sync.weights import SYNCNET_V2, WEIGHTS  # noqa: F401  (WEIGHTS: read by `bench list`)

if TYPE_CHECKING:
    from metrics.sync.lse import SyncResult
    from metrics.sync.model import SyncNetModel


@dataclass(frozen=True)
class LSEConfig:
    """batch_size: windows per forward pass (the official --batch_size 20; never changes numbers);
    emulate_codecs: tracked protocol, also apply run_pipeline's q=2 MPEG-4/JPEG and XVID steps
    (the final default-quality JPEG round trip is always applied)."""

    batch_size: int = 20
    emulate_codecs: bool = True


def sync_values(suffix: str, what: str) -> tuple[ValueSpec, ...]:
    d, c, o = ("LSE-D", "LSE-C", "AV-offset") if not suffix else (f"SyncD-{suffix}", f"SyncC-{suffix}",
                                                                   f"AV-offset-{suffix}")
    return (
        ValueSpec(d, "lower", "", f"{what}: minimum over the 31 audio shifts of the mean embedding distance"),
        ValueSpec(c, "higher", "", f"{what}: median minus minimum of the 31-shift mean distance curve"),
        ValueSpec(o, "zero", "frames", f"{what}: 15 - argmin of the curve; +k when the audio runs k frames early"),
    )


def scores_from(result: "SyncResult", names: tuple[str, str, str], info: dict[str, Any]) -> dict[str, Score]:
    d, c, o = names
    return {
        d: Score.ok(result.distance, **result.as_extra(), **info),
        c: Score.ok(result.confidence, windows=result.windows),
        o: Score.ok(float(result.offset), windows=result.windows),
    }


def score_with(model: "SyncNetModel", sample: Sample, names: tuple[str, str, str], batch_size: int,
               emulate_codecs: bool, device: str, protocol: str, progress: Any = None,
               region: tuple[int, int, int, int] | None = None) -> dict[str, Score]:
    """Scores of `sample` under `protocol`, or the same missing status for all three values."""
    from metrics.sync import pipeline
    from metrics.sync.tracked import NoFace

    options = pipeline.FeedOptions(batch_size=batch_size, emulate_codecs=emulate_codecs, device=device)
    try:
        pipeline.check_length(len(sample.generated), len(sample.audio), options.min_windows)
        result, info = pipeline.score_video(model, sample.generated, sample.audio, protocol,  # type: ignore[arg-type]
                                            options, detect=lambda _frames, p: generated_faces(sample, p),
                                            progress=progress, region=region)
    except pipeline.TooShort as e:
        return {n: Score.missing("too_short", str(e)) for n in names}
    except NoFace as e:
        return {n: Score.missing("failed", f"tracked protocol: {e}") for n in names}
    return scores_from(result, names, info)


class LSEMetric(Metric):
    spec = MetricSpec(
        name="lse",
        description="LSE-D / LSE-C (Prajwal et al. 2020) with syncnet_python's pretrained SyncNet, fed exactly "
                    "as the published scripts (JPEG round trip, int16 MFCC, vshift 15); protocol per dataset",
        values=sync_values("", "published SyncNet"),
        config=LSEConfig,
        needs_audio=True,
    )

    NAMES = ("LSE-D", "LSE-C", "AV-offset")

    def __init__(self, config: LSEConfig, context: Any):
        super().__init__(config, context)
        self._model: "SyncNetModel | None" = None
        self._weights: dict[str, str] | None = None

    @classmethod
    def availability(cls, config: Any) -> Availability:
        from bench import weights

        return weights.availability(SYNCNET_V2)

    def _load(self) -> "SyncNetModel":
        if self._model is None:
            from bench import weights
            from metrics.sync.model import build_syncnet

            path = weights.locate(SYNCNET_V2)
            self._model = build_syncnet(path).to(self.context.device)
            self._weights = {"role": "lip-sync expert (LSE)", "path": str(path),
                             "sha256": weights.sha256_file(path), "origin": "official"}
        return self._model

    def weights_used(self) -> list[dict[str, str]]:
        from bench import weights

        if self._weights is None and weights.find(SYNCNET_V2) is not None:
            path = weights.locate(SYNCNET_V2)
            return [{"role": "lip-sync expert (LSE)", "path": str(path), "sha256": weights.sha256_file(path),
                     "origin": "official"}]
        return [self._weights] if self._weights else []

    def score(self, sample: Sample) -> dict[str, Score]:
        avail = self.availability(self.config)
        if not avail.ok:
            return {n: Score.missing("unavailable", avail.reason) for n in self.NAMES}
        from metrics.sync import pipeline

        try:
            pipeline.check_length(len(sample.generated), len(sample.audio))
        except pipeline.TooShort as e:  # no need to load 50 MB of weights for that
            return {n: Score.missing("too_short", str(e)) for n in self.NAMES}
        return score_with(self._load(), sample, self.NAMES, self.config.batch_size, self.config.emulate_codecs,
                          self.context.device, sample.sync_protocol, self.context.progress)
