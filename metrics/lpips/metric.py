"""LPIPS-Alex and LPIPS-VGG as runner metrics: per-frame LPIPS on full frames, mean over frames.

Frames are scored at the size the runner gives them (no resizing; 512x512 head crops are fine on
CPU in batches). Unavailable, with the exact file and folder, until the torchvision backbone is in
the weights folder; the v0.1 heads ship with the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bench.availability import Availability, all_of
from bench.precision import Requested
from metrics.base import Metric, MetricContext, MetricSpec, Sample, Score, ValueSpec
from metrics.lpips.specs import BACKBONE_SPECS, HEADS_SPECS

# every weight file these metrics use, for `bench list` (bench.cli.known_weights reads WEIGHTS)
WEIGHTS = (BACKBONE_SPECS["alex"], HEADS_SPECS["alex"], BACKBONE_SPECS["vgg"], HEADS_SPECS["vgg"])


@dataclass(frozen=True)
class LPIPSConfig:
    """data_range: 255 for the uint8 frames the runner passes. batch_size: frame pairs per forward
    pass (None: 8 for AlexNet, 2 for VGG16, which bounds memory at 512x512 to about 1-2 GB).
    per_frame_limit: how many per-frame values to keep in the results (evenly subsampled; 0 = all).
    precision: "auto" is true fp32 on every device (a published metric: its values must match the
    lpips package); an explicit "bf16" / "amp" trades that for speed (`bench.precision`)."""

    data_range: float = 255.0
    batch_size: int | None = None
    per_frame_limit: int = 250
    precision: Requested = "auto"


_DEFAULT_BATCH = {"alex": 8, "vgg": 2}


class _LPIPSMetric(Metric):
    net: ClassVar[str]
    value_name: ClassVar[str]

    def __init__(self, config: Any, context: MetricContext):
        from bench.precision import choose

        super().__init__(config, context)
        self._model = None  # the backbone and heads, loaded on first use and kept for every sample
        self._used: list[dict[str, str]] = []
        self.precision = choose(context.device, (config or LPIPSConfig()).precision, faithful=True)
        if self.precision.slow:
            context.progress.log(f"warning: {self.spec.name} runs at {self.precision.name}: {self.precision.reason}")

    def precision_used(self) -> dict[str, dict[str, Any]]:
        """The precision of this metric's network, for the manifest."""
        return {"lpips": {**self.precision.to_json(), "device": self.context.device}}

    @classmethod
    def availability(cls, config: Any) -> Availability:
        from bench import weights as W
        from metrics.lpips import specs

        return all_of(W.availability(specs.backbone_spec(cls.net)), W.availability(specs.heads_spec(cls.net)))

    def _load(self):
        if self._model is None:
            from metrics.lpips.model import load_lpips

            self._model, used = load_lpips(self.net, device=self.context.device)
            self._used = [u.as_dict() for u in used]
        return self._model

    def weights_used(self) -> list[dict[str, str]]:
        """The files this metric uses (hashes only; the model is not built for this)."""
        if self._used:
            return list(self._used)
        from bench import weights as W
        from metrics.lpips import specs
        from metrics.lpips.backbones import ARCHS

        out = []
        for role, spec in ((f"LPIPS backbone ({ARCHS[self.net].name})", specs.backbone_spec(self.net)),
                           (f"LPIPS v0.1 heads ({self.net})", specs.heads_spec(self.net))):
            path = W.find(spec)
            if path is not None:
                origin = "bundled" if path == W._bundled_path(spec) else "official"
                out.append({"role": role, "path": str(path), "sha256": W.sha256_file(path), "origin": origin})
        return out

    def score(self, sample: Sample) -> dict[str, Score]:
        from bench.weights import WeightsMismatch, WeightsMissing
        from metrics.image import check_sample, clip_mean, frames_per_batch, per_frame_list, per_frame_values
        from metrics.lpips.backbones import BackboneLayoutError
        from metrics.lpips.model import lpips_distance

        if (bad := check_sample(sample)) is not None:
            return {self.value_name: bad}
        cfg: LPIPSConfig = self.config or LPIPSConfig()
        try:
            model = self._load()
        except (WeightsMissing, WeightsMismatch, BackboneLayoutError) as e:
            return {self.value_name: Score.missing("unavailable", str(e))}
        # at most 512x512 pixels per batch of the configured size (VGG: ~0.6 GB of activations per
        # 512x512 pair), read in blocks from lazy videos (never the whole clip)
        batch = frames_per_batch(sample.generated.shape, cfg.batch_size or _DEFAULT_BATCH[self.net],
                                 (cfg.batch_size or _DEFAULT_BATCH[self.net]) * 512 * 512)
        per_frame = per_frame_values(
            lambda a, b: lpips_distance(a, b, model, cfg.data_range, batch_size=batch, precision=self.precision),
            sample.generated, sample.ground_truth, batch, self.context.progress, f"LPIPS ({self.net})")
        return {self.value_name: Score.ok(clip_mean(per_frame), version="0.1", backbone=self.net,
                                          precision=self.precision.name,
                                          per_frame=per_frame_list(per_frame, cfg.per_frame_limit))}


class LPIPSAlex(_LPIPSMetric):
    net = "alex"
    value_name = "LPIPS-Alex"
    spec = MetricSpec(
        name="lpips_alex",
        description="LPIPS v0.1 with the ImageNet AlexNet backbone against the ground-truth frames, "
                    "full frames, mean over frames",
        values=(ValueSpec("LPIPS-Alex", "lower", "", "learned perceptual distance (0 = identical)"),),
        config=LPIPSConfig,
        needs_ground_truth=True,
    )


class LPIPSVGG(_LPIPSMetric):
    net = "vgg"
    value_name = "LPIPS-VGG"
    spec = MetricSpec(
        name="lpips_vgg",
        description="LPIPS v0.1 with the ImageNet VGG16 backbone against the ground-truth frames, "
                    "full frames, mean over frames",
        values=(ValueSpec("LPIPS-VGG", "lower", "", "learned perceptual distance (0 = identical)"),),
        config=LPIPSConfig,
        needs_ground_truth=True,
    )
