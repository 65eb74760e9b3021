"""Wav2Lip face boxes and crops, with the official inference script's exact integer behaviour.

Facts (Rudrabha/Wav2Lip @ 5c90fa9, inference.py; see REFERENCE.md):
- the detector's first box per frame is clipped at 0 and truncated to int (x1, y1, x2, y2);
- pads (top, bottom, left, right), default (0, 10, 0, 0), are applied and clipped to the frame;
- unless `nosmooth`, boxes are replaced *in place* by the mean of a 5-frame forward window (the last
  windows are the final 5 boxes, which by then already hold smoothed values) and, because the array
  is integer, the mean is truncated;
- the crop frame[y1:y2, x1:x2] is resized to 96x96 with cv2 INTER_LINEAR (aspect not kept);
- the prediction (sigmoid * 255) is truncated to uint8, resized back to (x2 - x1, y2 - y1) with
  INTER_LINEAR and pasted hard into the frame.
Frames are BGR in the original; these functions are colour-order agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OFFICIAL_PADS = (0, 10, 0, 0)
OFFICIAL_SMOOTH_WINDOW = 5
CROP_SIZE = 96


@dataclass(frozen=True)
class Wav2LipCropConfig:
    """pads: (top, bottom, left, right) pixels added to the detector box; smooth: the 5-frame mean."""

    pads: tuple[int, int, int, int] = OFFICIAL_PADS
    smooth: bool = True
    window: int = OFFICIAL_SMOOTH_WINDOW


def detector_box_to_int(box_xyxy: np.ndarray) -> tuple[int, int, int, int]:
    """The face-detection API's conversion: clip negatives to 0, then int() each coordinate."""
    b = np.clip(np.asarray(box_xyxy, dtype=np.float64)[:4], 0, None)
    x1, y1, x2, y2 = (int(v) for v in b)
    return x1, y1, x2, y2


def pad_box(box_xyxy: tuple[int, int, int, int], pads: tuple[int, int, int, int],
            frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Apply (top, bottom, left, right) pads and clip to the frame, as the official face_detect does."""
    pady1, pady2, padx1, padx2 = pads
    h, w = frame_hw
    x1, y1, x2, y2 = box_xyxy
    return max(0, x1 - padx1), max(0, y1 - pady1), min(w, x2 + padx2), min(h, y2 + pady2)


def smooth_boxes(boxes_xyxy: np.ndarray, window: int = OFFICIAL_SMOOTH_WINDOW) -> np.ndarray:
    """Official get_smoothened_boxes on an int array: in place, forward window, truncating mean."""
    boxes = np.array(boxes_xyxy, dtype=np.int64, copy=True)
    n = len(boxes)
    for i in range(n):
        win = boxes[n - window:] if i + window > n else boxes[i:i + window]
        boxes[i] = np.mean(win, axis=0)  # assignment into int64 truncates, as in the original
    return boxes


def official_boxes(det_boxes_xyxy: np.ndarray, frame_hw: tuple[int, int],
                   config: Wav2LipCropConfig = Wav2LipCropConfig()) -> np.ndarray:
    """(T, 4) int boxes x1, y1, x2, y2 from (T, 4+) float detector boxes, padded and optionally smoothed.

    Rows of NaN (no face) must be filled by the caller first; see `fill_missing_boxes`.
    """
    det = np.asarray(det_boxes_xyxy, dtype=np.float64)
    if np.isnan(det[:, :4]).any():
        raise ValueError("official_boxes needs a box for every frame; fill gaps first")
    padded = np.array([pad_box(detector_box_to_int(b), config.pads, frame_hw) for b in det], dtype=np.int64)
    if config.smooth:
        # No length guard: with fewer boxes than the window the original's `boxes[len - T:]` is a
        # negative slice (the last len - T + len boxes, e.g. the last 2 of 3), and so is ours.
        padded = smooth_boxes(padded, config.window)
    return padded.reshape(-1, 4)


def fill_missing_boxes(det_boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN rows with the nearest detected box (for smoothing only); returns (filled, present mask).

    Frames whose box was filled are passed through unchanged by the Wav2Lip method (and counted); the
    fill only keeps the smoothing window of their neighbours defined.
    """
    det = np.asarray(det_boxes_xyxy, dtype=np.float64).copy()
    present = ~np.isnan(det[:, :4]).any(axis=1)
    if not present.any():
        return det, present
    idx = np.flatnonzero(present)
    for i in np.flatnonzero(~present):
        det[i] = det[idx[np.argmin(np.abs(idx - i))]]
    return det, present


def crop(frame: np.ndarray, box_xyxy: tuple[int, int, int, int], size: int = CROP_SIZE) -> np.ndarray:
    """frame[y1:y2, x1:x2] resized to size x size with cv2 INTER_LINEAR."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)


def paste_back(frame: np.ndarray, prediction: np.ndarray, box_xyxy: tuple[int, int, int, int]) -> np.ndarray:
    """Official paste: float prediction in [0, 255] truncated to uint8, resized to the box, hard-pasted.

    Returns a new frame; `frame` is not modified.
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    patch = prediction if prediction.dtype == np.uint8 else prediction.astype(np.uint8)
    out = frame.copy()
    out[y1:y2, x1:x2] = cv2.resize(patch, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return out


def wav2lip_crops_stage(ctx) -> None:
    """Recipe stage "wav2lip_crops": official boxes from the "faces" stage; crops are cut on use.

    Writes boxes (T, 4) int64 x1 y1 x2 y2 (padded, smoothed over the whole clip), has_face (T,) bool,
    and detector_boxes (T, 4) int64: the detector boxes clipped and truncated as the official
    detector API returns them, before pads and smoothing (gaps filled with the nearest box). The
    official script pads and smooths only the frames it uses (`full_frames[:len(mel_chunks)]`), so a
    faithful consumer re-derives its boxes from detector_boxes for the frames it uses; training crops
    (preprocess.py) use detector boxes without pads or smoothing. Crops themselves are not stored
    (96x96x3 per frame is cheaper to recompute than to cache).
    """
    from data_recipes.recipe import save_array, save_json

    faces = ctx.inputs["faces"]
    det = faces.array("boxes")
    filled, present = fill_missing_boxes(det)
    h, w = ctx.prepared.size
    if present.any():
        boxes = official_boxes(filled, (h, w), ctx.config)
        detector = np.array([detector_box_to_int(b) for b in filled], dtype=np.int64).reshape(-1, 4)
    else:
        boxes = np.zeros((len(det), 4), np.int64)
        detector = np.zeros((len(det), 4), np.int64)
    save_array(ctx.out_dir, "boxes", boxes)
    save_array(ctx.out_dir, "detector_boxes", detector)
    save_array(ctx.out_dir, "has_face", present)
    save_json(ctx.out_dir, "meta", {"pads": list(ctx.config.pads), "smooth": ctx.config.smooth,
                                    "window": ctx.config.window, "frames_without_face": int((~present).sum())})
