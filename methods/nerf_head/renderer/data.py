"""What the renderer trains on: plain arrays in one dataclass, filled by the method from the suite's
stages (head_crops -> frames, segmentation -> labels + plate, threedmm -> cameras + landmarks).

All images share one square side S (the head-crop side, 512 in the suite); the renderer resizes them
to its internal size (preset `render_size`, and 2x that for the super-resolution target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class RendererData:
    """One subject's training video.

    frames: (T, S, S, 3) uint8 RGB ground truth (head crops);
    background: (S, S, 3) uint8 static background plate;
    c2w: (T, 4, 4) float32 camera-to-world (`rays.poses_from_3dmm`);
    intrinsics: (4,) or (T, 4) float32 fx, fy, cx, cy in pixels of S (`rays.geneface_intrinsics`,
        `rays.intrinsics_in_crop`);
    conds: (T, 204) float32 normalised landmark condition per frame (68 x 3; windows are built here);
    eye_area: (T,) float32 eye-area percentage per frame;
    lm68: (T, 68, 2) float32 2-D landmarks in pixels of S (jaw points drive the torso; the hull is the
        face mask of the ambient loss when `face_masks` is None);
    train_idx, val_idx: frame indices that train / that are held out for `evaluate`;
    labels: (T, S, S) uint8 segmentation (0 background, 1 head, 2 torso) or None: the head stage's
        background is the frame's torso over the plate (GeneFace++: the inpainted torso over the plate),
        and the torso stage's target; None = the plate alone;
    face_masks: (T, S, S) bool or None.
    """

    frames: np.ndarray
    background: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    conds: np.ndarray
    eye_area: np.ndarray
    lm68: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    labels: np.ndarray | None = None
    face_masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        t, s = self.frames.shape[0], self.frames.shape[1]
        if self.frames.shape[1:] != (s, s, 3) or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (T, S, S, 3), got {self.frames.dtype} {self.frames.shape}")
        checks = {"background": (self.background.shape, (s, s, 3)), "c2w": (self.c2w.shape, (t, 4, 4)),
                  "conds": (self.conds.shape[:1], (t,)), "eye_area": (self.eye_area.shape, (t,)),
                  "lm68": (self.lm68.shape, (t, 68, 2))}
        for name, (got, want) in checks.items():
            if tuple(got) != tuple(want):
                raise ValueError(f"{name}: shape {tuple(got)}, expected {want}")
        if len(self.train_idx) == 0:
            raise ValueError("no training frames")

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])

    def intrinsics_of(self, index: int) -> np.ndarray:
        k = np.asarray(self.intrinsics, np.float32)
        return k if k.ndim == 1 else k[index]


def resize_u8(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S, C) uint8 -> (N, C, size, size) uint8, antialiased bilinear (the original's resize)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[-1] == size:
        return x.contiguous()
    out = []
    for chunk in x.split(64):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def torso_over_plate(frames: np.ndarray, labels: np.ndarray | None, plate: np.ndarray) -> np.ndarray:
    """(T, S, S, 3): the frame's torso pixels over the plate (the head stage's background)."""
    if labels is None:
        return np.broadcast_to(plate, frames.shape).copy()
    return np.where((labels == 2)[..., None], frames, plate[None])


def hull_mask(points: np.ndarray, size: int, dilate: int = 2) -> np.ndarray:
    """(size, size) bool: convex hull of 2-D points (pixels), dilated by `dilate` pixels (GeneFace++'s
    polygon face mask: hull of the 68 landmarks, dilated with a 3x3 max then average pool)."""
    import cv2
    from scipy.spatial import ConvexHull

    pts = np.asarray(points, np.float64)
    pts = pts[np.isfinite(pts).all(1)]
    img = np.zeros((size, size), np.uint8)
    if len(pts) >= 3:
        try:
            hull = pts[ConvexHull(pts).vertices]
        except Exception:  # degenerate (collinear) points: no mask
            hull = None
        if hull is not None:   # 4 fractional bits: sub-pixel vertices as the polygon has them
            cv2.fillConvexPoly(img, np.round(hull * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    m = torch.from_numpy(img.astype(np.float32))[None, None]
    if dilate > 0:
        m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
    return m[0, 0].numpy() > 0


def lip_rect(lm68: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) box around the lips (points 48-67) enlarged 1.2x (get_lip_rect)."""
    lips = np.asarray(lm68, np.float64)[48:68]
    (x0, y0), (x1, y1) = lips.min(0), lips.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - cx) * 1.2, (y1 - cy) * 1.2
    c0, c1 = int(max(0, cx - hw)), int(min(size, cx + hw))
    r0, r1 = int(max(0, cy - hh)), int(min(size, cy + hh))
    return r0, r1, c0, c1


def nerf_lm68(lm68_px: np.ndarray, size: int) -> np.ndarray:
    """Pixel landmarks -> the torso's input convention (reconstruct_lm2d_nerf: 1 - x / S, y / S)."""
    p = np.asarray(lm68_px, np.float32)
    return np.stack([1 - p[..., 0] / size, p[..., 1] / size], -1)


def eye_area_for_inference(train_eye_area: np.ndarray) -> float:
    """The eye condition used for unseen frames: the training frames' 97 % quantile."""
    return float(np.quantile(np.asarray(train_eye_area, np.float64), 0.97))
