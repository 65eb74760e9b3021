"""The "real videos" (tracked) protocol: face crops as syncnet_python's run_pipeline.py makes them.

run_pipeline.py (joonson/syncnet_python @ 6efbb1c), which Wav2Lip's calculate_scores_real_videos.sh
runs before scoring:
1. `ffmpeg -qscale:v 2 -async 1 -r 25 video.avi` (MPEG-4 at q=2), then
   `ffmpeg -i video.avi -qscale:v 2 -threads 1 -f image2 %06d.jpg` and cv2.imread (BGR);
2. S3FD face detection (scale 0.25, confidence 0.9), IoU tracking, min_track 100 frames;
3. crop_video: per frame s = max(box h, box w) / 2 and the box centre (x, y), each median-filtered
   over 13 frames (scipy.signal.medfilt, zero-padded at the ends); the frame is padded by
   bsi = int(s * (1 + 2 * 0.4)) pixels of value 110 and cut to rows [y - s, y + s * 1.8) and columns
   [x - s * 1.4, x + s * 1.4) (int() of each bound, in padded coordinates), resized to 224x224
   (cv2 bilinear) and written with cv2.VideoWriter (XVID, 25 fps);
4. the crop video is then scored like any other (default-quality JPEG round trip, see `inputs`).

Deviations (documented in docs/metrics_sync.md): S3FD weights are absent, so face boxes come from
the suite's face backend (`data_recipes.faces.detect`, MediaPipe, detector-style boxes); clips are
treated as one shot with one track covering every frame (no scene cut detection, no min_track), so
sentence-length clips are scored; frames without a face take boxes interpolated from their
neighbours (held at the ends), as track_shot interpolates missed detections inside a track.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from metrics.sync import inputs, lse

CROP_SCALE = 0.40          # --crop_scale default
PAD_VALUE = 110            # np.pad constant_values in crop_video
MEDIAN_KERNEL = 13         # signal.medfilt kernel_size in crop_video
CROP_SIZE = 224            # cv2.VideoWriter frame size in crop_video
PIPELINE_QSCALE = 2        # -qscale:v of run_pipeline's video.avi and frame JPEGs


class NoFace(ValueError):
    """No face was found in any frame, so the tracked protocol has nothing to crop."""


@dataclass(frozen=True)
class CropTrack:
    """Median-filtered crop parameters per frame: half size `s`, centre `x`, `y` (pixels)."""

    s: np.ndarray
    x: np.ndarray
    y: np.ndarray


def fill_missing_boxes(boxes: np.ndarray) -> tuple[np.ndarray, int]:
    """(T, 4) boxes with NaN rows -> every row filled by linear interpolation (ends held), and the
    number of rows that were filled. Raises NoFace when no row has a box."""
    boxes = np.asarray(boxes, dtype=np.float64)
    ok = np.all(np.isfinite(boxes), axis=1)
    if not ok.any():
        raise NoFace(f"no face found in any of the {len(boxes)} frames")
    if ok.all():
        return boxes, 0
    t = np.arange(len(boxes))
    filled = np.stack([np.interp(t, t[ok], boxes[ok, k]) for k in range(4)], axis=1)
    return filled, int((~ok).sum())


def crop_track(boxes_xyxy: np.ndarray, kernel: int | None = None) -> CropTrack:
    """run_pipeline's smoothing of (T, 4) x1, y1, x2, y2 boxes (no NaN) into per-frame crop parameters.

    Tracks shorter than the kernel (13) use the largest odd kernel <= T (see below)."""
    from scipy import signal

    b = np.asarray(boxes_xyxy, dtype=np.float64)
    k = MEDIAN_KERNEL if kernel is None else kernel
    if len(b) < k:
        # medfilt pads with zeros: with fewer real values than zeros in the window the median is 0
        # (an empty crop). The original never sees such tracks (min_track 100); short clips use the
        # largest odd kernel that fits, whose edge windows still hold more real values than zeros.
        k = max(1, len(b) - (1 - len(b) % 2))
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    y = (b[:, 1] + b[:, 3]) / 2
    x = (b[:, 0] + b[:, 2]) / 2
    return CropTrack(signal.medfilt(s, kernel_size=k), signal.medfilt(x, kernel_size=k),
                     signal.medfilt(y, kernel_size=k))


def crop_frame(image: np.ndarray, s: float, x: float, y: float, crop_scale: float = CROP_SCALE,
               pad_value: int = PAD_VALUE, size: int = CROP_SIZE) -> np.ndarray:
    """One crop as crop_video cuts it: (H, W, 3) uint8 (any channel order) -> (size, size, 3) uint8."""
    import cv2

    bsi = int(s * (1 + 2 * crop_scale))
    padded = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(pad_value, pad_value))
    my, mx = y + bsi, x + bsi
    face = padded[int(my - s):int(my + s * (1 + 2 * crop_scale)),
                  int(mx - s * (1 + crop_scale)):int(mx + s * (1 + crop_scale))]
    if face.size == 0:
        raise NoFace(f"empty crop (s={s:.1f}, centre {x:.1f}, {y:.1f}) in a {image.shape[1]}x{image.shape[0]} frame")
    return cv2.resize(face, (size, size))


def _pipeline_frames(frames_rgb: Iterable[np.ndarray], num_frames: int, folder: Path) -> list[Path]:
    """run_pipeline's step 1: MPEG-4 avi at q=2, then JPEGs at q=2 (returns the JPEG paths)."""
    avi = folder / "video.avi"
    it = iter(frames_rgb)
    first = next(it)
    inputs._run_ffmpeg_with_frames(itertools.chain([first], it), first.shape[:2],
                                   ["-qscale:v", str(PIPELINE_QSCALE), "-r", str(lse.FPS), str(avi)])
    paths = inputs.write_video_jpegs(avi, folder / "pyframes", ["-qscale:v", str(PIPELINE_QSCALE)])
    if len(paths) != num_frames:
        raise inputs.FFmpegError(f"q=2 extraction gave {len(paths)} frames for {num_frames}")
    return paths


def tracked_crops(frames_rgb: Iterable[np.ndarray], boxes_xyxy: np.ndarray, folder: Path,
                  emulate_codecs: bool = True) -> tuple[inputs.JpegFrames, dict[str, object]]:
    """Face-crop the frames as run_pipeline.py does and prepare them for scoring.

    frames_rgb: T uint8 RGB frames (H, W, 3), an array or any iterable (consumed once, as a stream);
    boxes_xyxy: (T, 4) face boxes (NaN where none).
    emulate_codecs: also apply run_pipeline's intermediate codecs (q=2 MPEG-4 and JPEG before
    cropping, XVID for the crop video); without it only the final default-quality JPEG round trip
    (which syncnet_python's evaluate() itself does) is applied.
    Returns the scoring frame source and info for the score's extra.
    """
    folder = Path(folder)
    boxes, filled = fill_missing_boxes(boxes_xyxy)
    track = crop_track(boxes)
    info: dict[str, object] = {"frames_without_face": filled, "emulate_codecs": emulate_codecs,
                               "mean_crop": [float(track.x.mean()), float(track.y.mean()), float(track.s.mean())]}
    if emulate_codecs:
        paths = _crop_sources(_pipeline_frames(frames_rgb, len(boxes), folder), track, folder, True)
    else:
        crops = [crop_frame(f, track.s[i], track.x[i], track.y[i]) for i, f in enumerate(frames_rgb)]
        if len(crops) != len(boxes):
            raise ValueError(f"{len(crops)} frames for {len(boxes)} boxes")
        paths = inputs.write_jpegs(crops, folder / "crop_jpg")
    return inputs.JpegFrames(paths), info


def _crop_sources(sources: list[Path], track: CropTrack, folder: Path, emulate_codecs: bool) -> list[Path]:
    """Crop each BGR source image (JPEG / PNG file) as crop_video does; returns the scoring JPEG paths.

    emulate_codecs: through run_pipeline's XVID crop video, else straight to default-quality JPEGs."""
    import cv2

    if emulate_codecs:
        avi = folder / "crop.avi"
        writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"XVID"), lse.FPS, (CROP_SIZE, CROP_SIZE))
        if not writer.isOpened():
            raise RuntimeError("cv2.VideoWriter cannot write XVID here; set emulate_codecs=False")
        try:
            for i, p in enumerate(sources):
                writer.write(crop_frame(inputs.read_bgr(p), track.s[i], track.x[i], track.y[i]))
        finally:
            writer.release()
        paths = inputs.write_video_jpegs(avi, folder / "crop_jpg")
    else:
        crops = [crop_frame(inputs.read_bgr(p), track.s[i], track.x[i], track.y[i])[..., ::-1]
                 for i, p in enumerate(sources)]
        paths = inputs.write_jpegs(crops, folder / "crop_jpg")
    if len(paths) != len(sources):
        raise inputs.FFmpegError(f"crop video gave {len(paths)} frames for {len(sources)}")
    return paths


def tracked_crops_from_file(video: Path, boxes_xyxy: np.ndarray, folder: Path,
                            emulate_codecs: bool = True) -> tuple[inputs.JpegFrames, dict[str, object]]:
    """`tracked_crops` for a video file, as run_pipeline reads it: `ffmpeg -i <video> -qscale:v 2 -async 1
    -r 25 video.avi`, JPEGs at q=2, crops, XVID, default-quality JPEGs (emulate_codecs), or the file's
    frames decoded losslessly (PNG) and cropped straight to default-quality JPEGs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    boxes, filled = fill_missing_boxes(boxes_xyxy)
    track = crop_track(boxes)
    info: dict[str, object] = {"frames_without_face": filled, "emulate_codecs": emulate_codecs,
                               "mean_crop": [float(track.x.mean()), float(track.y.mean()), float(track.s.mean())]}
    if emulate_codecs:
        avi = folder / "video.avi"
        inputs.run_ffmpeg(["-y", "-i", str(video), "-qscale:v", str(PIPELINE_QSCALE), "-async", "1",
                           "-r", str(lse.FPS), "-an", str(avi)])
        sources = inputs.write_video_jpegs(avi, folder / "pyframes", ["-qscale:v", str(PIPELINE_QSCALE)])
    else:
        (folder / "png").mkdir(parents=True, exist_ok=True)
        inputs.run_ffmpeg(["-y", "-i", str(video), "-threads", "1", "-f", "image2",
                           str(folder / "png" / "%06d.png")])
        sources = sorted((folder / "png").glob("*.png"))
    if len(sources) != len(boxes):
        raise inputs.FFmpegError(f"{video}: {len(sources)} frames for {len(boxes)} face boxes")
    return inputs.JpegFrames(_crop_sources(sources, track, folder, emulate_codecs)), info


def crops_in_memory(frames_rgb: Iterable[np.ndarray], boxes_xyxy: np.ndarray, emulate_codecs: bool = True) -> np.ndarray:
    """(T, 224, 224, 3) uint8 BGR crops after the whole tracked pipeline (for training data)."""
    with tempfile.TemporaryDirectory(prefix="talkbench-crops-") as tmp:
        src, _ = tracked_crops(frames_rgb, boxes_xyxy, Path(tmp), emulate_codecs)
        return src(0, len(src))
