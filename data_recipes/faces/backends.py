"""Face backends: one frame in, one face's landmarks out. `detect` turns them into a FaceTrack.

A backend owns a native model: `open()` loads it (expensive: about 0.5 s for MediaPipe's landmarker),
`start_clip()` forgets the previous clip, `process(index, frame_rgb)` returns a `FrameFace` or None
when it finds no face, `close()` releases the model. Frames are uint8 RGB (H, W, 3); `index` is the
frame's position in the clip (VIDEO-mode tracking needs increasing timestamps). One opened backend
serves many clips in turn (`data_recipes.models.ModelPool` lends it to one worker at a time), and
a clip's result does not depend on what the backend saw before it. As a context manager a backend
is opened and started for one clip.
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

    def open(self) -> None: ...

    def start_clip(self) -> None: ...

    def close(self) -> None: ...

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

    Clips in turn on one landmarker: VIDEO mode keeps the last face (to track it) and its landmark
    filter's state, and needs timestamps that only grow. `start_clip` therefore shows the landmarker
    one black frame (no face: tracking stops and the filter resets) and the clip's frames follow it
    at the usual spacing, `(index + 1) * step` after it. Every clip, the first one included, sees the
    same sequence, so its landmarks are bit-identical whatever the landmarker tracked before
    (checked on the shared clips). Starting at a time other than 0 matters: MediaPipe's filter
    skips its rate update for a first frame at timestamp 0, which changed the landmarks of a clip's
    first ~10 frames by up to 1.7 px.
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
        self._clip_start = 0      # ms: timestamp of the current clip's reset frame
        self._next_start = 0      # ms: the first timestamp a next clip may use
        self._reset_pending = False

    def _create(self, running_mode: str):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=getattr(vision.RunningMode, running_mode),
            output_face_blendshapes=True, output_facial_transformation_matrixes=True, **self._kw)
        return vision.FaceLandmarker.create_from_options(options)

    def open(self) -> None:
        """Build the landmarker(s) of the running mode (once; `start_clip` before each clip)."""
        if self._video is None and self.mode in ("video", "hybrid"):
            self._video = self._create("VIDEO")
        if self._image is None and self.mode in ("image", "hybrid"):
            self._image = self._create("IMAGE")

    def start_clip(self) -> None:
        """Forget the previous clip (see the class docstring); the reset frame is sent lazily, at the
        size of the clip's first frame."""
        self._clip_start = self._next_start
        self._reset_pending = self._video is not None

    def close(self) -> None:
        for lm in (self._video, self._image):
            if lm is not None:
                lm.close()
        self._video = self._image = None

    def __enter__(self) -> "MediaPipeBackend":
        self.open()
        self.start_clip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _video_timestamp(self, index: int, frame_rgb: np.ndarray) -> int:
        """ms timestamp of frame `index` of the current clip, sending the reset frame first if due."""
        if self._reset_pending:
            self._video.detect_for_video(_as_image(np.zeros_like(frame_rgb)), self._clip_start)
            self._reset_pending = False
            self._next_start = max(self._next_start, self._clip_start + 1)
        ts = self._clip_start + int(round((index + 1) * self.step_ms))
        self._next_start = max(self._next_start, ts + 1)
        return ts

    def process(self, index: int, frame_rgb: np.ndarray) -> FrameFace | None:
        image = _as_image(frame_rgb)
        h, w = frame_rgb.shape[:2]
        vid = img = None
        if self._video is not None:
            vid = _largest(self._video.detect_for_video(image, self._video_timestamp(index, frame_rgb)), w, h)
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
