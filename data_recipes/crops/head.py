"""Stable 512x512 head crops for the NeRF pipeline: one invertible similarity transform per frame.

A transform is a (2, 3) float matrix A = [[s, 0, tx], [0, s, ty]] mapping frame pixel coordinates
to crop pixel coordinates (x_crop = s * x + tx). Crops are square; the face is centred
horizontally, its box centre sits at `face_y` (0.42) of the crop height so that hair fits above and
neck and shoulders below, and the crop side is `scale` (2.2) x the face box width (ear to ear, which
does not change as the mouth opens).

Stability. GeneFace++ trains each person on one video pre-cropped with a single fixed 512x512 box
(its data pipeline takes the crop as given), and a fixed crop is the best choice whenever the head
moves little: the NeRF then learns head motion from the pose, not from a moving camera. A crop that
follows the head frame by frame would re-introduce landmark jitter as whole-image shake. So:
- mode "fixed": the median box of the clip for every frame;
- mode "smooth": a per-frame box, centre and side smoothed by a centred moving average over
  `smooth_seconds` (jitter averages out, slow head motion is followed);
- mode "auto" (default): "fixed" when the per-frame box centres stay within `fixed_motion` (8 %) of
  the crop side from their median and the side varies by less than that too; "smooth" otherwise.
The box is clamped to stay inside the frame when the frame is large enough (a 512x512 input that is
already a head crop maps to itself), and otherwise is the largest square that fits around the face;
what still falls outside the frame is filled with black and reported as `outside_fraction`.
Frames without a face hold the nearest frame's transform (reported in meta.json).

Frame of reference. A person-specific renderer is trained and driven in ONE frame of reference, so
the mode and the crop are decided once per subject by the subject stage "head_frame", from the face
boxes of the subject's training clips (`plan_frame`), and every clip of the subject (train, val,
test) is cropped in it (`plan_crops(..., frame=...)`): "fixed" puts the subject's one median box on
every frame of every clip; "smooth" follows each clip's own smoothed box centre with the subject's
one crop side (one scale for the subject).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

import numpy as np


@dataclass(frozen=True)
class HeadCropConfig:
    """size: crop side in pixels; scale: crop side / face box width; face_y: vertical position of the
    face box centre in the crop (fraction of the side); mode: fixed | smooth | auto (see module doc);
    fixed_motion: auto picks "fixed" when centres move less than this fraction of the side;
    smooth_seconds: moving-average length of "smooth"; fps: frame rate of the clip;
    clamp: keep the crop inside the frame where possible."""

    size: int = 512
    scale: float = 2.2
    face_y: float = 0.42
    mode: Literal["auto", "fixed", "smooth"] = "auto"
    fixed_motion: float = 0.08
    smooth_seconds: float = 1.0
    fps: float = 25.0
    clamp: bool = True


# ------------------------------------------------------------------------------- transform algebra


def transform_from_box(x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """(2, 3) matrix mapping the square [x0, x0 + side) x [y0, y0 + side) onto [0, size)^2."""
    s = size / side
    return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 2, 3) similarity (crop -> frame coordinates)."""
    a = np.asarray(transform, dtype=np.float64)
    m = a[..., :2, :2]
    inv = np.linalg.inv(m)
    t = -np.einsum("...ij,...j->...i", inv, a[..., :, 2])
    return np.concatenate([inv, t[..., None]], axis=-1)


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., N, 2+) points (x, y first) with (2, 3) or per-frame (T, 2, 3) transforms."""
    a = np.asarray(transform, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)[..., :2]
    out = np.einsum("...ij,...nj->...ni", a[..., :, :2], p) + a[..., None, :, 2]
    return out


# ----------------------------------------------------------------------------------- box planning


def desired_boxes(face_boxes: np.ndarray, config: HeadCropConfig) -> np.ndarray:
    """(T, 3) per-frame crop (centre x, centre y, side) from (T, 4) face boxes; NaN rows stay NaN."""
    b = np.asarray(face_boxes, dtype=np.float64)
    width = b[:, 2] - b[:, 0]
    side = config.scale * width
    cx = 0.5 * (b[:, 0] + b[:, 2])
    cy = 0.5 * (b[:, 1] + b[:, 3]) + (0.5 - config.face_y) * side
    return np.stack([cx, cy, side], axis=1)


def _fill_missing(values: np.ndarray) -> np.ndarray:
    """Hold the nearest valid row for NaN rows."""
    v = values.copy()
    ok = ~np.isnan(v).any(axis=1)
    idx = np.flatnonzero(ok)
    for i in np.flatnonzero(~ok):
        v[i] = v[idx[np.argmin(np.abs(idx - i))]]
    return v


def _moving_average(v: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge replication (no shrinkage at the ends)."""
    if window <= 1 or len(v) < 2:
        return v.copy()
    half = window // 2
    padded = np.concatenate([np.repeat(v[:1], half, axis=0), v, np.repeat(v[-1:], half, axis=0)])
    csum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(padded, axis=0)])
    return (csum[2 * half + 1:] - csum[:-(2 * half + 1)]) / (2 * half + 1)


def _clamp(box: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Shrink to fit the frame's shorter side, then shift inside the frame (rows: cx, cy, side)."""
    h, w = frame_hw
    out = box.copy()
    out[:, 2] = np.minimum(out[:, 2], min(h, w))
    half = out[:, 2] / 2
    out[:, 0] = np.clip(out[:, 0], half, w - half)
    out[:, 1] = np.clip(out[:, 1], half, h - half)
    return out


def plan_frame(face_boxes: np.ndarray, frame_hw: tuple[int, int], config: HeadCropConfig = HeadCropConfig()
               ) -> dict:
    """A subject's frame of reference from the (T, 4) face boxes of its clips, concatenated:
    {"mode": "fixed" | "smooth", "box": [cx, cy, side] (the median crop box), "motion_fraction",
    "side_variation", "frames", "frames_without_face"}. No face at all: the largest centred square."""
    boxes = desired_boxes(face_boxes, config)
    present = ~np.isnan(boxes).any(axis=1)
    h, w = frame_hw
    if not present.any():
        return {"mode": "fixed" if config.mode != "smooth" else "smooth", "box": [w / 2, h / 2, float(min(h, w))],
                "motion_fraction": 0.0, "side_variation": 0.0, "frames": int(len(boxes)),
                "frames_without_face": int(len(boxes))}
    med = np.median(boxes[present], axis=0)
    motion = float(np.max(np.abs(boxes[present, :2] - med[:2])) / med[2])
    side_var = float(np.max(np.abs(boxes[present, 2] - med[2])) / med[2])
    mode = config.mode
    if mode == "auto":
        mode = "fixed" if (motion <= config.fixed_motion and side_var <= config.fixed_motion) else "smooth"
    if mode not in ("fixed", "smooth"):
        raise ValueError(f"unknown head-crop mode {config.mode!r} (auto | fixed | smooth)")
    return {"mode": mode, "box": [float(v) for v in med], "motion_fraction": motion, "side_variation": side_var,
            "frames": int(len(boxes)), "frames_without_face": int((~present).sum())}


def plan_crops(face_boxes: np.ndarray, frame_hw: tuple[int, int], config: HeadCropConfig = HeadCropConfig(),
               frame: dict | None = None) -> tuple[np.ndarray, dict]:
    """(T, 2, 3) float32 transforms for all T frames, and a report for meta.json.

    face_boxes: (T, 4) x1, y1, x2, y2 detector-style boxes (NaN where no face).
    frame: a subject's frame of reference (`plan_frame`); when given, its mode and box (fixed) or
    crop side (smooth) are used instead of this clip's own.
    """
    boxes = desired_boxes(face_boxes, config)
    present = ~np.isnan(boxes).any(axis=1)
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 2, 3), np.float32), {"mode": "empty", "size": config.size}
    if frame is not None:
        return _plan_in_frame(boxes, present, frame_hw, config, frame)
    if not present.any():  # nothing to centre on: the largest centred square, reported as such
        h, w = frame_hw
        boxes = np.repeat([[w / 2, h / 2, float(min(h, w))]], n, axis=0)
        present = np.ones(n, bool)
        no_face = True
    else:
        no_face = False
    filled = _fill_missing(boxes)
    med = np.median(filled[present], axis=0)
    side = med[2]
    motion = float(np.max(np.abs(filled[present, :2] - med[:2])) / side)
    side_var = float(np.max(np.abs(filled[present, 2] - side)) / side)
    mode = config.mode
    if mode == "auto":
        mode = "fixed" if (motion <= config.fixed_motion and side_var <= config.fixed_motion) else "smooth"
    if mode == "fixed":
        planned = np.repeat(med[None], n, axis=0)
    elif mode == "smooth":
        window = max(1, int(round(config.smooth_seconds * config.fps)) | 1)
        planned = _moving_average(filled, window)
    else:
        raise ValueError(f"unknown head-crop mode {config.mode!r} (auto | fixed | smooth)")
    return _finish(planned, frame_hw, config, {
        "mode": mode, "requested_mode": config.mode, "median_side_px": float(side), "motion_fraction": motion,
        "side_variation": side_var, "frames_without_face": n if no_face else int((~present).sum())})


def _plan_in_frame(boxes: np.ndarray, present: np.ndarray, frame_hw: tuple[int, int], config: HeadCropConfig,
                   frame: dict) -> tuple[np.ndarray, dict]:
    n = len(boxes)
    ref = np.asarray(frame["box"], np.float64)
    if frame["mode"] == "fixed" or not present.any():
        planned = np.repeat(ref[None], n, axis=0)
    else:
        window = max(1, int(round(config.smooth_seconds * config.fps)) | 1)
        planned = _moving_average(_fill_missing(boxes), window)
        planned[:, 2] = ref[2]
    return _finish(planned, frame_hw, config, {
        "mode": str(frame["mode"]), "requested_mode": config.mode, "median_side_px": float(ref[2]),
        "motion_fraction": float(frame.get("motion_fraction", 0.0)),
        "side_variation": float(frame.get("side_variation", 0.0)),
        "frames_without_face": int((~present).sum()), "frame_of_reference": "subject"})


def _finish(planned: np.ndarray, frame_hw: tuple[int, int], config: HeadCropConfig, report: dict
            ) -> tuple[np.ndarray, dict]:
    if config.clamp:
        planned = _clamp(planned, frame_hw)
    x0 = planned[:, 0] - planned[:, 2] / 2
    y0 = planned[:, 1] - planned[:, 2] / 2
    transforms = np.stack([transform_from_box(a, b, s, config.size) for a, b, s in zip(x0, y0, planned[:, 2])])
    h, w = frame_hw
    inside_w = np.clip(np.minimum(x0 + planned[:, 2], w) - np.maximum(x0, 0), 0, None)
    inside_h = np.clip(np.minimum(y0 + planned[:, 2], h) - np.maximum(y0, 0), 0, None)
    outside = 1.0 - inside_w * inside_h / planned[:, 2] ** 2
    report = {**report, "size": config.size, "side_px": [float(planned[:, 2].min()), float(planned[:, 2].max())],
              "outside_fraction": float(outside.max())}
    return transforms.astype(np.float32), report


# ------------------------------------------------------------------------------ cropping / pasting


def crop_frame(frame: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """One (size, size, 3) crop. Down-scaling is pre-filtered (Gaussian, sigma 0.4 / s) against aliasing."""
    import cv2

    a = np.asarray(transform, dtype=np.float64)
    s = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    src = frame
    if s < 0.8:
        sigma = 0.4 / s
        src = cv2.GaussianBlur(frame, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return cv2.warpAffine(np.ascontiguousarray(src), a, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def iter_crops(frames: Iterable[np.ndarray], transforms: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for frame, a in zip(frames, transforms):
        yield crop_frame(frame, a, size)


def crop_frames(frames: Iterable[np.ndarray], transforms: np.ndarray, size: int = 512) -> np.ndarray:
    """(T, size, size, 3) uint8 crops of uint8 RGB frames (array or iterable) with (T, 2, 3) transforms."""
    crops = list(iter_crops(frames, transforms, size))
    if len(crops) != len(transforms):
        raise ValueError(f"{len(crops)} frames for {len(transforms)} transforms")
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def paste_frame(frame: np.ndarray, crop: np.ndarray, transform: np.ndarray, mask: np.ndarray | None = None
                ) -> np.ndarray:
    """The frame with `crop` warped back into its place (new array).

    mask: optional (size, size) float weights in [0, 1] in crop space (e.g. the head label), pasted
    with soft edges; without it the whole crop square is pasted (edge pixels blended by coverage).
    """
    import cv2

    h, w = frame.shape[:2]
    a = np.asarray(transform, dtype=np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # `a` maps frame -> crop, i.e. dst -> src here
    back = cv2.warpAffine(np.ascontiguousarray(crop), a, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    weight = np.ones(crop.shape[:2], np.float32) if mask is None else np.asarray(mask, np.float32)
    wback = cv2.warpAffine(weight, a, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    wback = np.clip(wback, 0.0, 1.0)[..., None]
    out = frame.astype(np.float32) * (1.0 - wback) + back.astype(np.float32) * wback
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def paste_back(frames: Iterable[np.ndarray], crops: Iterable[np.ndarray], transforms: np.ndarray,
               masks: Iterable[np.ndarray] | None = None) -> np.ndarray:
    """(T, H, W, 3) frames with each crop pasted back through the inverse of its transform."""
    masks_it = iter(masks) if masks is not None else None
    out = [paste_frame(f, c, a, None if masks_it is None else next(masks_it))
           for f, c, a in zip(frames, crops, transforms)]
    return np.stack(out)


# ------------------------------------------------------------------------------------------ stage


def head_frame_stage(ctx) -> None:
    """Subject stage "head_frame": meta.json = `plan_frame` of the subject's source clips' face boxes
    (plus the frame size and the clips used)."""
    from data_recipes.recipe import save_json

    sizes = {tuple(c.size) for c in ctx.clips}
    if len(sizes) != 1:
        raise ValueError(f"subject {ctx.subject!r}: its clips have different frame sizes {sorted(sizes)}; "
                         "one frame of reference needs one camera")
    boxes = np.concatenate([f.array("boxes") for f in ctx.clip_inputs["faces"]], axis=0)
    frame = plan_frame(boxes, ctx.prepared.size, ctx.config)
    save_json(ctx.out_dir, "meta", {**frame, "subject": ctx.subject, "frame_hw": list(ctx.prepared.size),
                                    "clips": [c.id for c in ctx.clips]})


def head_crops_stage(ctx) -> None:
    """Recipe stage "head_crops": transforms (T, 2, 3) float32 (frame -> crop) and meta.json, in the
    subject's frame of reference (the "head_frame" stage).

    Crops themselves are not stored; cut them with `crop_frames(prepared.iter_frames(), transforms,
    size)` (or `iter_crops` to stream).
    """
    from data_recipes.recipe import save_array, save_json

    faces = ctx.inputs["faces"]
    boxes = faces.array("boxes")
    frame = ctx.inputs["head_frame"].json()
    if tuple(frame["frame_hw"]) != tuple(ctx.prepared.size):
        raise ValueError(f"clip {ctx.clip.id!r} is {ctx.prepared.size}, its subject's frame of reference "
                         f"was made for {tuple(frame['frame_hw'])}")
    transforms, report = plan_crops(boxes, ctx.prepared.size, ctx.config, frame=frame)
    save_array(ctx.out_dir, "transforms", transforms)
    save_json(ctx.out_dir, "meta", {**report, "num_frames": int(len(transforms)),
                                    "scale": ctx.config.scale, "face_y": ctx.config.face_y,
                                    "matrix": "x_crop = A[:, :2] @ (x, y) + A[:, 2]"})
