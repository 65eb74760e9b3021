"""Debug overlays (`bench prepare --debug-dir`): what the preparation stages saw, drawn on frames.

`write_overlays(prepared, stages, out_dir)` writes, for a few evenly spaced frames, one PNG each:
left, the frame with the 478-point mesh (small grey dots), the 68 points coloured by group (jaw
white, brows yellow, nose cyan, eyes green, mouth magenta), the face box (green; dashed yellow
the smoothed box), the Wav2Lip crop box with its pads (red) and the head-crop square (blue);
middle, the 512x512 head crop with the segmentation tinted (head red, neck+torso blue); right, the
crop's background plate (the subject's). Panels of stages that were not asked for are left out. A
caption names the subject-stage entries the clip reads (frame of reference, plate, 3DMM identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

PANEL = 384
GROUP_COLOURS = (  # RGB per 68-point group
    (range(0, 17), (255, 255, 255)), (range(17, 27), (255, 220, 0)), (range(27, 36), (0, 220, 255)),
    (range(36, 48), (0, 255, 0)), (range(48, 68), (255, 0, 255)),
)


def overlay_frame(frame: np.ndarray, index: int, outputs: dict) -> np.ndarray:
    """The annotated frame (uint8 RGB, same size as `frame`)."""
    import cv2

    img = frame.copy()
    h, w = img.shape[:2]
    thick = max(1, int(round(max(h, w) / 400)))
    if "head_crops" in outputs:
        from data_recipes.crops.head import apply, invert

        a = outputs["head_crops"].array("transforms")[index]
        size = int(outputs["head_crops"].json()["size"])
        corners = apply(invert(a), np.array([[0, 0], [size, 0], [size, size], [0, size]], float))
        cv2.polylines(img, [np.round(corners).astype(np.int32)], True, (60, 120, 255), thick, cv2.LINE_AA)
    if "wav2lip_crops" in outputs:
        x1, y1, x2, y2 = (int(v) for v in outputs["wav2lip_crops"].array("boxes")[index])
        cv2.rectangle(img, (x1, y1), (x2, y2), (255, 40, 40), thick, cv2.LINE_AA)
    if "faces" in outputs:
        faces = outputs["faces"]
        box = faces.array("boxes")[index]
        if np.isfinite(box).all():
            b = np.round(box).astype(int)
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), (0, 255, 0), thick, cv2.LINE_AA)
        if faces.path("boxes_smooth.npy").exists():
            sb = faces.array("boxes_smooth")[index]
            if np.isfinite(sb).all():
                _dashed_rect(img, np.round(sb).astype(int), (255, 255, 0), thick)
        lm478 = faces.array("landmarks478", mmap=True)
        if lm478.shape[1]:
            for x, y in np.asarray(lm478[index, :, :2]):
                if np.isfinite(x):
                    cv2.circle(img, (int(round(x)), int(round(y))), max(1, thick // 2), (170, 170, 170), -1)
        lm68 = faces.array("landmarks68", mmap=True)[index]
        for idx, colour in GROUP_COLOURS:
            for i in idx:
                x, y = lm68[i]
                if np.isfinite(x):
                    cv2.circle(img, (int(round(x)), int(round(y))), thick + 1, colour, -1, cv2.LINE_AA)
        present, interp = faces.array("present")[index], faces.array("interpolated")[index]
        status = "no face" if not present else ("interpolated" if interp else "detected")
        cv2.putText(img, f"#{index} {status}", (4, 14 + 4 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return img


def _dashed_rect(img: np.ndarray, b: np.ndarray, colour, thick: int, dash: int = 6) -> None:
    import cv2

    x1, y1, x2, y2 = (int(v) for v in b)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for s in range(0, length, 2 * dash):
            e = min(s + dash, length)
            p = (ax + (bx - ax) * s // max(length, 1), ay + (by - ay) * s // max(length, 1))
            q = (ax + (bx - ax) * e // max(length, 1), ay + (by - ay) * e // max(length, 1))
            cv2.line(img, p, q, colour, thick)


def tint_labels(crop: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Crop with head tinted red and neck+torso blue, background darkened, label edges outlined."""
    import cv2

    out = crop.astype(np.float32)
    tint = {1: np.array([255, 40, 40], np.float32), 2: np.array([40, 90, 255], np.float32)}
    for lab, colour in tint.items():
        m = labels == lab
        out[m] = 0.55 * out[m] + 0.45 * colour
    out[labels == 0] *= 0.45
    out = np.clip(out, 0, 255).astype(np.uint8)
    edges = cv2.Canny((labels * 100).astype(np.uint8), 50, 150) > 0
    out[edges] = (255, 255, 0)
    return out


def write_overlays(prepared, stages: Sequence[str], out_dir: Path, n_frames: int = 4) -> list[Path]:
    """PNG overlays for `n_frames` evenly spaced frames of a PreparedClip; returns the written paths.

    Stages named in `stages` (among faces, wav2lip_crops, head_crops, segmentation) are computed if
    not yet cached. Files: <out_dir>/<clip id with / replaced by __>_f<index>.png.
    """
    import cv2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in ("faces", "wav2lip_crops", "head_crops", "segmentation") if s in stages]
    outputs = {s: prepared.stage(s) for s in wanted}
    n = prepared.num_frames
    if n == 0:
        return []
    indices = sorted(set(np.linspace(0, n - 1, max(1, n_frames)).round().astype(int).tolist()))
    labels_by_index = {}
    if "segmentation" in outputs and outputs["segmentation"].path("labels.npz").exists():
        with np.load(outputs["segmentation"].path("labels.npz"), allow_pickle=False) as z:
            for i in indices:
                if f"f{i:06d}" in z.files:
                    labels_by_index[i] = z[f"f{i:06d}"]
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in prepared.id.replace("/", "__"))
    written = []
    for i, frame in zip(indices, _frames_at(prepared, indices)):
        panels = [_fit(overlay_frame(frame, i, outputs))]
        if "head_crops" in outputs:
            from data_recipes.crops.head import crop_frame

            a = outputs["head_crops"].array("transforms")[i]
            size = int(outputs["head_crops"].json()["size"])
            crop = crop_frame(frame, a, size)
            if i in labels_by_index:
                crop = tint_labels(crop, labels_by_index[i])
                from data_recipes.segmentation import background_for

                panels.append(_fit(crop))
                panels.append(_fit(background_for(outputs["segmentation"], a, size)))
            else:
                panels.append(_fit(crop))
        row = _caption(np.concatenate(panels, axis=1), _subject_caption(prepared, stages))
        path = out_dir / f"{safe_id}_f{i:05d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def _subject_caption(prepared, stages: Sequence[str]) -> str:
    """The subject-stage entries this clip reads (short cache keys): clips of one subject show the
    same frame of reference, plate and 3DMM identity, so equal keys on train/val/test overlays say
    they share them."""
    from data_recipes.recipe import stage_order

    needed = set(stage_order(list(stages)))
    shown = [(name, label) for name, label in (("head_frame", "frame"), ("plate", "plate"),
                                               ("threedmm_identity", "identity")) if name in needed]
    if not shown:
        return ""
    keys = " ".join(f"{label} {prepared.recipe.key(prepared.clip, name)[:8]}" for name, label in shown)
    return f"subject {prepared.clip.subject}: {keys}"


def _caption(row: np.ndarray, text: str) -> np.ndarray:
    """`row` with a 20-pixel caption strip below it (unchanged when there is no text)."""
    import cv2

    if not text:
        return row
    strip = np.zeros((20, row.shape[1], 3), np.uint8)
    cv2.putText(strip, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([row, strip], axis=0)


def _frames_at(prepared, indices: list[int]):
    wanted = set(indices)
    for i, frame in enumerate(prepared.iter_frames(0, max(indices) + 1)):
        if i in wanted:
            yield frame


def _fit(img: np.ndarray) -> np.ndarray:
    """Resize to PANEL px high, padded to PANEL wide at least (keeps aspect)."""
    import cv2

    h, w = img.shape[:2]
    s = PANEL / h
    out = cv2.resize(img, (max(1, int(round(w * s))), PANEL), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if out.shape[1] < PANEL:
        out = np.pad(out, ((0, 0), (0, PANEL - out.shape[1]), (0, 0)))
    return out
