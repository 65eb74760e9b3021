"""Media IO with PyAV (no system ffmpeg): probe, normalise to 25 fps / 16 kHz mono, stream frames.

Normalisation never re-encodes video: it stores, for each 25 fps output frame, the presentation
timestamp of the source frame shown at that instant. Decoding then yields exactly those source
frames (repeated or skipped as the rate change requires), so ground truth stays bit-exact and memory
does not grow with clip length.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from data_recipes.clip import Clip


class MediaError(ValueError):
    """A media file cannot be used; the message names the file and the exact problem."""


@dataclass(frozen=True)
class VideoTimeline:
    """Presentation times of every frame of a video stream, in order."""

    pts: np.ndarray          # int64, stream time base units, ascending
    time_base: Fraction
    width: int
    height: int

    @property
    def times(self) -> np.ndarray:
        return self.pts.astype(np.float64) * float(self.time_base)

    @property
    def duration(self) -> float:
        t = self.times
        if len(t) == 0:
            return 0.0
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.04
        return float(t[-1] - t[0] + step)


def _open(path: Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")
    try:
        return av.open(str(path))
    except Exception as e:  # PyAV raises several error types for unreadable input
        raise MediaError(f"{path}: cannot be read as media ({e})") from e


def video_timeline(path: Path) -> VideoTimeline:
    """Frame timestamps from demuxing alone (no decoding), sorted into presentation order."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        vs = container.streams.video[0]
        pts = [p.pts for p in container.demux(vs) if p.pts is not None and p.size > 0]
        if not pts:
            raise MediaError(f"{path}: video stream has no frames")
        return VideoTimeline(np.sort(np.asarray(pts, dtype=np.int64)), vs.time_base,
                             vs.codec_context.width, vs.codec_context.height)


def read_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Whole audio track as float32 mono at `sample_rate`, starting at the container's time zero."""
    import av

    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        for frame in container.decode(stream):
            if first_time is None and frame.pts is not None:
                first_time = float(frame.pts * frame.time_base)
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise MediaError(f"{path}: audio stream is empty")
    lead = int(round((first_time or 0.0) * sample_rate))
    if lead > 0:  # audio that starts late is padded so index 0 is time zero
        audio = np.concatenate([np.zeros(lead, np.float32), audio])
    return audio.astype(np.float32, copy=False)


def select_frames(timeline: VideoTimeline, start: float, end: float | None, fps: int) -> np.ndarray:
    """Source pts shown at each output instant start + k / fps, for all instants inside the video."""
    times = timeline.times
    t0 = times[0]
    stop = t0 + timeline.duration if end is None else min(t0 + end, t0 + timeline.duration)
    n = int(np.floor((stop - (t0 + start)) * fps + 1e-6))
    if n <= 0:
        raise MediaError(f"segment [{start}, {end}) lies outside the video (duration {timeline.duration:.3f} s)")
    instants = t0 + start + np.arange(n) / fps
    idx = np.searchsorted(times, instants + 1e-6, side="right") - 1
    return timeline.pts[np.clip(idx, 0, len(times) - 1)]


def normalise_stage(ctx) -> None:
    """Recipe stage "normalise": frame pts map + float32 audio, lengths made consistent."""
    from data_recipes.recipe import save_array, save_json

    cfg, clip = ctx.config, ctx.clip
    tl = video_timeline(clip.video)
    frame_pts = select_frames(tl, clip.start, clip.end, cfg.fps)
    n = len(frame_pts)
    audio_full = read_audio(clip.audio or clip.video, cfg.sample_rate)
    first = int(round(clip.start * cfg.sample_rate))
    need = n * cfg.sample_rate // cfg.fps
    audio = audio_full[first:first + need]
    short = need - len(audio)
    if short > cfg.max_av_mismatch_s * cfg.sample_rate:
        raise MediaError(
            f"{clip.audio or clip.video}: audio covers {len(audio) / cfg.sample_rate:.2f} s of the "
            f"{n / cfg.fps:.2f} s segment of clip {clip.id!r} (more than {cfg.max_av_mismatch_s} s missing)"
        )
    if short > 0:
        audio = np.concatenate([audio, np.zeros(short, np.float32)])
    save_array(ctx.out_dir, "frame_pts", frame_pts)
    save_array(ctx.out_dir, "audio", audio.astype(np.float32))
    save_json(ctx.out_dir, "meta", {
        "num_frames": n, "height": tl.height, "width": tl.width, "fps": cfg.fps,
        "sample_rate": cfg.sample_rate, "source_frames": int(len(tl.pts)),
        "source_fps": float((len(tl.pts) - 1) / (tl.times[-1] - tl.times[0])) if len(tl.pts) > 1 else None,
        "time_base": [tl.time_base.numerator, tl.time_base.denominator],
        "start": clip.start, "end": clip.end, "audio_padded_samples": int(max(short, 0)),
    })


def iter_normalised_frames(clip: Clip, normalised, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield the normalised frames [start, stop) of `clip` as uint8 RGB arrays, decoding as a stream."""
    wanted = normalised.array("frame_pts")[start:stop]
    if len(wanted) == 0:
        return
    with _open(clip.video) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        container.seek(int(wanted[0]), stream=vs, backward=True, any_frame=False)
        i = 0
        for frame in container.decode(vs):
            if frame.pts is None or frame.pts < wanted[i]:
                continue
            rgb = None
            while i < len(wanted) and frame.pts >= wanted[i]:
                if frame.pts > wanted[i]:
                    raise MediaError(f"{clip.video}: frame with pts {wanted[i]} not found while decoding")
                if rgb is None:
                    rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                yield rgb
                i += 1
            if i >= len(wanted):
                return
    if i < len(wanted):
        raise MediaError(f"{clip.video}: video ended after {i} of {len(wanted)} requested frames")
