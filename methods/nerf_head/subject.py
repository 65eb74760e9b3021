"""A subject's renderer inputs from the suite's stages, and the per-request geometry of `generate`.

Pure functions over stage outputs (no state), used by `methods.nerf_head.method`:
- `crop_geometry`: the head-crop transforms (head_crops stage, 512 px) rescaled to the side S the
  renderer is fed at, the 3DMM camera seen through them (threedmm stage: focal, principal point) and
  the renderer cameras from the per-frame pose (rotation.npy / trans.npy), as GeneFace++'s binarizer;
- `tracked_lm68`: the faces stage's 68 landmarks in crop pixels (gaps held from the nearest frame);
- `eye_area`: the eye condition per frame (see its docstring for the deviation);
- `subject_conditions`: the training frames' idexp landmarks (the tracked expression written in the
  audio-to-motion model's expression space) -> the renderer's normalised condition;
- `smooth_poses`: GeneFace++'s inference smooths the driving camera path; here a centred moving
  average of the Euler angles and translations (kernel 7);
- `feather_mask`: the weight with which a rendered crop is pasted back into the full frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from data_recipes.recipe import PreparedClip
    from methods.nerf_head.motion import ConditionStats, ExpressionSpace

CROP_SIZE_KEY = "size"
POSE_SMOOTH_KERNEL = 7
LEFT_EYE_68 = tuple(range(36, 42))
RIGHT_EYE_68 = tuple(range(42, 48))
FACE_OUTLINE_68 = tuple(range(0, 27))


@dataclass(frozen=True)
class CropGeometry:
    """One clip seen by the renderer at side `size`: transforms (T, 2, 3) frame -> crop of `size`,
    c2w (T, 4, 4), intrinsics (T, 4) in pixels of `size`, euler (T, 3) and trans (T, 3) of the 3DMM."""

    size: int
    transforms: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    euler: np.ndarray
    trans: np.ndarray


def scale_transforms(transforms: np.ndarray, crop_size: int, size: int) -> np.ndarray:
    """(T, 2, 3) frame -> crop-of-`crop_size` similarities -> frame -> crop-of-`size`."""
    return (np.asarray(transforms, np.float64) * (size / crop_size)).astype(np.float64)


def camera_meta(clip: "PreparedClip") -> tuple[float, float, float]:
    cam = clip.stage("threedmm").json("meta")["camera"]
    return float(cam["focal"]), float(cam["cx"]), float(cam["cy"])


def crop_geometry(clip: "PreparedClip", size: int, smooth: int = 0) -> CropGeometry:
    """The clip's crop transforms at `size`, renderer cameras and intrinsics (smooth > 1: the pose path
    smoothed with that kernel, as GeneFace++ does for driving)."""
    from methods.nerf_head.renderer.rays import euler_to_rotation, intrinsics_in_crop, poses_from_3dmm

    hc = clip.stage("head_crops")
    crop = int(hc.json("meta")[CROP_SIZE_KEY])
    transforms = scale_transforms(hc.array("transforms"), crop, size)
    tdm = clip.stage("threedmm")
    euler = tdm.array("euler").astype(np.float64).reshape(-1, 3)
    trans = tdm.array("trans").astype(np.float64).reshape(-1, 3)
    if smooth > 1:
        euler, trans = smooth_poses(euler, trans, smooth)
        rotation = euler_to_rotation(euler)
    else:
        rotation = tdm.array("rotation").astype(np.float64).reshape(-1, 3, 3)
    focal, cx, cy = camera_meta(clip)
    k = np.stack([intrinsics_in_crop(focal, cx, cy, a, size, size) for a in transforms]).astype(np.float32)
    return CropGeometry(size, transforms, poses_from_3dmm(rotation, trans), k, euler, trans)


def smooth_poses(euler: np.ndarray, trans: np.ndarray, kernel: int = POSE_SMOOTH_KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """Centred moving average (edge-padded) of (T, 3) Euler angles and translations."""
    def avg(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if len(x) < 2 or kernel < 2:
            return x.copy()
        half = kernel // 2
        padded = np.pad(x, ((half, kernel - 1 - half), (0, 0)), mode="edge")
        c = np.cumsum(np.concatenate([np.zeros((1, x.shape[1])), padded]), axis=0)
        return (c[kernel:] - c[:-kernel]) / kernel

    return avg(euler), avg(trans)


def fill_nearest(points: np.ndarray) -> np.ndarray:
    """(T, ...) with NaN frames -> each missing frame takes the nearest frame that has values."""
    p = np.asarray(points, np.float64).copy()
    ok = np.isfinite(p.reshape(len(p), -1)).all(1)
    if ok.all() or not ok.any():
        return np.nan_to_num(p)
    good = np.flatnonzero(ok)
    for i in np.flatnonzero(~ok):
        p[i] = p[good[np.argmin(np.abs(good - i))]]
    return p


def tracked_lm68(clip: "PreparedClip", transforms: np.ndarray) -> np.ndarray:
    """(T, 68, 2) float32 tracked landmarks (faces stage) in crop pixels of the given transforms."""
    from data_recipes.crops.head import apply

    lm = clip.stage("faces").array("landmarks68")[..., :2].astype(np.float64)
    return apply(transforms, fill_nearest(lm)).astype(np.float32)


def _polygon_area(p: np.ndarray) -> np.ndarray:
    """(T, N, 2) closed polygons -> (T,) shoelace areas."""
    x, y = p[..., 0], p[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))


def eye_area(lm68: np.ndarray) -> np.ndarray:
    """(T, 68, 2) -> (T,) float32: the two eye polygons' area as a percentage of the face outline's area.

    GeneFace++ reads the eye-area percentage from face parsing of each training frame; the suite has no
    face parser, so the tracked 68 landmarks give the same kind of number (eyes open -> larger). The
    renderer only sees it through a learned embedding and uses the training 97 % quantile at inference.
    """
    lm = np.asarray(lm68, np.float64)
    eyes = _polygon_area(lm[:, list(LEFT_EYE_68)]) + _polygon_area(lm[:, list(RIGHT_EYE_68)])
    outline = lm[:, list(FACE_OUTLINE_68)]
    # the 27 outline points in order: jaw 0-16, then the brows from right to left close the polygon
    order = list(range(17)) + list(range(26, 16, -1))
    face = _polygon_area(outline[:, order])
    return (100.0 * eyes / np.maximum(face, 1e-6)).astype(np.float32)


def clip_idexp(clip: "PreparedClip", space: "ExpressionSpace", bfm=None) -> tuple[np.ndarray, np.ndarray]:
    """The clip's tracked idexp landmarks (T, 68, 3) in `space` (x10 decimetres, no pose) and its id offset."""
    from methods.nerf_head.audio2motion.data import clip_expression, clip_geometry
    from methods.nerf_head.motion import idexp_lm68

    geom = clip_geometry(clip.stage("threedmm"), bfm)
    return idexp_lm68(space, geom.id_offset, clip_expression(space, geom)), geom.id_offset


def subject_conditions(idexp: np.ndarray, stats: "ConditionStats") -> np.ndarray:
    """Training / held-out frames' condition: normalised without LLE or clamp, as GeneFace++'s dataset."""
    from methods.nerf_head.motion import normalise

    return normalise(idexp, stats, clamp=False).reshape(len(idexp), -1).astype(np.float32)


def read_labels_at(clip: "PreparedClip", size: int, indices: np.ndarray | None = None) -> np.ndarray:
    """(T', size, size) uint8 segmentation labels (0 bg / 1 head / 2 torso), nearest-resized."""
    import cv2

    from data_recipes.segmentation import iter_labels

    seg = clip.stage("segmentation")
    want = None if indices is None else set(int(i) for i in indices)
    out = []
    for i, lab in enumerate(iter_labels(seg.path("labels.npz"))):
        if want is not None and i not in want:
            continue
        out.append(lab if lab.shape[0] == size else cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST))
    return np.stack(out) if out else np.zeros((0, size, size), np.uint8)


def plate_at(clip: "PreparedClip", transform: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the subject's background plate seen through one crop transform."""
    from data_recipes.segmentation import background_for

    return background_for(clip.stage("segmentation"), np.asarray(transform, np.float64), size)


def crops_at(clip: "PreparedClip", transforms: np.ndarray, size: int, indices: np.ndarray | None = None) -> np.ndarray:
    """(T', size, size, 3) uint8 head crops of the chosen frames (all when indices is None)."""
    from data_recipes.crops.head import crop_frame

    want = None if indices is None else set(int(i) for i in indices)
    out = []
    for i, frame in enumerate(clip.iter_frames()):
        if want is None or i in want:
            out.append(crop_frame(frame, transforms[i], size))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def crops_of(frames: np.ndarray, transforms: np.ndarray, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 crops of already decoded frames (T, H, W, 3)."""
    from data_recipes.crops.head import crop_frame

    return np.stack([crop_frame(f, a, size) for f, a in zip(frames, transforms)])


def feather_mask(size: int, width: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 inside, a linear ramp over `width` pixels at the crop's border,
    so the pasted square leaves no hard seam where the plate and the live background differ."""
    if width <= 0:
        return np.ones((size, size), np.float32)
    ramp = np.clip((np.arange(size) + 0.5) / width, 0, 1)
    ramp = np.minimum(ramp, ramp[::-1]).astype(np.float32)
    return np.minimum(ramp[:, None], ramp[None, :])
