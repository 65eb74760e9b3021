"""A video for looking at audio-to-motion: predicted vs tracked 68 landmarks drawn on the clip's frames.

The prediction is a canonical shape (mean + identity + predicted expression, no pose); it is placed in
each frame with that frame's fitted 3DMM pose and camera (the `threedmm` stage), so the predicted
mouth sits where the tracked one is and only the motion differs. Tracked landmarks are the `faces`
stage's 68 points. Predicted: red, tracked: green; lips are joined by lines so the opening reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    from data_recipes.recipe import PreparedClip
    from data_recipes.threedmm.model import Camera
    from methods.nerf_head.motion import ExpressionSpace

PRED_COLOUR = (230, 40, 40)
TRACK_COLOUR = (40, 200, 60)
OUTER_LIP = tuple(range(48, 60))
INNER_LIP = tuple(range(60, 68))


def project_lm68(canonical: np.ndarray, rotation: np.ndarray, trans: np.ndarray, camera: "Camera") -> np.ndarray:
    """(T, 68, 3) canonical decimetres, (T, 3, 3), (T, 3) -> (T, 68, 2) pixels."""
    from data_recipes.threedmm.model import project

    return project(np.asarray(canonical, np.float64), np.asarray(rotation, np.float64),
                   np.asarray(trans, np.float64), camera).astype(np.float32)


def draw_landmarks(frame: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int = 2) -> np.ndarray:
    """Draw (68, 2) pixel points (NaN skipped) and closed lip contours on a copy of an RGB frame."""
    import cv2

    out = np.ascontiguousarray(frame.copy())
    pts = np.asarray(points, np.float64)
    for loop in (OUTER_LIP, INNER_LIP):
        ring = pts[list(loop)]
        if np.isfinite(ring).all():
            cv2.polylines(out, [np.round(ring).astype(np.int32)], True, colour, 1, cv2.LINE_AA)
    for x, y in pts:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    return out


def overlay_frames(frames: Iterable[np.ndarray], predicted: np.ndarray, tracked: np.ndarray | None,
                   label: str = "") -> Iterator[np.ndarray]:
    """Frames with predicted (red) and tracked (green, optional) (T, 68, 2) points drawn."""
    import cv2

    for i, frame in enumerate(frames):
        if i >= len(predicted):
            return
        out = frame
        if tracked is not None and i < len(tracked):
            out = draw_landmarks(out, tracked[i], TRACK_COLOUR)
        out = draw_landmarks(out, predicted[i], PRED_COLOUR)
        if label:
            cv2.putText(out, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        yield out


def write_overlay_video(path: str | Path, clip: "PreparedClip", space: "ExpressionSpace", id_offset: np.ndarray,
                        pred_exp: np.ndarray, *, audio: np.ndarray | None = None, label: str = "") -> Path:
    """Write `path` (mp4, H.264 + AAC): the clip's frames with the predicted expression's landmarks
    (red) and the tracked ones (green). pred_exp (T', K) in `space`; frames beyond T' are not written.

    `audio` defaults to the clip's own (self-driven); pass the driving audio for a cross-driven request.
    """
    from data_recipes.media import write_video
    from data_recipes.threedmm.model import Camera
    from methods.nerf_head.motion import canonical_lm68

    tdm = clip.stage("threedmm")
    cam = tdm.json("meta")["camera"]
    camera = Camera(focal=float(cam["focal"]), cx=float(cam["cx"]), cy=float(cam["cy"]),
                    camera_distance=float(cam["camera_distance"]), width=int(cam["width"]), height=int(cam["height"]))
    n = min(len(pred_exp), clip.num_frames)
    rot, trans = tdm.array("rotation")[:n], tdm.array("trans")[:n]
    predicted = project_lm68(canonical_lm68(space, id_offset, np.asarray(pred_exp)[:n]), rot, trans, camera)
    tracked = clip.stage("faces").array("landmarks68")[:n, :, :2]
    if audio is None:
        audio = clip.audio()[: n * 640]
    frames = overlay_frames(clip.iter_frames(0, n), predicted, tracked, label)
    return write_video(Path(path), frames, fps=25, audio=audio)
