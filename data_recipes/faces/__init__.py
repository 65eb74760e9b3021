"""Face detection + landmarks: the contract every backend and consumer shares.

A `FaceTrack` describes one face per frame of a clip (the most prominent one). Coordinates are in
pixels of the frame (x right, y down). Missing faces are NaN rows with `present` False; short gaps
are interpolated by `data_recipes.faces.track` and flagged in `interpolated`.

The "faces" recipe stage stores the same arrays under the same names (see `FaceTrack.save`).
Backends: MediaPipe Face Landmarker (default, offline, bundled model) and face-alignment FAN
(optional, local weights). 68-point landmarks follow the iBUG 300-W convention (0-16 jaw,
17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth); see `data_recipes.faces.mapping`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame face data, T frames.

    boxes: (T, 4) float32 x1, y1, x2, y2, a detector-style face box (brows to chin, ear to ear),
        comparable to what S3FD gives Wav2Lip; NaN where no face;
    landmarks68: (T, 68, 2) float32 pixel coordinates; NaN where no face;
    landmarks478: (T, 478, 3) float32 (x, y in pixels, z in MediaPipe's relative depth), or an
        empty (T, 0, 3) array when the backend has no dense mesh (FAN);
    pose: (T, 4, 4) float32 facial transformation matrix (MediaPipe), NaN when unavailable;
    blendshapes: (T, 52) float32 MediaPipe blendshape scores, or (T, 0) when unavailable;
    present: (T,) bool, a face was detected (or interpolated) in the frame;
    interpolated: (T,) bool, the frame's values were filled from its neighbours (short gap).
    """

    boxes: np.ndarray
    landmarks68: np.ndarray
    landmarks478: np.ndarray
    pose: np.ndarray
    blendshapes: np.ndarray
    present: np.ndarray
    interpolated: np.ndarray

    def __len__(self) -> int:
        return len(self.present)

    def save(self, folder: Path) -> None:
        for f in fields(self):
            np.save(Path(folder) / f"{f.name}.npy", np.ascontiguousarray(getattr(self, f.name)), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> "FaceTrack":
        return cls(**{f.name: np.load(Path(folder) / f"{f.name}.npy", allow_pickle=False) for f in fields(cls)})


def detect(frames, config=None, progress=None, models=None) -> FaceTrack:
    """Track the most prominent face in uint8 RGB frames; see `data_recipes.faces.pipeline.detect`.

    `config` is a `data_recipes.faces.stage.FacesConfig` (None: the recipe defaults, MediaPipe);
    `models` a `data_recipes.models.ModelPool` to borrow the landmarker from (None: one for this call).
    """
    from data_recipes.faces.pipeline import detect as _detect

    return _detect(frames, config, progress, models=models)
