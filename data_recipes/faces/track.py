"""Turning per-frame detections into a `FaceTrack`: short gaps filled, long gaps marked and reported."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_recipes.faces import FaceTrack
from data_recipes.faces.boxes import runs


@dataclass(frozen=True)
class GapReport:
    """Frames without a detection: which were filled and which stay missing ([start, stop) ranges)."""

    detected: int
    interpolated: int
    missing: int
    interpolated_ranges: tuple[tuple[int, int], ...]
    missing_ranges: tuple[tuple[int, int], ...]

    def as_json(self) -> dict:
        return {"detected": self.detected, "interpolated": self.interpolated, "missing": self.missing,
                "interpolated_ranges": [list(r) for r in self.interpolated_ranges],
                "missing_ranges": [list(r) for r in self.missing_ranges]}


def fill_gaps(arrays: dict[str, np.ndarray], detected: np.ndarray, max_gap: int
              ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, GapReport]:
    """Fill runs of at most `max_gap` undetected frames; longer runs stay NaN.

    `arrays` are float arrays with time on axis 0 (NaN where undetected). A gap between two detections
    is filled by linear interpolation of every value (for a 4x4 pose matrix this is a fine
    approximation over a few frames, not a rotation interpolation); a short gap at either end of the
    clip holds the nearest detection. Returns (filled arrays, present, interpolated, report).
    """
    detected = np.asarray(detected, dtype=bool)
    n = len(detected)
    out = {k: np.array(v, dtype=np.float32, copy=True) for k, v in arrays.items()}
    interpolated = np.zeros(n, dtype=bool)
    filled_ranges, missing_ranges = [], []
    for start, stop in runs(~detected):
        length = stop - start
        has_before, has_after = start > 0, stop < n
        if length > max_gap or not (has_before or has_after):
            missing_ranges.append((start, stop))
            continue
        for v in out.values():
            if has_before and has_after:
                w = (np.arange(start, stop) - (start - 1)) / float(length + 1)
                w = w.reshape((-1,) + (1,) * (v.ndim - 1))
                v[start:stop] = (1.0 - w) * v[start - 1] + w * v[stop]
            else:
                v[start:stop] = v[start - 1] if has_before else v[stop]
        interpolated[start:stop] = True
        filled_ranges.append((start, stop))
    present = detected | interpolated
    report = GapReport(int(detected.sum()), int(interpolated.sum()), int((~present).sum()),
                       tuple(filled_ranges), tuple(missing_ranges))
    return out, present, interpolated, report


def build_track(landmarks478: np.ndarray | None, landmarks68: np.ndarray | None, boxes: np.ndarray,
                pose: np.ndarray, blendshapes: np.ndarray, detected: np.ndarray, max_gap: int
                ) -> tuple[FaceTrack, GapReport]:
    """Assemble a FaceTrack from raw per-frame arrays (NaN where undetected), filling short gaps.

    Either landmarks478 (T, 478, 3) or landmarks68 (T, 68, 2) must be given; without 478 points
    the track's `landmarks478` is an empty (T, 0, 3) array. Boxes are filled like everything else
    (interpolated, not re-derived) so a filled frame's box is consistent with its neighbours.
    """
    n = len(detected)
    arrays = {"boxes": boxes, "pose": pose, "blendshapes": blendshapes}
    if landmarks478 is not None:
        arrays["landmarks478"] = landmarks478
    if landmarks68 is not None:
        arrays["landmarks68"] = landmarks68
    filled, present, interpolated, report = fill_gaps(arrays, detected, max_gap)
    lm478 = filled.get("landmarks478", np.zeros((n, 0, 3), np.float32))
    lm68 = filled.get("landmarks68")
    if lm68 is None:
        from data_recipes.faces.mapping import lm68_from_lm478

        lm68 = lm68_from_lm478(lm478).astype(np.float32)
    track = FaceTrack(
        boxes=filled["boxes"].astype(np.float32),
        landmarks68=np.ascontiguousarray(lm68, dtype=np.float32),
        landmarks478=np.ascontiguousarray(lm478, dtype=np.float32),
        pose=filled["pose"].astype(np.float32),
        blendshapes=filled["blendshapes"].astype(np.float32),
        present=present,
        interpolated=interpolated,
    )
    return track, report
