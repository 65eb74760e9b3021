"""One video + its audio -> sync scores with a given SyncNetModel, under either protocol.

Shared by the published LSE metric (official weights) and the suite-trained scorer (its own weights),
so both see exactly the same inputs.

protocol "lrs" (Wav2Lip's calculate_scores_LRS.py; the videos are face crops already): the whole
frame goes through the JPEG round trip and is resized to 224x224.
protocol "tracked" (run_pipeline.py + calculate_scores_real_videos.py): the face is detected and
tracked, cropped as run_pipeline crops it, then scored the same way (see `metrics.sync.tracked`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from metrics.sync import inputs, lse

if TYPE_CHECKING:
    from bench.progress import Progress
    from data_recipes.faces import FaceTrack
    from metrics.sync.model import SyncNetModel

Protocol = Literal["lrs", "tracked"]
MIN_WINDOWS = 1   # one 5-frame window needs 6 usable frames (the official loop drops the last window)


Region = tuple[int, int, int, int]
"""(row0, row1, col0, col1) of the 224x224 network input, cut out and resized back to 224x224."""


class RegionFrames:
    """A frame source showing only `region` of another one's frames, enlarged to the full size."""

    def __init__(self, source: Callable[[int, int], np.ndarray], region: Region):
        self.source, self.region = source, region

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __call__(self, start: int, stop: int) -> np.ndarray:
        return cut_region(self.source(start, stop), self.region)


def cut_region(frames: np.ndarray, region: Region) -> np.ndarray:
    """(n, S, S, 3) uint8 -> the same size, showing rows r0:r1 and columns c0:c1 (cv2 bilinear)."""
    import cv2

    r0, r1, c0, c1 = region
    size = frames.shape[1]
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        out[i] = cv2.resize(np.ascontiguousarray(f[r0:r1, c0:c1]), (size, size))
    return out


class TooShort(ValueError):
    """The clip has fewer usable frames than one scored window needs."""


@dataclass(frozen=True)
class FeedOptions:
    """How frames reach the network. batch_size: windows per forward pass (never changes numbers);
    emulate_codecs: tracked protocol only, apply run_pipeline's intermediate codecs too."""

    batch_size: int = lse.BATCH_SIZE
    emulate_codecs: bool = True
    device: str = "cpu"
    min_windows: int = MIN_WINDOWS


def check_length(num_frames: int, num_samples: int, min_windows: int = MIN_WINDOWS) -> int:
    """Number of windows, or TooShort with the lengths in the message."""
    windows = lse.num_windows(num_frames, num_samples)
    if windows < min_windows:
        usable = lse.usable_length(num_frames, num_samples)
        need = min_windows + lse.VIDEO_WINDOW
        raise TooShort(f"{usable} usable frames ({num_frames} frames, {num_samples} audio samples); "
                       f"sync scoring needs at least {need} (windows = usable - {lse.VIDEO_WINDOW})")
    return windows


def default_detect(frames_rgb: np.ndarray, progress: "Progress | None" = None) -> "FaceTrack":
    from data_recipes.faces import detect

    return detect(frames_rgb, None, progress)


def feed(frames_rgb: np.ndarray, protocol: Protocol, folder: Path, options: FeedOptions,
         detect: Callable[..., "FaceTrack"] | None = None,
         progress: "Progress | None" = None) -> tuple[inputs.JpegFrames, dict[str, Any]]:
    """The frame source the network reads (224x224 BGR after the official file round trips)."""
    if protocol == "lrs":
        return inputs.JpegFrames(inputs.write_jpegs(frames_rgb, folder / "jpg")), {}
    if protocol == "tracked":
        from metrics.sync import tracked

        track = (detect or default_detect)(frames_rgb, progress)
        return tracked.tracked_crops(frames_rgb, track.boxes, folder, options.emulate_codecs)
    raise ValueError(f"unknown sync protocol {protocol!r} (lrs | tracked)")


def default_detect_file(video: Path, progress: "Progress | None" = None, config: Any = None) -> "FaceTrack":
    """Face track of the file's frames as decoded from the file (so a delivered mp4 is tracked on
    what it holds, not on the lossless frames it was made from), with the faces-stage `config`."""
    from data_recipes.faces import detect
    from data_recipes.media import iter_video_frames

    # decoded as a stream: memory does not grow with the file's length or resolution
    return detect(iter_video_frames(Path(video)), config, progress)


def score_file(model: "SyncNetModel", video: Path, protocol: Protocol, options: FeedOptions = FeedOptions(),
               audio: Path | None = None, detect: Callable[[], "FaceTrack"] | None = None,
               progress: "Progress | None" = None) -> tuple[lse.SyncResult, dict[str, Any]]:
    """Score a video file the way syncnet_python does (see `inputs.official_inputs`).

    audio: a separate audio/video file whose audio is scored (default: the video's own track).
    protocol "lrs": the file's JPEGs, resized to 224; "tracked": run_pipeline's crops of the file,
    with face boxes from `detect()` (default: the suite's face backend on the decoded file).
    Raises TooShort, tracked.NoFace, inputs.FFmpegError.
    """
    with tempfile.TemporaryDirectory(prefix="talkbench-sync-") as tmp:
        got = inputs.official_inputs(Path(video), Path(tmp), audio)
        windows = check_length(len(got.jpegs), len(got.pcm), options.min_windows)
        info: dict[str, Any] = {"protocol": protocol, "file_frames": len(got.jpegs),
                                "file_audio_samples": int(len(got.pcm))}
        if protocol == "lrs":
            frames: Any = inputs.JpegFrames(got.jpegs)
        elif protocol == "tracked":
            from metrics.sync import tracked

            track = detect() if detect is not None else default_detect_file(Path(video), progress)
            frames, extra = tracked.tracked_crops_from_file(Path(video), track.boxes, Path(tmp) / "tracked",
                                                            options.emulate_codecs)
            info.update(extra)
        else:
            raise ValueError(f"unknown sync protocol {protocol!r} (lrs | tracked)")
        emb = lse.embed(model, frames, len(frames), lse.mfcc(got.pcm), len(got.pcm), options.batch_size,
                        options.device, progress)
    result = lse.score_embeddings(emb)
    assert result.windows == windows
    return result, info


def score_video(model: "SyncNetModel", frames_rgb: np.ndarray, audio: np.ndarray, protocol: Protocol,
                options: FeedOptions = FeedOptions(), detect: Callable[..., "FaceTrack"] | None = None,
                progress: "Progress | None" = None,
                region: Region | None = None) -> tuple[lse.SyncResult, dict[str, Any]]:
    """Score one video. frames_rgb: (T, H, W, 3) uint8 RGB at 25 fps; audio: float32 mono 16 kHz.

    region: only for the suite's own scorer, which looks at a part of the 224x224 input (see
    `metrics.sync.suite`); the published LSE always sees the whole input (None).

    Raises TooShort (fewer than `min_windows` windows), tracked.NoFace (tracked protocol, no face).
    """
    pcm = inputs.pcm16(audio)
    windows = check_length(len(frames_rgb), len(pcm), options.min_windows)
    with tempfile.TemporaryDirectory(prefix="talkbench-sync-") as tmp:
        frames, info = feed(frames_rgb, protocol, Path(tmp), options, detect, progress)
        if region is not None:
            frames, info = RegionFrames(frames, region), {**info, "region": list(region)}
        feats = lse.mfcc(pcm)
        emb = lse.embed(model, frames, len(frames), feats, len(pcm), options.batch_size, options.device, progress)
    result = lse.score_embeddings(emb)
    assert result.windows == windows
    return result, {"protocol": protocol, **info}
