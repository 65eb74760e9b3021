"""Face backends: one frame in, one face's landmarks out. `detect` turns them into a FaceTrack.

A backend is a context manager (it owns a native model) with `process(index, frame_rgb)` returning a
`FrameFace` or None when it finds no face. Frames are uint8 RGB (H, W, 3); `index` is the frame's
position in the clip (VIDEO-mode tracking needs increasing timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from data_recipes.faces.mapping import EYES_478, INNER_LIP_478, OUTER_LIP_478

# Lip area points GeneFace++ takes from IMAGE mode in its hybrid tracking (contours + the ring
# between them), so mouth motion is not damped by the VIDEO-mode landmark filter.
WITHIN_MOUTH_478: tuple[int, ...] = (76, 62, 184, 183, 74, 72, 73, 41, 38, 11, 12, 302, 268, 303, 271, 304,
                                     272, 408, 407, 292, 306, 325, 307, 319, 320, 403, 404, 316, 315, 15,
                                     16, 86, 85, 179, 180, 89, 90, 96, 77)
HYBRID_FROM_IMAGE_478: tuple[int, ...] = tuple(sorted(set(INNER_LIP_478 + OUTER_LIP_478 + WITHIN_MOUTH_478
                                                          + EYES_478)))


@dataclass(frozen=True)
class FrameFace:
    """One face in one frame. landmarks478: (478, 3) x, y pixels and MediaPipe's relative z;
    landmarks68: (68, 2) pixels (FAN) or None (derived from the mesh later); pose (4, 4); blendshapes (52,)."""

    landmarks478: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    pose: np.ndarray | None = None
    blendshapes: np.ndarray | None = None


class FaceBackend(Protocol):
    name: str
    has_mesh: bool

    def __enter__(self) -> "FaceBackend": ...

    def __exit__(self, *exc: object) -> None: ...

    def process(self, index: int, frame_rgb: np.ndarray) -> FrameFace | None: ...


def _as_image(frame_rgb: np.ndarray):
    import mediapipe as mp

    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be uint8 RGB (H, W, 3), got {frame.dtype} {frame.shape}")
    # PyAV frames can have padded rows; MediaPipe reads the buffer densely and then silently finds
    # no face, so a contiguous copy is required.
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))


class MediaPipeBackend:
    """MediaPipe Face Landmarker (Tasks API) from a local `.task` bundle.

    mode "video": one landmarker in VIDEO running mode. It detects once and then tracks the face from
    the previous landmarks (the BlazeFace detector runs only when tracking is lost), which is faster
    and steadier than per-frame detection, but its landmark filter is time-based and damps fast mouth
    motion. Timestamps are therefore stretched by `timestamp_stretch` (GeneFace++'s
    `anti_smooth_factor`: 20 in its frame extractor), which weakens the filter: on obama_20s the
    mouth-opening std went from 4.5 px (no stretch) to 4.9 px (x20) against 5.7 px in IMAGE mode.
    mode "image": independent detection per frame (no temporal filter, more jitter).
    mode "hybrid": both, as GeneFace++ combines them: VIDEO-mode points everywhere except the lips
    and eyes, which come from IMAGE mode (twice the cost).
    """

    name = "mediapipe"
    has_mesh = True

    def __init__(self, model_path: Path, mode: str = "video", fps: float = 25.0, timestamp_stretch: float = 20.0,
                 num_faces: int = 1, min_detection_confidence: float = 0.5,
                 min_presence_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        if mode not in ("video", "image", "hybrid"):
            raise ValueError(f"unknown MediaPipe running mode {mode!r} (video | image | hybrid)")
        self.model_path = Path(model_path)
        self.mode = mode
        self.step_ms = 1000.0 / fps * timestamp_stretch
        self._kw = dict(num_faces=num_faces, min_face_detection_confidence=min_detection_confidence,
                        min_face_presence_confidence=min_presence_confidence,
                        min_tracking_confidence=min_tracking_confidence)
        self._video = None
        self._image = None

    def _create(self, running_mode: str):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=getattr(vision.RunningMode, running_mode),
            output_face_blendshapes=True, output_facial_transformation_matrixes=True, **self._kw)
        return vision.FaceLandmarker.create_from_options(options)

    def __enter__(self) -> "MediaPipeBackend":
        if self.mode in ("video", "hybrid"):
            self._video = self._create("VIDEO")
        if self.mode in ("image", "hybrid"):
            self._image = self._create("IMAGE")
        return self

    def __exit__(self, *exc: object) -> None:
        for lm in (self._video, self._image):
            if lm is not None:
                lm.close()
        self._video = self._image = None

    def process(self, index: int, frame_rgb: np.ndarray) -> FrameFace | None:
        image = _as_image(frame_rgb)
        h, w = frame_rgb.shape[:2]
        vid = img = None
        if self._video is not None:
            vid = _largest(self._video.detect_for_video(image, int(round(index * self.step_ms))), w, h)
        if self._image is not None:
            img = _largest(self._image.detect(image), w, h)
        if vid is None:
            return img
        if img is not None:  # hybrid
            lm = vid.landmarks478.copy()
            sel = list(HYBRID_FROM_IMAGE_478)
            lm[sel] = img.landmarks478[sel]
            # blendshapes are mostly mouth and eye activations: take them undamped too
            return FrameFace(landmarks478=lm, pose=vid.pose, blendshapes=img.blendshapes)
        return vid


def _largest(result, width: int, height: int) -> FrameFace | None:
    """The face with the largest landmark extent (the most prominent one), in pixel coordinates."""
    if not result.face_landmarks:
        return None
    best, best_area = 0, -1.0
    meshes = []
    for k, face in enumerate(result.face_landmarks):
        pts = np.array([(p.x * width, p.y * height, p.z) for p in face], dtype=np.float32)
        meshes.append(pts)
        area = float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1]))
        if area > best_area:
            best, best_area = k, area
    pose = None
    if result.facial_transformation_matrixes and len(result.facial_transformation_matrixes) > best:
        pose = np.asarray(result.facial_transformation_matrixes[best], dtype=np.float32).reshape(4, 4)
    blend = None
    if result.face_blendshapes and len(result.face_blendshapes) > best:
        blend = np.array([c.score for c in result.face_blendshapes[best]], dtype=np.float32)
    return FrameFace(landmarks478=meshes[best], pose=pose, blendshapes=blend)
