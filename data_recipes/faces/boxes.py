"""Detector-style face boxes derived from landmarks, and optional temporal smoothing.

Wav2Lip pads and crops the box of the S3FD detector, which was trained on WIDER FACE boxes: ear to
ear, from the lower forehead to about the chin (S3FD often stops slightly above the chin, which is
why Wav2Lip's default pads add 10 px at the bottom). A landmark tracker gives no such box, so one
is derived from the mesh in the same spirit:

- x1, x2: leftmost / rightmost face-oval point (the oval passes the ears at cheek level);
- y2: lowest face-oval point (the chin);
- y1: the highest brow point raised by `forehead` x (y2 - brow top), default 0.2, which puts the top
  edge on the lower forehead, close to the mesh's own forehead point (478-index 10) on frontal faces.

On frontal faces this gives a box about 1.2x taller than wide, as S3FD boxes are; the recipe tests
compare it with OpenCV's YuNet detector (also trained on WIDER FACE) on real frames.
"""

from __future__ import annotations

import numpy as np

from data_recipes.faces.mapping import BROWS, BROWS_478, FACE_OVAL_478, JAW

DEFAULT_FOREHEAD = 0.2


def box_from_landmarks478(landmarks478: np.ndarray, forehead: float = DEFAULT_FOREHEAD) -> np.ndarray:
    """(..., 478, >=2) pixel landmarks -> (..., 4) float32 boxes x1, y1, x2, y2 (NaN rows stay NaN)."""
    lm = np.asarray(landmarks478, dtype=np.float64)
    oval = lm[..., list(FACE_OVAL_478), :2]
    brows_top = lm[..., list(BROWS_478), 1].min(axis=-1)
    return _box(oval[..., 0].min(-1), oval[..., 0].max(-1), brows_top, oval[..., 1].max(-1), forehead)


def box_from_landmarks68(landmarks68: np.ndarray, forehead: float = DEFAULT_FOREHEAD) -> np.ndarray:
    """(..., 68, 2) pixel landmarks (300-W order) -> (..., 4) float32 boxes, same rule as above."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    jaw = lm[..., list(JAW), :]
    brows_top = lm[..., list(BROWS), 1].min(axis=-1)
    return _box(jaw[..., 0].min(-1), jaw[..., 0].max(-1), brows_top, jaw[..., 1].max(-1), forehead)


def _box(x1: np.ndarray, x2: np.ndarray, brow_top: np.ndarray, y2: np.ndarray, forehead: float) -> np.ndarray:
    y1 = brow_top - forehead * (y2 - brow_top)
    return np.stack([x1, y1, x2, y2], axis=-1).astype(np.float32)


def smooth_boxes(boxes: np.ndarray, present: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving average of (T, 4) boxes over `window` frames, never across a missing frame.

    Each run of consecutive present frames is smoothed on its own (the window shrinks at run ends),
    so a box never drifts toward a position from before a gap; missing rows stay NaN.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    out = np.full(boxes.shape, np.nan, dtype=np.float64)
    half = max(int(window), 1) // 2
    for start, stop in runs(present):
        seg = boxes[start:stop]
        csum = np.vstack([np.zeros((1, seg.shape[1])), np.cumsum(seg, axis=0)])
        idx = np.arange(len(seg))
        lo = np.clip(idx - half, 0, len(seg))
        hi = np.clip(idx + half + 1, 0, len(seg))
        out[start:stop] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    return out.astype(np.float32)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive True values of a 1-D boolean mask."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
