"""Optional 68-point backend: face-alignment's 2D-FAN from its local TorchScript file.

The face-alignment package itself is not needed (it pulls the GUI OpenCV build and downloads
weights on construction); the suite loads the same TorchScript archive with `torch.jit.load` and
reproduces the package's pre- and post-processing (face-alignment 1.4, `api.py` / `utils.py`):

- from a face box (x1, y1, x2, y2): centre = box centre moved up by 0.12 x box height,
  scale = (width + height) / 195 (the S3FD reference scale);
- crop: the square of side 200 * scale around the centre, cut with the package's 1-based integer
  corner arithmetic, zero-padded outside the image, resized to 256x256 (cv2 INTER_LINEAR), RGB / 255;
- heatmaps (68 x 64 x 64): argmax per point, a quarter-pixel step toward the larger neighbour,
  minus 0.5, then mapped back through the inverse crop transform and truncated to integers
  (the package returns integer pixel coordinates).

Deviation: face-alignment finds boxes with S3FD (weights not available here); this backend takes
the box from MediaPipe's mesh (the suite's detector-style box), so FAN sees a comparable crop.
MediaPipe's mesh, pose and blendshapes are kept alongside the FAN points.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from data_recipes.faces.backends import FrameFace

REFERENCE_SCALE = 195.0
INPUT_SIZE = 256
HEATMAP_SIZE = 64


def crop_transform(center: np.ndarray, scale: float, resolution: float) -> np.ndarray:
    """3x3 matrix mapping image pixels to a `resolution`-sized crop of side 200 * scale."""
    h = 200.0 * scale
    t = np.eye(3)
    t[0, 0] = t[1, 1] = resolution / h
    t[0, 2] = resolution * (-center[0] / h + 0.5)
    t[1, 2] = resolution * (-center[1] / h + 0.5)
    return t


def transform_point(point, center, scale, resolution, invert=False) -> np.ndarray:
    """The package's point transform: through the crop matrix (or its inverse), truncated to int."""
    t = crop_transform(center, scale, resolution)
    if invert:
        t = np.linalg.pinv(t)
    p = t @ np.array([point[0], point[1], 1.0])
    return p[:2].astype(np.int32)


def center_scale(box: np.ndarray) -> tuple[np.ndarray, float]:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    center = np.array([x2 - (x2 - x1) / 2.0, y2 - (y2 - y1) / 2.0])
    center[1] -= (y2 - y1) * 0.12
    return center, (x2 - x1 + y2 - y1) / REFERENCE_SCALE


def crop(image: np.ndarray, center: np.ndarray, scale: float, resolution: int = INPUT_SIZE) -> np.ndarray:
    """(resolution, resolution, 3) uint8 crop with the package's corner arithmetic and zero padding."""
    import cv2

    ul = transform_point([1, 1], center, scale, resolution, True)
    br = transform_point([resolution, resolution], center, scale, resolution, True)
    out = np.zeros((br[1] - ul[1], br[0] - ul[0], image.shape[2]), np.uint8)
    ht, wd = image.shape[:2]
    new_x = [max(1, -ul[0] + 1), min(br[0], wd) - ul[0]]
    new_y = [max(1, -ul[1] + 1), min(br[1], ht) - ul[1]]
    old_x = [max(1, ul[0] + 1), min(br[0], wd)]
    old_y = [max(1, ul[1] + 1), min(br[1], ht)]
    if new_x[1] >= new_x[0] and new_y[1] >= new_y[0]:
        out[new_y[0] - 1:new_y[1], new_x[0] - 1:new_x[1]] = image[old_y[0] - 1:old_y[1], old_x[0] - 1:old_x[1]]
    return cv2.resize(out, (resolution, resolution), interpolation=cv2.INTER_LINEAR)


def decode_heatmaps(hm: np.ndarray, center: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(68, 64, 64) heatmaps -> ((68, 2) heatmap coordinates, (68, 2) int image coordinates)."""
    c, h, w = hm.shape
    flat = hm.reshape(c, h * w)
    idx = np.argmax(flat, axis=-1) + 1
    preds = np.stack([(idx - 1) % w + 1, np.floor((idx - 1) / h) + 1], axis=-1).astype(np.float32)
    for j in range(c):
        px, py = int(preds[j, 0]) - 1, int(preds[j, 1]) - 1
        if 0 < px < w - 1 and 0 < py < h - 1:
            diff = np.array([hm[j, py, px + 1] - hm[j, py, px - 1], hm[j, py + 1, px] - hm[j, py - 1, px]])
            preds[j] += np.sign(diff) * 0.25
    preds -= 0.5
    orig = np.stack([transform_point(p, center, scale, h, True) for p in preds]).astype(np.float32)
    return preds, orig


class FanBackend:
    """2D-FAN 68 points on boxes from a MediaPipe backend (see the module docstring)."""

    name = "fan"
    has_mesh = True

    def __init__(self, model_path: Path, box_source, device: str = "cpu"):
        self.model_path = Path(model_path)
        self.box_source = box_source
        self.device = device
        self._net = None

    def open(self) -> None:
        import torch

        self.box_source.open()
        if self._net is None:
            # a TorchScript archive: no pickled Python objects are executed
            self._net = torch.jit.load(str(self.model_path), map_location=self.device).eval()

    def start_clip(self) -> None:
        self.box_source.start_clip()

    def close(self) -> None:
        self._net = None
        self.box_source.close()

    def __enter__(self) -> "FanBackend":
        self.open()
        self.start_clip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def landmarks68(self, frame_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 integer-valued pixel coordinates for the face in `box`."""
        import torch

        center, scale = center_scale(box)
        inp = crop(np.ascontiguousarray(frame_rgb), center, scale)
        x = torch.from_numpy(inp.transpose(2, 0, 1).copy()).float().div_(255.0).unsqueeze_(0).to(self.device)
        with torch.inference_mode():
            out = self._net(x)
        if isinstance(out, (list, tuple)):  # the eager model returns one heatmap per stack
            out = out[-1]
        hm = out.detach().to("cpu", torch.float32).numpy()[0]
        if hm.shape != (68, HEATMAP_SIZE, HEATMAP_SIZE):
            raise ValueError(f"{self.model_path}: expected (68, 64, 64) heatmaps, got {hm.shape}")
        return decode_heatmaps(hm, center, scale)[1]

    def process(self, index: int, frame_rgb: np.ndarray) -> FrameFace | None:
        from data_recipes.faces.boxes import box_from_landmarks478

        face = self.box_source.process(index, frame_rgb)
        if face is None or face.landmarks478 is None:
            return None
        box = box_from_landmarks478(face.landmarks478)
        if not math.isfinite(float(box.sum())):
            return None
        return FrameFace(landmarks478=face.landmarks478, landmarks68=self.landmarks68(frame_rgb, box),
                         pose=face.pose, blendshapes=face.blendshapes)
