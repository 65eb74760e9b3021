"""Memory of `bench run` does not grow with a clip's resolution or length (issue 16).

Two real clips are built at test time from the shared clips with the suite's ffmpeg (argument lists):
a 1080x1920 portrait clip (a shared clip scaled and padded, 12 s) and a 5-minute clip (a 71 s
shared clip looped with `-stream_loop`). Each `bench run` is a child process; its peak RSS is what
wait4 reports (ru_maxrss: the process or its largest child). The fixed cost (Python, torch, the face
landmarker, encoders) is measured by the same command on a small or short version of the same
footage, so each test asserts the *growth* of the peak against the size of one whole video at the
larger size: an implementation that holds the generated video and its ground truth in memory grows
by at least two whole videos and fails; a streaming one grows by a bounded window of frames.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

BENCH = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())"]
MB = 1024 * 1024


def ffmpeg(*args: str) -> None:
    from metrics.sync.inputs import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)


def scaled_clip(source: Path, out: Path, seconds: float, width: int, height: int) -> Path:
    """`seconds` of `source` scaled into width x height (aspect kept, black bars: a portrait frame)."""
    vf = (f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
          f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1")
    ffmpeg("-i", str(source), "-t", f"{seconds}", "-vf", vf, "-r", "25", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out


def looped_clip(source: Path, out: Path, seconds: float) -> Path:
    """`source` looped (video and audio) to `seconds`, at its own size."""
    ffmpeg("-stream_loop", "-1", "-i", str(source), "-t", f"{seconds}", "-r", "25", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out


def run_peak(args: list[str], cache: Path) -> tuple[int, int, str]:
    """(exit code, peak RSS in bytes, output) of `bench <args>`: ru_maxrss that wait4 reports for
    that child (the largest of it and the processes it waited for, e.g. an ffmpeg it ran)."""
    import tempfile

    env = {**os.environ, "TALKBENCH_CACHE": str(cache)}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*BENCH, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().decode(errors="replace")
    return proc.returncode, int(usage.ru_maxrss) * 1024, out


def run_args(video: Path, runs: Path, methods: str, metrics: str, test_seconds: float) -> list[str]:
    return ["run", "--dataset", f"video:{video}", "--test-seconds", f"{test_seconds:g}", "--methods", methods,
            "--metrics", metrics, "--runs-dir", str(runs), "--no-report", "--samples", "all", "--workers", "1",
            "--progress", "off"]


def peaks(runs: list[tuple[Path, Path, float]], methods: str, metrics: str, cache: Path) -> list[int]:
    """Peak RSS of one `bench run` per (video, runs folder, test seconds), each required to succeed."""
    out = []
    for video, folder, test_seconds in runs:
        code, peak, log = run_peak(run_args(video, folder, methods, metrics, test_seconds), cache)
        assert code == 0, log[-3000:]
        out.append(peak)
    return out


def results(runs: Path) -> pd.DataFrame:
    run_dir = next(p for p in runs.iterdir() if p.is_dir())
    return pd.read_csv(run_dir / "results.csv")


def test_portrait_1080x1920_clip_peak_memory_does_not_hold_whole_videos(shared_data, tmp_path):
    source = shared_data / "clips" / "german_20s.mp4"
    seconds, test_seconds = 12.0, 5.0
    large = scaled_clip(source, tmp_path / "portrait.mp4", seconds, 1080, 1920)
    small = scaled_clip(source, tmp_path / "small.mp4", seconds, 270, 480)
    # PSNR and the output check (MediaPipe on every generated frame) read both videos; SSIM reads them
    # the same way (tests/metrics/test_image.py) but costs minutes at this size on a small CPU
    metrics = "psnr,output_check"
    peak_s, peak_l = peaks([(small, tmp_path / "runs-small", test_seconds),
                            (large, tmp_path / "runs-large", test_seconds)], "reference,frozen", metrics,
                           tmp_path / "cache")

    rows = results(tmp_path / "runs-large")
    assert (rows["status"] == "ok").all(), rows[rows["status"] != "ok"][["method", "metric", "reason"]]
    psnr = rows[rows["metric"] == "PSNR"].set_index("method")["value"]
    assert psnr["reference"] == float("inf") and 5 < psnr["frozen"] < 60
    found = rows[rows["metric"] == "face-found"].set_index("method")["value"]
    assert found["reference"] > 0.9   # the face is found in the streamed frames

    frames = int(round(test_seconds * 25))
    whole = frames * 1080 * 1920 * 3          # one whole test video at full size: 777 MB
    growth = peak_l - peak_s
    print(f"peak RSS: {peak_s / MB:.0f} MiB at 270x480, {peak_l / MB:.0f} MiB at 1080x1920 "
          f"(growth {growth / MB:.0f} MiB; one whole video {whole / MB:.0f} MiB)")
    # holding the generated video and its ground truth grows by two whole videos; a bounded window
    # (a few frames per metric batch, decoder and encoder buffers) by far less than one
    assert growth < whole, f"peak grew by {growth / MB:.0f} MiB for a {whole / MB:.0f} MiB video"


def test_five_minute_looped_clip_peak_memory_does_not_grow_with_length(shared_data, tmp_path):
    source = shared_data / "clips" / "anchor_71s.mp4"
    long = looped_clip(source, tmp_path / "long.mp4", 300.0)
    long_test, short_test = 24.0, 4.0
    metrics = "psnr"
    peak_s, peak_l = peaks([(source, tmp_path / "runs-short", short_test),
                            (long, tmp_path / "runs-long", long_test)], "reference,frozen", metrics,
                           tmp_path / "cache")

    rows = results(tmp_path / "runs-long")
    assert (rows["status"] == "ok").all(), rows[rows["status"] != "ok"][["method", "metric", "reason"]]
    psnr = rows[rows["metric"] == "PSNR"].set_index("method")
    assert psnr.loc["reference", "value"] == float("inf") and 5 < psnr.loc["frozen", "value"] < 60
    assert (psnr["n_frames"] == int(round(long_test * 25))).all()   # every frame of the long segment

    frames = int(round(long_test * 25))
    whole = frames * 512 * 512 * 3            # one whole 24 s test video: 472 MB
    growth = peak_l - peak_s
    print(f"peak RSS: {peak_s / MB:.0f} MiB on 71 s (4 s test), {peak_l / MB:.0f} MiB on 5 min ({long_test:g} s test) "
          f"(growth {growth / MB:.0f} MiB; one whole video {whole / MB:.0f} MiB)")
    # what may grow with length: the clip's audio (5 min of float32 16 kHz: 19 MB, a few copies while
    # it is normalised) and per-frame numbers; the frames themselves must not (measured with a 40 s
    # segment: peak 804 MiB, 15 MiB above the 71 s clip's; the code before issue 16: 2363 MiB)
    assert growth < whole / 4, f"peak grew by {growth / MB:.0f} MiB for {frames} frames"
