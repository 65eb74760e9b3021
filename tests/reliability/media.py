"""Real media for the reliability tests, cut at test time from the embedded demo clip with the
ffmpeg binary imageio-ffmpeg ships (argument lists, never a shell). Nothing here is committed."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)


def demo_cut(demo: Path, out: Path, start: float = 0.0, seconds: float = 4.4) -> Path:
    """The demo's [start, start + seconds) re-encoded (frame-exact cut, video and audio)."""
    ffmpeg("-ss", f"{start}", "-i", str(demo), "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out


def no_face_clip(demo: Path, out: Path, seconds: float = 4.4) -> Path:
    """A test pattern (no face anywhere) with the demo's real speech as its audio track."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-i", str(demo), "-map", "0:v", "-map", "1:a",
           "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           str(out))
    return out


def silent_clip(demo: Path, out: Path, seconds: float = 4.4) -> Path:
    """The demo's real frames (a face in every frame) with digital silence as the audio track."""
    ffmpeg("-i", str(demo), "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-map", "0:v", "-map", "1:a",
           "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           str(out))
    return out


def audio_file(demo: Path, out: Path, start: float, seconds: float, rate: int, channels: int) -> Path:
    """The demo's speech [start, start + seconds) as an audio-only file; the codec follows the suffix
    (.mp3: LAME, .m4a: AAC, .wav: 16-bit PCM)."""
    codec = {".mp3": ["-c:a", "libmp3lame", "-b:a", "128k"], ".m4a": ["-c:a", "aac"],
             ".wav": ["-c:a", "pcm_s16le"]}[out.suffix]
    ffmpeg("-ss", f"{start}", "-i", str(demo), "-t", f"{seconds}", "-vn", "-ar", str(rate), "-ac", str(channels),
           *codec, str(out))
    return out
