"""The file round trips the official LSE code puts its inputs through, reproduced in a temp dir.

syncnet_python never sees decoded frames directly: `evaluate()` runs
`ffmpeg -y -i <video> -threads 1 -f image2 <dir>/%06d.jpg` (ffmpeg's default MJPEG quality, a
200 kb/s rate control that lands around q=25 on 224x224 faces, i.e. clearly lossy) and reads the
files back with `cv2.imread` (BGR), then `cv2.resize(img, (224, 224))` (bilinear). The audio is
`ffmpeg ... -ac 1 -acodec pcm_s16le -ar 16000` and goes unscaled into the MFCC. Skipping the JPEG
step moves LSE-D by more than 2 on real clips, so it is always applied here.

The metric scores files (`official_inputs`): the JPEGs come straight from the video file and the
audio is `ffmpeg -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000` read back with scipy's wavfile, as
in the original. `write_jpegs` (frames piped as rawvideo RGB, asked for yuvj420p) remains for the
suite's own scorer and for tests; it is not the official path (decoding to RGB and back moves
LSE-D by about 0.7 on real clips).

The ffmpeg binary is chosen explicitly: `$TALKBENCH_FFMPEG` when set (a path to an ffmpeg
executable), otherwise the static build bundled by imageio-ffmpeg; `ffmpeg_info()` gives its path
and version for the manifest. Its MJPEG and resampling output differs between versions (see
docs/metrics_sync.md for the measured spread). Always called with argument lists.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from metrics.sync import lse

JPEG_PATTERN = "%06d.jpg"


class FFmpegError(RuntimeError):
    """The bundled ffmpeg failed; the message carries its stderr."""


FFMPEG_ENV = "TALKBENCH_FFMPEG"
WAV_NAME = "audio.wav"


def ffmpeg_exe() -> str:
    """The ffmpeg used for every LSE file step: $TALKBENCH_FFMPEG, else imageio-ffmpeg's bundled build."""
    import os

    chosen = os.environ.get(FFMPEG_ENV, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise FFmpegError(f"{FFMPEG_ENV}={chosen} is not an executable file")
        return str(path)
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=8)
def _version_of(path: str, size: int, mtime_ns: int) -> str:
    done = subprocess.run([path, "-hide_banner", "-version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = done.stdout.decode(errors="replace").splitlines()[:1]
    words = first[0].split() if first else []
    # "ffmpeg version <version> Copyright ..."
    return words[2] if len(words) > 2 and words[:2] == ["ffmpeg", "version"] else (first[0] if first else "unknown")


def ffmpeg_info() -> dict[str, str]:
    """{"path", "version", "source"} of the ffmpeg the LSE file steps use (for manifests and --json)."""
    import os

    path = ffmpeg_exe()
    st = Path(path).stat()
    source = f"${FFMPEG_ENV}" if os.environ.get(FFMPEG_ENV, "").strip() else "bundled (imageio-ffmpeg)"
    return {"path": path, "version": _version_of(path, st.st_size, st.st_mtime_ns), "source": source}


def run_ffmpeg(args: Sequence[str]) -> None:
    """Run the chosen ffmpeg with `args` (after the global options); FFmpegError with its stderr."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise FFmpegError(f"ffmpeg exited with {done.returncode}: {done.stderr.decode(errors='replace').strip()}")


def extract_audio(media: Path, wav: Path) -> Path:
    """syncnet_python's audio step: `ffmpeg -y -i <media> -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000 <wav>`."""
    run_ffmpeg(["-y", "-i", str(media), "-async", "1", "-ac", "1", "-vn", "-acodec", "pcm_s16le",
                "-ar", str(lse.SAMPLE_RATE), str(wav)])
    return wav


def read_wav(wav: Path) -> np.ndarray:
    """scipy.io.wavfile.read, as the original: int16 mono samples at 16 kHz (anything else is an error)."""
    from scipy.io import wavfile

    rate, samples = wavfile.read(str(wav))
    if rate != lse.SAMPLE_RATE or samples.dtype != np.int16 or samples.ndim != 1:
        raise FFmpegError(f"{wav}: expected 16 kHz mono int16, got {rate} Hz {samples.dtype} {samples.shape}")
    return samples


@dataclass(frozen=True)
class OfficialInputs:
    """What syncnet_python's evaluate() has in hand for one file: sorted JPEG paths and int16 audio."""

    jpegs: list[Path]
    pcm: np.ndarray


def official_inputs(video: Path, folder: Path, audio: Path | None = None) -> OfficialInputs:
    """The original's two file conversions of `video` (audio from `audio` when given, else from the
    video's own track): `ffmpeg -y -i <video> -threads 1 -f image2 %06d.jpg` and the wav step."""
    folder = Path(folder)
    video = Path(video)
    if not video.is_file():
        raise FFmpegError(f"{video}: file not found")
    jpegs = write_video_jpegs(video, folder / "jpg")
    if not jpegs:
        raise FFmpegError(f"{video}: ffmpeg wrote no JPEG frames (no video stream?)")
    pcm = read_wav(extract_audio(Path(audio) if audio is not None else video, folder / WAV_NAME))
    return OfficialInputs(jpegs, pcm)


def pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16 exactly as ffmpeg's pcm_s16le encoder converts float samples.

    libswresample maps a float sample x to clip(lrint(x * 32768)) (round half to even, no
    dither); `tests/metrics/test_sync_inputs.py` checks this against the bundled ffmpeg itself.
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    return np.clip(np.rint(x * np.float32(32768.0)), -32768, 32767).astype(np.int16)


def _run_ffmpeg_with_frames(frames: Iterable[np.ndarray], size: tuple[int, int], out_args: Sequence[str],
                            pix_fmt_in: str = "rgb24") -> None:
    """Pipe uint8 frames of `size` (h, w) into ffmpeg as 25 fps rawvideo; `out_args` end the command."""
    h, w = size
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "rawvideo", "-pix_fmt", pix_fmt_in, "-s", f"{w}x{h}", "-framerate", str(lse.FPS),
           "-i", "pipe:0", *out_args]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            for f in frames:
                if f.shape[:2] != (h, w) or f.dtype != np.uint8:
                    raise ValueError(f"frame {f.dtype} {f.shape} does not match {h}x{w} uint8")
                proc.stdin.write(np.ascontiguousarray(f).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg died; its stderr says why
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise FFmpegError(f"ffmpeg exited with {rc}: {err.read().decode(errors='replace').strip()}")


def write_jpegs(frames_rgb: Sequence[np.ndarray] | np.ndarray, folder: Path) -> list[Path]:
    """Write frames as ffmpeg writes `-f image2 %06d.jpg` at its default quality; sorted paths.

    frames_rgb: (T, H, W, 3) uint8 RGB. The same `-threads 1` as the official command.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(frames_rgb) == 0:
        return []
    size = tuple(np.asarray(frames_rgb[0]).shape[:2])
    _run_ffmpeg_with_frames(frames_rgb, size, ["-threads", "1", "-pix_fmt", "yuvj420p", "-f", "image2",
                                               str(folder / JPEG_PATTERN)])
    paths = sorted(folder.glob("*.jpg"))
    if len(paths) != len(frames_rgb):
        raise FFmpegError(f"ffmpeg wrote {len(paths)} JPEG files for {len(frames_rgb)} frames")
    return paths


def write_video_jpegs(video: Path, folder: Path, extra: Sequence[str] = ()) -> list[Path]:
    """`ffmpeg -y -i <video> [extra] -threads 1 -f image2 %06d.jpg` (the official extraction of a file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video),
           *extra, "-threads", "1", "-f", "image2", str(folder / JPEG_PATTERN)]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise FFmpegError(f"ffmpeg exited with {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return sorted(folder.glob("*.jpg"))


def read_bgr(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise FFmpegError(f"cv2 could not read {path}")
    return img


class JpegFrames:
    """Frames as syncnet_python reads them: cv2.imread of each JPEG, resized to 224x224 (bilinear).

    Callable as a `lse.FrameSource`: `frames(start, stop)` -> (n, 224, 224, 3) uint8 BGR; only the
    asked-for files are decoded, so long clips never sit in memory as floats.
    """

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, start: int, stop: int) -> np.ndarray:
        import cv2

        size = lse._const("SYNCNET_SIZE")
        out = [cv2.resize(read_bgr(p), (size, size)) for p in self.paths[start:stop]]
        return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def jpeg_roundtrip(frames_rgb: np.ndarray, folder: Path | None = None) -> np.ndarray:
    """Frames after the official JPEG round trip, in memory: (T, H, W, 3) uint8 RGB -> same, BGR.

    A convenience for tests and training data; the metric streams via `JpegFrames` instead.
    """
    with tempfile.TemporaryDirectory(prefix="talkbench-jpeg-") as tmp:
        paths = write_jpegs(frames_rgb, Path(folder or tmp))
        return np.stack([read_bgr(p) for p in paths])
