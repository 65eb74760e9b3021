"""`output_check`: is the generated video a talking face at all?

A broken output (a flat grey rectangle pasted over the face, a black frame) can still score well on
full-frame image metrics, because everything around the face is the real video. This check records,
per generated video, the share of frames in which the suite's face tracker finds a face (the same
track LMD, tracked LSE and the suite scorer use: `metrics.base.generated_faces`, detected once per
sample) and how much the pixels vary inside the face region (the target clip's face box per frame,
where the face must be; the generated track's box where it found one). A video is degenerate when a
face is found in fewer than `min_face_share` of its frames or the face region is flat (median
grey-level standard deviation below `min_face_std`). Reports flag a method whose videos are mostly
degenerate and never mark it best (see docs/reports.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec, generated_faces

FACE_FOUND = "face-found"
FACE_STD = "face-region-std"
DEGENERATE = "degenerate"


@dataclass(frozen=True)
class OutputCheckConfig:
    """min_face_share: below this share of frames with a face, the video has no detectable face;
    min_face_std: below this median grey-level std (0-255) inside the face box, the face region is flat."""

    min_face_share: float = 0.5
    min_face_std: float = 2.0


def region_std(frames: np.ndarray, boxes: np.ndarray, inset: float = 0.15) -> np.ndarray:
    """Per frame: the standard deviation of grey levels inside `boxes[t]` (x1, y1, x2, y2 pixels),
    shrunk by `inset` of its size on every side (the face itself, not the background the box edges
    touch); NaN where the box is missing or empty after clipping to the frame. `frames` is an array
    or a lazy video (`data_recipes.frames`): read one frame at a time."""
    t, h, w = frames.shape[:3]
    out = np.full(t, np.nan)
    n = min(t, len(boxes))
    for i, frame in enumerate(frames[:n]):
        b = np.asarray(boxes[i], dtype=np.float64)
        if not np.all(np.isfinite(b)):
            continue
        dx, dy = inset * (b[2] - b[0]), inset * (b[3] - b[1])
        b = b + np.array([dx, dy, -dx, -dy])
        x1, y1 = max(int(math.floor(b[0])), 0), max(int(math.floor(b[1])), 0)
        x2, y2 = min(int(math.ceil(b[2])), w), min(int(math.ceil(b[3])), h)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        out[i] = float(frame[y1:y2, x1:x2].astype(np.float32).mean(axis=2).std())
    return out


def face_boxes(sample: Sample, track: Any) -> np.ndarray:
    """(T, 4) face box per generated frame: the generated track's where it found a face, else the
    target clip's (scaled when the generated frames have another size); NaN where neither has one."""
    t, h, w = sample.generated.shape[:3]
    boxes = np.full((t, 4), np.nan)
    try:
        from data_recipes.faces import FaceTrack

        target = FaceTrack.load(sample.target.stage("faces").folder)
        th, tw = sample.target.size
        scale = np.array([w / tw, h / th, w / tw, h / th])
        n = min(t, len(target))
        boxes[:n] = np.asarray(target.boxes[:n], dtype=np.float64) * scale
    except Exception:  # no faces stage for the target: the generated track alone
        pass
    own = np.asarray(track.boxes, dtype=np.float64)[:t]
    have = np.asarray(track.present, dtype=bool)[:t] & np.all(np.isfinite(own), axis=1)
    boxes[: len(have)][have] = own[have]
    return boxes


def verdict(face_share: float, face_std: float, config: OutputCheckConfig, frames: int) -> list[str]:
    """Readable reasons a video is degenerate ([] when it is not)."""
    reasons = []
    if face_share < config.min_face_share:
        found = int(round(face_share * frames))
        reasons.append(f"no face detected in {frames - found} of {frames} frames "
                       f"(face in {100 * face_share:.0f}%, needs {100 * config.min_face_share:.0f}%)")
    if math.isfinite(face_std) and face_std < config.min_face_std:
        reasons.append(f"face region is flat (pixel std {face_std:.2f} < {config.min_face_std:g} grey levels)")
    return reasons


class OutputCheck(Metric):
    spec = MetricSpec(
        name="output_check",
        description="sanity check of the generated video: share of frames with a detectable face and the "
                    "pixel variation inside the face region; flags degenerate outputs (no face, flat face)",
        values=(
            ValueSpec(FACE_FOUND, "", "share", "share of generated frames in which the face tracker finds a face"),
            ValueSpec(FACE_STD, "", "grey levels", "median over frames of the grey-level std inside the face box"),
            ValueSpec(DEGENERATE, "", "", "1 when the video has no face in most frames or a flat face region"),
        ),
        config=OutputCheckConfig,
        stages=("faces",),
    )

    def score(self, sample: Sample) -> dict[str, Score]:
        t = len(sample.generated)
        if t == 0:
            missing = Score.missing("failed", "the method returned no frames")
            return {FACE_FOUND: missing, FACE_STD: missing, DEGENERATE: Score.ok(1.0, reasons=["no frames"])}
        track = generated_faces(sample, self.context.progress)
        present = np.asarray(track.present, dtype=bool)[:t]
        share = float(present.mean()) if len(present) else 0.0
        stds = region_std(sample.generated, face_boxes(sample, track))
        std = float(np.nanmedian(stds)) if np.isfinite(stds).any() else math.nan
        reasons = verdict(share, std, self.config, t)
        out = {FACE_FOUND: Score.ok(share, frames=t, with_face=int(present.sum())),
               DEGENERATE: Score.ok(1.0 if reasons else 0.0, reasons=reasons)}
        out[FACE_STD] = (Score.ok(std, frames_with_box=int(np.isfinite(stds).sum())) if math.isfinite(std) else
                         Score.missing("not_applicable", "no face box in any frame (generated or target)"))
        return out
