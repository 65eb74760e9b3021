"""The files LSE scores: the mp4 the suite delivers for a generated video, and the real video's own file.

syncnet_python scores files, and the published LSE tables were made from each method's own mp4. So
the suite hands every generated video to the metric as a file, encoded once, the same way for every
method, and stores it in the run's samples folder so the original script can rescore it:

- **Delivered mp4** (`write_delivered`): video libx264, yuv420p, CRF 23, preset medium (x264's
  default rate control, which Wav2Lip's final `ffmpeg -y -i <wav> -i result.avi -strict -2 -q:v 1
  <out>.mp4` ends up with: libx264 ignores `-q:v` and falls back to CRF 23), 25 fps; audio: ffmpeg's
  default AAC encoder at its default bit rate, from the driving clip's 16 kHz int16 samples. Frames
  are piped to ffmpeg as rgb24 and converted by ffmpeg (BT.601, limited range). Odd sizes are padded
  by one replicated row / column (4:2:0 needs even sizes). Wav2Lip's own outputs go through a
  cv2 DIVX avi first; that intermediate is not emulated (its size on LSE is in docs/metrics_sync.md).
- **Real video** (`real_video_file`): a clip that is a whole 25 fps file with its own audio track is
  scored from that file itself, exactly as the original would. A segment [start, end) of a longer
  source, a source at another frame rate, or a clip with a separate audio file is written as a
  frame-exact lossless copy: the frames the normalise stage selected, decoded in their coded pixel
  format (no RGB round trip) and encoded with libx264 at qp 0 (lossless) in that format, plus the
  audio as ALAC (lossless). A stream copy (`-c copy`) is not used: it can only cut at keyframes.
  Re-extracting JPEGs and audio from this copy gives the same inputs as extracting them from the
  source (test `test_segment_copy_scores_like_the_source_file`).
- **Audio samples** (`clip_pcm16`): the source's audio as the original's audio step makes it
  (`ffmpeg -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000`), cut at the clip's first frame
  (round((first frame time + start) * 16000), the normalise stage's alignment) to num_frames * 640
  samples, zero-padded when the source is shorter.

All through the chosen ffmpeg (`metrics.sync.inputs.ffmpeg_exe`), with argument lists only.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from metrics.sync import inputs, lse

if TYPE_CHECKING:
    from data_recipes.recipe import PreparedClip

DELIVERED_NAME = "delivered.mp4"
REAL_NAME = "real.mp4"
VIDEO_CODEC = "libx264"
PIX_FMT = "yuv420p"
CRF = 23
PRESET = "medium"
AUDIO_CODEC = "aac"
# 8-bit planar YUV layouts that can be piped to ffmpeg exactly as decoded (a segment copy keeps them)
PLANAR_YUV = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")


def encoding() -> dict[str, object]:
    """The delivered-mp4 encoding, for manifests and sample.json."""
    return {"video": VIDEO_CODEC, "pix_fmt": PIX_FMT, "crf": CRF, "preset": PRESET, "fps": lse.FPS,
            "audio": f"{AUDIO_CODEC} (ffmpeg default bit rate), 16 kHz mono"}


def _write_wav(path: Path, pcm: np.ndarray) -> Path:
    from scipy.io import wavfile

    wavfile.write(str(path), lse.SAMPLE_RATE, np.asarray(pcm, dtype=np.int16).reshape(-1))
    return path


def _pipe(cmd: list[str], chunks: Iterable[bytes]) -> None:
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            for c in chunks:
                proc.stdin.write(c)
        except BrokenPipeError:
            pass  # ffmpeg died; its stderr says why
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise inputs.FFmpegError(f"ffmpeg exited with {rc}: {err.read().decode(errors='replace').strip()}")


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_delivered(path: Path, frames_rgb: np.ndarray, pcm: "np.ndarray | Path", fps: float = lse.FPS) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames and the audio as the delivered mp4.

    frames_rgb: an array or a lazy video (`data_recipes.frames.Frames`), piped to ffmpeg frame by
    frame (never held whole). pcm: int16 16 kHz mono samples, or an audio file muxed as it is (as
    Wav2Lip's final ffmpeg call muxes its wav). Written to a temporary name and renamed into place;
    returns `path`.
    """
    from data_recipes.frames import is_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = frames_rgb if is_video(frames_rgb) else np.asarray(frames_rgb)
    if not is_video(frames) or len(frames) == 0:
        raise ValueError(f"frames must be uint8 RGB (T, H, W, 3) with T > 0, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1] + frames.shape[1] % 2, frames.shape[2] + frames.shape[2] % 2
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with tempfile.TemporaryDirectory(prefix="talkbench-deliver-") as d:
        wav = Path(pcm) if isinstance(pcm, (str, Path)) else _write_wav(Path(d) / "audio.wav", pcm)
        cmd = [inputs.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-i", str(wav),
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps), "-i", "pipe:0",
               "-map", "1:v:0", "-map", "0:a:0",
               "-c:v", VIDEO_CODEC, "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", PIX_FMT,
               "-c:a", AUDIO_CODEC, "-f", "mp4", str(tmp)]
        try:
            _pipe(cmd, (np.ascontiguousarray(_even(f)).tobytes() for f in frames))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------ audio


@functools.lru_cache(maxsize=8)
def _source_pcm(path: str, size: int, mtime_ns: int, ffmpeg: str) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="talkbench-audio-") as d:
        pcm = inputs.read_wav(inputs.extract_audio(Path(path), Path(d) / "audio.wav"))
    pcm.setflags(write=False)
    return pcm


def source_pcm16(path: Path) -> np.ndarray:
    """The whole audio track of `path` as the original's audio step makes it (int16, 16 kHz mono)."""
    st = Path(path).stat()
    return _source_pcm(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, inputs.ffmpeg_exe())


def clip_pcm16(prepared: "PreparedClip", num_frames: int | None = None) -> np.ndarray:
    """The clip's audio as the original's ffmpeg step makes it, cut to its frames (num_frames * 640)."""
    clip = prepared.clip
    meta = prepared.meta
    n = prepared.num_frames if num_frames is None else int(num_frames)
    full = source_pcm16(Path(clip.audio or clip.video))
    offset = float(meta.get("audio_offset_s", 0.0))
    first = int(round((offset + clip.start) * lse.SAMPLE_RATE))
    need = n * lse.SAMPLES_PER_FRAME
    out = np.zeros(need, np.int16)
    part = full[first:first + need]
    out[:len(part)] = part
    return out


# ------------------------------------------------------------------------------------ real video


def is_whole_file(prepared: "PreparedClip") -> bool:
    """True when the clip is its source file as is: all frames, 25 fps, no separate audio file."""
    from data_recipes.media import video_timeline

    clip = prepared.clip
    if clip.audio is not None or clip.start != 0 or clip.end is not None:
        return False
    pts = prepared.stage("normalise").array("frame_pts")
    timeline = video_timeline(Path(clip.video))
    return len(pts) == len(timeline.pts) and bool(np.array_equal(pts, timeline.pts))


def _planes(frame) -> bytes:
    """The planes of an 8-bit planar frame without line padding, as rawvideo expects them."""
    parts = []
    for plane in frame.planes:
        arr = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        parts.append(np.ascontiguousarray(arr[:, :plane.width]).tobytes())
    return b"".join(parts)


def _native_frames(path: Path, wanted_pts: np.ndarray) -> Iterator[tuple[str, int, int, bytes]]:
    """(pix_fmt, width, height, raw bytes) of the frames with the given pts, decoded without conversion."""
    from data_recipes.media import MediaError, _open

    wanted = np.asarray(wanted_pts, dtype=np.int64)
    i = 0
    with _open(path) as container:
        vs = container.streams.video[0]
        container.seek(int(wanted[0]), stream=vs, backward=True, any_frame=False)
        for frame in container.decode(vs):
            if frame.pts is None or frame.pts < wanted[i]:
                continue
            if frame.pts > wanted[i]:
                raise MediaError(f"{path}: frame with pts {wanted[i]} not found while decoding")
            fmt = frame.format.name
            if fmt in PLANAR_YUV:
                item = (fmt, frame.width, frame.height, _planes(frame))
            else:  # not an 8-bit planar YUV source: the copy is made from RGB (said in the info)
                item = ("rgb24", frame.width, frame.height,
                        np.ascontiguousarray(frame.to_ndarray(format="rgb24")).tobytes())
            while i < len(wanted) and wanted[i] == frame.pts:
                yield item
                i += 1
            if i >= len(wanted):
                return
    if i < len(wanted):
        raise MediaError(f"{path}: video ended after {i} of {len(wanted)} requested frames")


def write_segment(path: Path, prepared: "PreparedClip", num_frames: int | None = None) -> dict[str, object]:
    """The frame-exact lossless copy of a clip segment (see the module docstring); returns info."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = prepared.num_frames if num_frames is None else min(int(num_frames), prepared.num_frames)
    pts = prepared.stage("normalise").array("frame_pts")[:n]
    frames = _native_frames(Path(prepared.clip.video), pts)
    fmt, w, h, first = next(frames)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with tempfile.TemporaryDirectory(prefix="talkbench-segment-") as d:
        wav = _write_wav(Path(d) / "audio.wav", clip_pcm16(prepared, n))
        cmd = [inputs.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-i", str(wav),
               "-f", "rawvideo", "-pix_fmt", fmt, "-s", f"{w}x{h}", "-framerate", str(lse.FPS), "-i", "pipe:0",
               "-map", "1:v:0", "-map", "0:a:0",
               "-c:v", VIDEO_CODEC, "-preset", "ultrafast", "-qp", "0", "-pix_fmt", fmt,
               "-c:a", "alac", "-f", "mp4", str(tmp)]
        try:
            _pipe(cmd, _chain(first, frames))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return {"real_video": str(path), "segment_copy": True, "pix_fmt": fmt, "frames": n,
            "encoding": "libx264 qp 0 (lossless) + ALAC, frame-exact copy of the normalised frames"}


def _chain(first: bytes, rest: Iterator[tuple[str, int, int, bytes]]) -> Iterator[bytes]:
    yield first
    for item in rest:
        yield item[3]


def real_video_file(folder: Path, prepared: "PreparedClip", num_frames: int | None = None) -> tuple[Path, dict[str, object]]:
    """The file the real video is scored from: the source itself or a segment copy in `folder`."""
    n = prepared.num_frames if num_frames is None else int(num_frames)
    if n == prepared.num_frames and is_whole_file(prepared):
        return Path(prepared.clip.video), {"real_video": str(prepared.clip.video), "segment_copy": False}
    info = write_segment(Path(folder) / REAL_NAME, prepared, n)
    return Path(folder) / REAL_NAME, info


def deliver(folder: Path, frames_rgb: np.ndarray, target: "PreparedClip", driving: "PreparedClip",
            real: bool = False) -> tuple[Path, dict[str, object]]:
    """The file `bench run` scores for one request, stored in its samples `folder`.

    real=True (the reference method: the real video) -> `real_video_file`; otherwise the generated
    frames with the driving clip's audio as `delivered.mp4`. Returns (path, info for sample.json).
    """
    n = len(frames_rgb)
    if real:
        return real_video_file(folder, target, n)
    path = write_delivered(Path(folder) / DELIVERED_NAME, frames_rgb, clip_pcm16(driving, n))
    return path, {"delivered": DELIVERED_NAME, "encoding": encoding()}


def try_deliver(folder: Path, frames_rgb: np.ndarray, target: "PreparedClip", driving: "PreparedClip",
                real: bool = False) -> tuple[Path | None, dict[str, object]]:
    """`deliver` for the runner: a failure never loses the request; LSE then encodes the same
    delivered mp4 in a temporary folder itself, and the reason is kept in sample.json."""
    try:
        return deliver(folder, frames_rgb, target, driving, real)
    except Exception as e:
        return None, {"delivery_error": f"{type(e).__name__}: {e}"}
