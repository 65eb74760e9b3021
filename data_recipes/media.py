"""Media IO with PyAV (its bundled FFmpeg libraries; no system ffmpeg, no shell): probe, normalise
to 25 fps / 16 kHz mono, stream frames, and write previews (h264 + aac) and lossless caches.

Normalisation never re-encodes video: it stores, for each 25 fps output frame, the presentation
timestamp of the source frame to show for it. Decoding then yields exactly those source frames
(repeated or skipped as the rate change requires), so ground truth stays bit-exact and memory does
not grow with clip length.

Frame selection rule (`select_frames`): output frame k covers [k / fps, (k + 1) / fps) after the
segment start; it shows the source frame that is on screen at the *middle* of that interval, i.e.
the last source frame whose timestamp is <= (k + 0.5) / fps. For a 25 fps source this is frame k
even when timestamps jitter by up to half a frame (a rule that samples at k / fps instead picks
the previous frame whenever frame k is stamped a millisecond late, duplicating one frame and dropping
another); for other rates it is the source frame overlapping the output interval's centre, so the
mean timing error is zero instead of half a source frame late. Constant and variable frame rates
are handled alike because only the timestamps are used.

Audio: decoded at its own rate, down-mixed to mono by averaging channels, then resampled with soxr
at its "HQ" setting (the library behind librosa's default `soxr_hq`): a linear-phase band-limited
resampler whose pass band and > 100 dB stop band remove what lies above the new Nyquist frequency.
FFmpeg's swresample default (a short windowed sinc) leaks more of it; the sync metric's own
official-path resampling is done by the metric, not here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from data_recipes.clip import Clip


class MediaError(ValueError):
    """A media file cannot be used; the message names the file and the exact problem."""


# ----------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream. fps is frames / (last - first timestamp) * (frames - 1) / frames-style
    average from the timestamps; variable_frame_rate is True when frame durations differ by > 2 %."""

    width: int
    height: int
    frames: int
    fps: float
    duration: float
    start: float
    codec: str
    variable_frame_rate: bool
    header_duration: float | None = None   # what the container's index claims; None when it says nothing


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream as stored (before any resampling)."""

    sample_rate: int
    channels: int
    codec: str
    duration: float | None
    start: float


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    video: VideoInfo | None
    audio: AudioInfo | None

    def truncation(self) -> str | None:
        """Why the file looks truncated or partly corrupt, or None.

        A file cut short after its index was written (moov at the front, as `-movflags +faststart`
        and most phone and web exports do) still claims its full length; only demuxing shows how much
        is really there. Half a second and 5 % of slack absorb the usual last-frame rounding.
        """
        v = self.video
        if v is None or not v.header_duration:
            return None
        if v.duration < 0.95 * v.header_duration - 0.5:
            return (f"{self.path} is truncated or partly corrupt: its header says {v.header_duration:.2f} s of "
                    f"video, but only {v.duration:.2f} s ({v.frames} frames) can be read")
        return None


def _open(path: Path, mode: str = "r"):
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    try:
        return av.open(str(path), mode)
    except Exception as e:  # PyAV raises several error types for unreadable input
        raise MediaError(f"{path}: cannot be read as audio or video ({type(e).__name__}: {e})") from e


def probe(path: Path) -> MediaInfo:
    """Streams of a media file. Counts video frames by demuxing (no decoding)."""
    path = Path(path)
    with _open(path) as container:
        has_video = bool(container.streams.video)
        audio = None
        if container.streams.audio:
            a = container.streams.audio[0]
            cc = a.codec_context
            dur = float(a.duration * a.time_base) if a.duration is not None else (
                container.duration / 1e6 if container.duration else None)
            start = float(a.start_time * a.time_base) if a.start_time is not None else 0.0
            audio = AudioInfo(int(cc.sample_rate or a.rate or 0), int(cc.channels or 0), cc.name, dur, start)
    video = None
    if has_video:
        tl = video_timeline(path)
        with _open(path) as container:
            vs = container.streams.video[0]
            codec = vs.codec_context.name
            header = (float(vs.duration * vs.time_base) if vs.duration else
                      container.duration / 1e6 if container.duration else None)
        video = VideoInfo(tl.width, tl.height, len(tl.pts), tl.fps, tl.duration, float(tl.times[0]), codec,
                          tl.variable_frame_rate, header)
    if video is None and audio is None:
        raise MediaError(f"{path}: contains neither a video nor an audio stream")
    return MediaInfo(path, video, audio)


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
    def frame_step(self) -> float:
        """Typical frame duration (median timestamp difference); 1/25 s for a single frame."""
        t = self.times
        return float(np.median(np.diff(t))) if len(t) > 1 else 0.04

    @property
    def duration(self) -> float:
        """From the first frame's timestamp to the end of the last frame (shown for `frame_step`)."""
        t = self.times
        if len(t) == 0:
            return 0.0
        return float(t[-1] - t[0] + self.frame_step)

    @property
    def fps(self) -> float:
        return len(self.pts) / self.duration if self.duration > 0 else 0.0

    @property
    def variable_frame_rate(self) -> bool:
        if len(self.pts) < 3:
            return False
        d = np.diff(self.times)
        return bool(np.abs(d - np.median(d)).max() > 0.02 * np.median(d))


def video_timeline(path: Path) -> VideoTimeline:
    """Frame timestamps from demuxing alone (no decoding), sorted into presentation order."""
    with _open(path) as container:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise MediaError(f"{path}: has no video stream (streams: {kinds})")
        vs = container.streams.video[0]
        try:
            pts = [p.pts for p in container.demux(vs) if p.pts is not None and p.size > 0]
        except Exception as e:
            raise MediaError(f"{path}: video stream cannot be demuxed ({type(e).__name__}: {e})") from e
        if not pts:
            raise MediaError(f"{path}: video stream has no frames")
        return VideoTimeline(np.unique(np.asarray(pts, dtype=np.int64)), vs.time_base,
                             vs.codec_context.width, vs.codec_context.height)


# ------------------------------------------------------------------------------------------- audio


def _decode_audio(path: Path) -> tuple[np.ndarray, int, float]:
    """(mono float32 samples at the stream's own rate, that rate, time of the first sample in s)."""
    import av

    with _open(path) as container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise MediaError(f"{path}: has no audio stream (streams: {kinds})")
        stream = container.streams.audio[0]
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        resampler = None
        rate = 0
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    # planar float at the native rate and layout: a format change only, no resampling
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                if first_time is None and frame.pts is not None:
                    first_time = float(frame.pts * frame.time_base)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32))
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32))
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(f"{path}: audio stream cannot be decoded ({type(e).__name__}: {e})") from e
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise MediaError(f"{path}: audio stream is empty (no samples decoded)")
    return audio, rate, first_time or 0.0


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """float32 mono resampled with soxr "HQ" (see the module docstring for why)."""
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)


def read_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Whole audio track as float32 mono at `sample_rate`; index 0 is the container's time zero.

    Audio that starts late is padded with silence, audio stamped before zero (encoder priming that
    the demuxer did not remove) is trimmed, so sample i is at time i / sample_rate.
    """
    audio, rate, first_time = _decode_audio(Path(path))
    audio = resample(audio, rate, sample_rate)
    lead = int(round(first_time * sample_rate))
    if lead > 0:
        audio = np.concatenate([np.zeros(lead, np.float32), audio])
    elif lead < 0:
        audio = audio[-lead:]
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


# -------------------------------------------------------------------------------------- normalising


def select_frames(timeline: VideoTimeline, start: float, end: float | None, fps: int) -> np.ndarray:
    """Source pts for each output frame of the segment [start, end) (seconds from the first frame).

    Output frame k shows the source frame on screen at the middle of its interval,
    start + (k + 0.5) / fps (see the module docstring). The segment holds every whole output frame
    that fits inside both [start, end) and the video.
    """
    times = timeline.times
    t0 = times[0]
    stop = timeline.duration if end is None else min(end, timeline.duration)
    n = int(np.floor((stop - start) * fps + 1e-6))
    if start < 0 or n <= 0:
        raise MediaError(f"segment [{start}, {end}) s lies outside the video (duration {timeline.duration:.3f} s)")
    centres = t0 + start + (np.arange(n) + 0.5) / fps
    # a frame stamped exactly at a centre (30 -> 25 fps hits this every 5 frames) counts as shown;
    # the microsecond slack absorbs the float error of pts * time_base
    idx = np.searchsorted(times, centres + 1e-6, side="right") - 1
    return timeline.pts[np.clip(idx, 0, len(times) - 1)]


def check_av_lengths(video_path: Path, video_duration: float, audio_path: Path, audio_duration: float,
                     max_mismatch_s: float) -> None:
    """Raise MediaError when a file's audio and video durations differ by more than `max_mismatch_s`."""
    diff = audio_duration - video_duration
    if abs(diff) > max_mismatch_s:
        which = "longer" if diff > 0 else "shorter"
        src = f"{audio_path}" if audio_path != video_path else "its audio track"
        raise MediaError(
            f"{video_path}: audio ({src}) is {abs(diff):.2f} s {which} than the video "
            f"({audio_duration:.2f} s audio vs {video_duration:.2f} s video; at most {max_mismatch_s} s allowed). "
            "Wrong audio file, or a truncated download?"
        )


def normalise_stage(ctx) -> None:
    """Recipe stage "normalise": frame pts map + float32 audio, lengths made consistent.

    Writes frame_pts (T,) int64 (source pts of each 25 fps frame), audio (T * 640,) float32 and
    meta.json (num_frames, height, width, fps, sample_rate, source rate and VFR flag, padding).
    Audio sample 0 is aligned with the video's first frame (a separate audio file, as CMLR ships,
    is taken to start with the video).
    """
    from data_recipes.recipe import save_array, save_json

    cfg, clip = ctx.config, ctx.clip
    if clip.audio_only:
        return _normalise_audio_only(ctx)
    tl = video_timeline(clip.video)
    frame_pts = select_frames(tl, clip.start, clip.end, cfg.fps)
    n = len(frame_pts)
    audio_path = Path(clip.audio or clip.video)
    audio_full = read_audio(audio_path, cfg.sample_rate)
    offset = float(tl.times[0]) if clip.audio is None else 0.0  # same container: shared clock
    check_av_lengths(Path(clip.video), tl.duration, audio_path, len(audio_full) / cfg.sample_rate - offset,
                     cfg.max_av_mismatch_s)
    first = int(round((offset + clip.start) * cfg.sample_rate))
    need = n * cfg.sample_rate // cfg.fps
    audio = audio_full[first:first + need]
    short = need - len(audio)
    if short > cfg.max_av_mismatch_s * cfg.sample_rate:
        raise MediaError(
            f"{audio_path}: audio covers {len(audio) / cfg.sample_rate:.2f} s of the "
            f"{n / cfg.fps:.2f} s segment of clip {clip.id!r} (more than {cfg.max_av_mismatch_s} s missing)"
        )
    if short > 0:
        audio = np.concatenate([audio, np.zeros(short, np.float32)])
    save_array(ctx.out_dir, "frame_pts", frame_pts)
    save_array(ctx.out_dir, "audio", audio.astype(np.float32))
    save_json(ctx.out_dir, "meta", {
        "num_frames": n, "height": tl.height, "width": tl.width, "fps": cfg.fps,
        "sample_rate": cfg.sample_rate, "source_frames": int(len(tl.pts)),
        "source_fps": tl.fps, "source_vfr": tl.variable_frame_rate,
        "time_base": [tl.time_base.numerator, tl.time_base.denominator],
        "frame_rule": "source frame on screen at the middle of each output frame",
        "start": clip.start, "end": clip.end, "audio_padded_samples": int(max(short, 0)),
        "audio_offset_s": offset,
    })


def _normalise_audio_only(ctx) -> None:
    """"normalise" for a driving audio file (`Clip.audio_only`): its [start, end) segment at 16 kHz
    mono, cut to the whole 25 fps frames it covers (a partial last frame is dropped, as a video's
    is); no frames (`frame_pts` is empty)."""
    from data_recipes.recipe import save_array, save_json

    cfg, clip = ctx.config, ctx.clip
    path = Path(clip.audio or clip.video)
    audio_full = read_audio(path, cfg.sample_rate)
    first = int(round(clip.start * cfg.sample_rate))
    last = len(audio_full) if clip.end is None else min(len(audio_full), int(round(clip.end * cfg.sample_rate)))
    per_frame = cfg.sample_rate // cfg.fps
    n = max(last - first, 0) // per_frame
    if n <= 0:
        raise MediaError(f"{path}: the audio segment of clip {clip.id!r} lasts "
                         f"{max(last - first, 0) / cfg.sample_rate:.3f} s, less than one {cfg.fps} fps frame")
    save_array(ctx.out_dir, "frame_pts", np.zeros(0, np.int64))
    save_array(ctx.out_dir, "audio", audio_full[first:first + n * per_frame].astype(np.float32))
    save_json(ctx.out_dir, "meta", {
        "num_frames": int(n), "height": 0, "width": 0, "fps": cfg.fps, "sample_rate": cfg.sample_rate,
        "audio_only": True, "start": clip.start, "end": clip.end, "audio_padded_samples": 0, "audio_offset_s": 0.0,
        "dropped_samples": int(max(last - first, 0) - n * per_frame),
    })


def iter_normalised_frames(clip: Clip, normalised, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield the normalised frames [start, stop) of `clip` as uint8 RGB arrays, decoding as a stream.

    At most one decoded frame is held at a time; repeated frames are yielded as the same array
    object (read-only for the consumer: copy before modifying).
    """
    if clip.audio_only:
        raise MediaError(f"clip {clip.id!r} is a driving audio file ({clip.audio}): it has no frames")
    wanted = normalised.array("frame_pts")[start:stop]
    if len(wanted) == 0:
        return
    yield from iter_frames_at(clip.video, wanted)


def iter_frames_at(path: Path, wanted_pts: np.ndarray) -> Iterator[np.ndarray]:
    """Decode the frames with the given (ascending, possibly repeated) pts as uint8 RGB arrays."""
    wanted = np.asarray(wanted_pts, dtype=np.int64)
    i = 0
    with _open(path) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        container.seek(int(wanted[0]), stream=vs, backward=True, any_frame=False)
        for frame in container.decode(vs):
            if frame.pts is None or frame.pts < wanted[i]:
                continue
            if frame.pts > wanted[i]:
                raise MediaError(f"{path}: frame with pts {wanted[i]} not found while decoding")
            rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            while i < len(wanted) and wanted[i] == frame.pts:
                yield rgb
                i += 1
            if i >= len(wanted):
                return
    if i < len(wanted):
        raise MediaError(f"{path}: video ended after {i} of {len(wanted)} requested frames")


def iter_video_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of the first video stream, in presentation order, as uint8 RGB (H, W, 3)."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        for frame in container.decode(vs):
            yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def read_video_frames(path: Path) -> np.ndarray:
    """All frames of a video as one uint8 RGB array (T, H, W, 3). For short clips and caches only."""
    frames = list(iter_video_frames(path))
    if not frames:
        raise MediaError(f"{path}: video stream decoded to no frames")
    return np.stack(frames)


# ------------------------------------------------------------------------------------------ writing


def write_video(path: Path, frames_rgb: Iterable[np.ndarray], fps: float = 25, audio: np.ndarray | None = None,
                sample_rate: int = 16000, lossless: bool = False, crf: int = 18) -> Path:
    """Encode uint8 RGB frames (an array (T, H, W, 3) or any iterable of (H, W, 3)) as a video file.

    lossless=False: H.264 (libx264, yuv420p, `crf`) + AAC in an mp4 with the index up front, which
    browsers play; odd widths/heights are padded by one replicated row/column (4:2:0 needs even sizes).
    lossless=True: libx264rgb at qp 0 on RGB24 (bit-exact round trip through `read_video_frames`,
    small and fast) + FLAC audio; use an .mkv name (mp4 players rarely accept RGB H.264).
    `audio` is float32 mono in [-1, 1] at `sample_rate`. Frames are encoded as they arrive, so an
    iterator is never held in memory. Written to a temporary name and renamed into place.
    """
    with VideoWriter(path, fps, audio, sample_rate, lossless, crf) as writer:
        for frame in frames_rgb:
            writer.write(frame)
    return Path(path)


class VideoWriter:
    """`write_video` one frame at a time: `with VideoWriter(path, ...) as w: w.write(frame)`.

    For producers that make frames in batches (a method's generate loop): only the frame being
    encoded is held. The file appears under `path` when the block ends without an error; on an
    error the temporary file is removed. `count` is the number of frames written so far."""

    def __init__(self, path: Path, fps: float = 25, audio: np.ndarray | None = None, sample_rate: int = 16000,
                 lossless: bool = False, crf: int = 18):
        self.path = Path(path)
        self.fps, self.audio, self.sample_rate, self.lossless, self.crf = fps, audio, sample_rate, lossless, crf
        self.count = 0
        self._out = None
        self._vstream = None
        self._astream = None
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")

    def __enter__(self) -> "VideoWriter":
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = {} if self.lossless else {"movflags": "+faststart"}
        self._out = av.open(str(self._tmp), "w", options=options)
        return self

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be uint8 RGB (H, W, 3), got {frame.dtype} {frame.shape}")
        if not self.lossless:
            frame = _pad_even(frame)
        if self._vstream is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self._vstream = _video_stream(self._out, frame.shape[1], frame.shape[0], rate, self.lossless, self.crf)
            if self.audio is not None:
                self._astream = _audio_stream(self._out, self.sample_rate, self.lossless)
        elif (frame.shape[1], frame.shape[0]) != (self._vstream.width, self._vstream.height):
            raise ValueError(f"frame {self.count} has size {frame.shape[1]}x{frame.shape[0]}, "
                             f"expected {self._vstream.width}x{self._vstream.height}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.count
        self._out.mux(self._vstream.encode(vf))
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        out, self._out = self._out, None
        closed = False
        try:
            if exc_type is None:
                if self._vstream is None:
                    raise ValueError(f"{self.path}: no frames to write")
                out.mux(self._vstream.encode(None))
                if self.audio is not None:
                    _encode_audio(out, self._astream, np.asarray(self.audio, dtype=np.float32).reshape(-1),
                                  self.sample_rate)
            closed = True
            out.close()
            if exc_type is None:
                self._tmp.replace(self.path)
                return
        except BaseException:
            if not closed:
                with contextlib.suppress(Exception):
                    out.close()
            self._tmp.unlink(missing_ok=True)
            raise
        self._tmp.unlink(missing_ok=True)   # the producer failed: no partial file left behind


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _video_stream(out, width: int, height: int, rate: Fraction, lossless: bool, crf: int):
    if lossless:
        stream = out.add_stream("libx264rgb", rate=rate, options={"qp": "0", "preset": "veryfast"})
        stream.pix_fmt = "rgb24"
    else:
        stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "medium"})
        stream.pix_fmt = "yuv420p"
    stream.width, stream.height = width, height
    stream.time_base = Fraction(1, 1) / rate
    return stream


def _audio_stream(out, sample_rate: int, lossless: bool):
    stream = out.add_stream("flac" if lossless else "aac", rate=sample_rate, layout="mono")
    if not lossless:
        stream.bit_rate = 128000
    return stream


def _encode_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    import av

    fmt = "s16" if stream.codec_context.name == "flac" else "fltp"
    block = 1024 * 16
    for i, begin in enumerate(range(0, len(audio), block)):
        chunk = np.clip(audio[begin:begin + block], -1.0, 1.0)
        if fmt == "s16":
            data = np.round(chunk * 32767.0).astype(np.int16).reshape(1, -1)
        else:
            data = chunk.astype(np.float32).reshape(1, -1)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="mono")
        af.sample_rate = sample_rate
        af.pts = begin
        af.time_base = Fraction(1, sample_rate)
        out.mux(stream.encode(af))
    out.mux(stream.encode(None))
