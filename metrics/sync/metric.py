"""`lse`: the published LSE-D / LSE-C / AV offset with syncnet_python's `syncnet_v2.model`.

Without the weight file the metric is unavailable with the exact reason (what to put where); it is
never replaced by another network under this name (see `metrics.sync.suite` for the suite's own).
`lse.checkpoint=PATH` scores with any SyncNet in syncnet_python's file format; a file that is not the
published one (by sha256) reports its values under its own name, "LSE-D (SyncNet <8 hex>)".

Every score is computed from a file, as syncnet_python reads it (`pipeline.score_file`): the
sample's `video_file` (the mp4 the runner delivered, or the real video's own file), or, for a sample
without one, the same delivered encoding written to a temporary file (`metrics.sync.delivery`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.availability import Availability
from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec, generated_faces  # noqa: F401
from metrics.sync.weights import SYNCNET_V2, WEIGHTS  # noqa: F401  (WEIGHTS: read by `bench list`)

if TYPE_CHECKING:
    from metrics.sync.lse import SyncResult
    from metrics.sync.model import SyncNetModel


@dataclass(frozen=True)
class LSEConfig:
    """batch_size: windows per forward pass (the official --batch_size 20; never changes numbers);
    emulate_codecs: tracked protocol, also apply run_pipeline's q=2 MPEG-4/JPEG and XVID steps
    (the final default-quality JPEG round trip is always applied);
    checkpoint: a SyncNet file in syncnet_python's format (a bare state dict, as `loadParameters`
    reads it) used instead of `syncnet_v2.model` from the weights folder; unless its sha256 is the
    published file's, its values are named "LSE-D (SyncNet <first 8 hex of its sha256>)"."""

    batch_size: int = 20
    emulate_codecs: bool = True
    checkpoint: Path | None = None


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


def checkpoint_label(sha256: str) -> str | None:
    """None for the published syncnet_v2.model, else the suffix its values carry: "SyncNet <8 hex>"."""
    return None if sha256 == SYNCNET_V2.sha256 else f"SyncNet {sha256[:8]}"


def lse_names(label: str | None) -> tuple[str, str, str]:
    base = ("LSE-D", "LSE-C", "AV-offset")
    return base if label is None else tuple(f"{n} ({label})" for n in base)  # type: ignore[return-value]


def _file_digest(path: Path) -> str | None:
    from bench import weights

    try:
        return weights.sha256_file(Path(path))
    except OSError:
        return None


class LSEMetric(Metric):
    spec = MetricSpec(
        name="lse",
        description="LSE-D / LSE-C (Prajwal et al. 2020) with syncnet_python's pretrained SyncNet, scored from "
                    "each video's mp4 exactly as the published scripts read it (ffmpeg JPEGs, int16 MFCC, "
                    "vshift 15); protocol per dataset",
        values=sync_values("", "published SyncNet"),
        config=LSEConfig,
        needs_audio=True,
    )

    NAMES = ("LSE-D", "LSE-C", "AV-offset")

    def __init__(self, config: LSEConfig, context: Any):
        super().__init__(config, context)
        self._model: "SyncNetModel | None" = None
        self._weights: dict[str, str] | None = None
        self.names = tuple(v.name for v in self.spec_for(config).values)

    @classmethod
    def spec_for(cls, config: LSEConfig) -> MetricSpec:
        """The spec with the value names this config reports under (see `checkpoint_label`)."""
        if config.checkpoint is None:
            return cls.spec
        digest = _file_digest(Path(config.checkpoint))
        label = checkpoint_label(digest) if digest else f"SyncNet {Path(config.checkpoint).name}"
        if label is None:
            return cls.spec
        names = lse_names(label)
        what = f"{label} (not the published syncnet_v2.model)"
        values = tuple(replace(v, name=n, description=v.description.replace("published SyncNet", what))
                       for v, n in zip(cls.spec.values, names))
        return replace(cls.spec, values=values, published=False,
                       description=f"LSE-D / LSE-C computed as published but with {what}: {config.checkpoint}")

    @classmethod
    def availability(cls, config: Any) -> Availability:
        from bench import weights

        if getattr(config, "checkpoint", None) is not None:
            path = Path(config.checkpoint)
            if not path.is_file():
                return Availability.no(f"lse.checkpoint {path} does not exist")
            return Availability.yes()
        return weights.availability(SYNCNET_V2)

    def _checkpoint(self) -> tuple[Path, str]:
        """The file to load and its origin ("official" when its sha256 is the published one)."""
        from bench import weights

        if self.config.checkpoint is not None:
            path = Path(self.config.checkpoint)
            return path, "official" if weights.sha256_file(path) == SYNCNET_V2.sha256 else "user"
        return weights.locate(SYNCNET_V2), "official"

    def _weights_entry(self, path: Path, origin: str) -> dict[str, str]:
        from bench import weights

        digest = weights.sha256_file(path)
        label = checkpoint_label(digest)
        return {"role": "lip-sync expert (LSE)", "path": str(path), "sha256": digest, "origin": origin,
                "label": "syncnet_v2.model (published)" if label is None else label}

    def _load(self) -> "SyncNetModel":
        if self._model is None:
            from metrics.sync.model import build_syncnet

            path, origin = self._checkpoint()
            self._model = build_syncnet(path).to(self.context.device)
            self._weights = self._weights_entry(path, origin)
        return self._model

    def ffmpeg_entry(self) -> dict[str, str]:
        """The ffmpeg the file steps use, as a manifest entry (its version moves the numbers)."""
        from bench import weights
        from metrics.sync import inputs

        info = inputs.ffmpeg_info()
        return {"role": "ffmpeg (LSE file steps)", "path": info["path"], "sha256": weights.sha256_file(Path(info["path"])),
                "origin": info["source"], "version": info["version"]}

    def weights_used(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if self._weights is not None:
            out.append(self._weights)
        elif self.availability(self.config).ok:
            out.append(self._weights_entry(*self._checkpoint()))
        try:
            out.append(self.ffmpeg_entry())
        except Exception as e:  # no usable ffmpeg: every score says so; the manifest too
            out.append({"role": "ffmpeg (LSE file steps)", "path": "", "sha256": "", "origin": "",
                        "error": f"{type(e).__name__}: {e}"})
        return out

    def score(self, sample: Sample) -> dict[str, Score]:
        avail = self.availability(self.config)
        if not avail.ok:
            return {n: Score.missing("unavailable", avail.reason) for n in self.names}
        from metrics.sync import pipeline

        try:
            pipeline.check_length(len(sample.generated), len(sample.audio))
        except pipeline.TooShort as e:  # no need to load 50 MB of weights for that
            return {n: Score.missing("too_short", str(e)) for n in self.names}
        import tempfile

        from metrics.base import faces_config
        from metrics.sync import delivery, inputs

        def detect_in(path: Path) -> Any:
            # the tracked protocol finds faces in the file's own frames, as `bench score` does
            return lambda: pipeline.default_detect_file(path, self.context.progress, faces_config(sample))

        video = getattr(sample, "video_file", None)
        if video is not None:
            return self.score_file(Path(video), sample.sync_protocol, detect=detect_in(Path(video)))
        with tempfile.TemporaryDirectory(prefix="talkbench-lse-") as tmp:
            path = delivery.write_delivered(Path(tmp) / delivery.DELIVERED_NAME, sample.generated,
                                            inputs.pcm16(sample.audio))
            return self.score_file(path, sample.sync_protocol, detect=detect_in(path))

    def score_file(self, video: Path, protocol: str = "lrs", audio: Path | None = None,
                   detect: Any = None) -> dict[str, Score]:
        """Scores of one video file (its own audio track unless `audio` is given), as syncnet_python."""
        avail = self.availability(self.config)
        if not avail.ok:
            return {n: Score.missing("unavailable", avail.reason) for n in self.names}
        from metrics.sync import inputs, pipeline
        from metrics.sync.tracked import NoFace

        options = pipeline.FeedOptions(batch_size=self.config.batch_size, emulate_codecs=self.config.emulate_codecs,
                                       device=self.context.device)
        try:
            model = self._load()
            result, info = pipeline.score_file(model, Path(video), protocol, options, audio, detect,  # type: ignore[arg-type]
                                               self.context.progress)
        except pipeline.TooShort as e:
            return {n: Score.missing("too_short", str(e)) for n in self.names}
        except NoFace as e:
            return {n: Score.missing("failed", f"tracked protocol: {e}") for n in self.names}
        except inputs.FFmpegError as e:
            return {n: Score.missing("failed", f"ffmpeg: {e}") for n in self.names}
        ff = inputs.ffmpeg_info()
        weights = dict(self._weights or {})
        info = {**info, "file": str(video), "ffmpeg": f"{ff['version']} ({ff['source']})",
                "weights": weights.get("label", ""), "weights_sha256": weights.get("sha256", "")}
        return scores_from(result, self.names, info)  # type: ignore[arg-type]
