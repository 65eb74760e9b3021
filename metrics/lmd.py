"""LMD: landmark distance between generated and ground-truth frames (mouth and whole face).

LMD = mean over frames and points of the L2 distance between the 68-point landmarks of the
generated frame and of the real frame, in pixels of a face normalised to `face_size` pixels:
distances are multiplied by face_size / F, where F is the median over the clip of the ground-truth
face box side (max of width and height of the suite's detector-style box, brows-to-chin by
ear-to-ear). This is the "landmarks in a crop resized to a fixed face size" reading of the LMD that
ER-NeRF / SyncTalk report; fixing the face size makes numbers comparable across datasets whose
faces fill 100 or 400 pixels. One scale per clip (not per frame) keeps box jitter out of the number.
A translation is not removed: a generated mouth in the wrong place counts as wrong.

Points: mouth = 68-point indices 48-67 (outer and inner lip), face = 0-67. Landmarks of both sides
come from the same face backend with the same config: the ground truth's from the target clip's
"faces" recipe stage, the generated frames' from `data_recipes.faces.detect` on them. Frames where
either side has no face are left out and counted in the score's extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec, generated_faces

MOUTH = tuple(range(48, 68))
FACE = tuple(range(0, 68))
FACE_SIZE = 256


@dataclass(frozen=True)
class LMDConfig:
    """face_size: the normalised face box side in pixels; the unit is "px @ face_size"."""

    face_size: int = FACE_SIZE


def face_size_px(boxes: np.ndarray) -> float:
    """Median over frames of max(box width, box height); NaN rows (no face) ignored."""
    b = np.asarray(boxes, dtype=np.float64)
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    side = side[np.isfinite(side)]
    if side.size == 0:
        raise ValueError("no ground-truth face box to normalise by")
    return float(np.median(side))


@dataclass(frozen=True)
class LMDResult:
    value: float          # mean distance in px @ face_size
    frames_used: int
    frames_skipped: int
    per_frame: np.ndarray  # (T,) float64, NaN where skipped


def landmark_distance(pred: np.ndarray, gt: np.ndarray, points: Sequence[int], scale: float) -> LMDResult:
    """pred, gt: (T, 68, 2) pixel landmarks (NaN = no face); mean over points and usable frames of
    the L2 distance, times `scale`."""
    p = np.asarray(pred, dtype=np.float64)[:, list(points)]
    g = np.asarray(gt, dtype=np.float64)[:, list(points)]
    if p.shape != g.shape:
        raise ValueError(f"landmark arrays differ: {p.shape} vs {g.shape}")
    per_frame = np.linalg.norm(p - g, axis=2).mean(axis=1) * scale
    ok = np.isfinite(per_frame)
    value = float(per_frame[ok].mean()) if ok.any() else float("nan")
    return LMDResult(value, int(ok.sum()), int((~ok).sum()), per_frame)


class LMDMetric(Metric):
    spec = MetricSpec(
        name="lmd",
        description="landmark distance (68-point, suite face backend) between generated and real frames, "
                    f"mouth (48-67) and face (0-67), in pixels of a face normalised to {FACE_SIZE} px",
        values=(
            ValueSpec("LMD-mouth", "lower", f"px @ {FACE_SIZE}", "mean L2 distance of the 20 mouth landmarks"),
            ValueSpec("LMD-face", "lower", f"px @ {FACE_SIZE}", "mean L2 distance of all 68 landmarks"),
        ),
        config=LMDConfig,
        needs_ground_truth=True,
        stages=("faces",),
    )

    def score(self, sample: Sample) -> dict[str, Score]:
        names = [v.name for v in self.spec.values]
        if sample.ground_truth is None:
            return {n: Score.missing("not_applicable", "no ground truth (cross-driven)") for n in names}
        from data_recipes.faces import FaceTrack

        t = len(sample.generated)
        stage = sample.target.stage("faces")
        gt = FaceTrack.load(stage.folder)
        if len(gt) < t:
            return {n: Score.missing("failed", f"faces stage has {len(gt)} frames, sample has {t}") for n in names}
        pred = generated_faces(sample, self.context.progress)
        try:
            size = face_size_px(gt.boxes[:t])
        except ValueError as e:
            return {n: Score.missing("failed", str(e)) for n in names}
        scale = self.config.face_size / size
        out: dict[str, Score] = {}
        for name, points in (("LMD-mouth", MOUTH), ("LMD-face", FACE)):
            r = landmark_distance(pred.landmarks68, gt.landmarks68[:t], points, scale)
            if r.frames_used == 0:
                out[name] = Score.missing("failed", f"no frame with a face on both sides ({t} frames)")
                continue
            extra: dict[str, Any] = {"frames_used": r.frames_used, "frames_skipped": r.frames_skipped,
                                     "face_size_px": size, "face_size": self.config.face_size}
            out[name] = Score.ok(r.value, **extra)
        return out
