"""Media IO: probing, frame-accurate 25 fps resampling (CFR, VFR, jittered), audio, writing, errors.

Test videos are generated here with PyAV. Frames carry their own index as 10 black/white stripes,
so which source frame was picked can be read back from the decoded pixels after lossy coding.
"""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from data_recipes.media import (MediaError, check_av_lengths, iter_frames_at, probe, read_audio,
                                read_video_frames, select_frames, video_timeline, write_video)

BITS = 10
STRIPE = 16


def code_frame(index: int, height: int = 48) -> np.ndarray:
    bits = [(index >> b) & 1 for b in range(BITS)]
    row = np.repeat(np.array(bits, np.uint8) * 255, STRIPE)
    return np.ascontiguousarray(np.broadcast_to(row[None, :, None], (height, BITS * STRIPE, 3)))


def read_code(frame: np.ndarray) -> int:
    cols = frame[:, : BITS * STRIPE].reshape(frame.shape[0], BITS, STRIPE, 3).mean(axis=(0, 2, 3))
    return int(sum(1 << b for b, v in enumerate(cols) if v > 127))


def write_coded(path: Path, times_s, audio: np.ndarray | None = None, sr: int = 16000,
                time_base: Fraction = Fraction(1, 90000)) -> Path:
    """A video whose frame j shows code j at time times_s[j] (any spacing), optional AAC audio."""
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options={"crf": "10", "preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = BITS * STRIPE, 48, "yuv420p"
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        a = out.add_stream("aac", rate=sr, layout="mono") if audio is not None else None
        for j, t in enumerate(times_s):
            f = av.VideoFrame.from_ndarray(code_frame(j), format="rgb24")
            f.pts = int(round(t / time_base))
            f.time_base = time_base
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        if a is not None:
            for begin in range(0, len(audio), 4096):
                af = av.AudioFrame.from_ndarray(audio[None, begin:begin + 4096].astype(np.float32), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, begin, Fraction(1, sr)
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def midpoint_choice(times_s, n_out: int, fps: int = 25, start: float = 0.0) -> list[int]:
    """Independent brute force: the source frame on screen at the middle of each output frame."""
    out = []
    for k in range(n_out):
        centre = times_s[0] + start + (k + 0.5) / fps
        out.append(max(j for j, t in enumerate(times_s) if t <= centre + 1e-9))
    return out


def decoded_codes(path: Path, start: float = 0.0, end: float | None = None) -> list[int]:
    tl = video_timeline(path)
    return [read_code(f) for f in iter_frames_at(path, select_frames(tl, start, end, 25))]


# ------------------------------------------------------------------------------------ frame choice


def test_25fps_is_identity(tmp_path):
    times = np.arange(60) / 25
    p = write_coded(tmp_path / "cfr25.mp4", times)
    assert decoded_codes(p) == list(range(60))


def test_30fps_to_25fps_frame_accurate(tmp_path):
    times = np.arange(90) / 30                       # 3.0 s at 30 fps
    p = write_coded(tmp_path / "cfr30.mp4", times)
    codes = decoded_codes(p)
    assert len(codes) == 75
    assert codes == midpoint_choice(times, 75)
    # closed form of the same rule: floor((k + 0.5) * 30 / 25); every 6th source frame dropped
    assert codes == [int(np.floor((k + 0.5) * 1.2)) for k in range(75)]


def test_jittered_25fps_timestamps_keep_every_frame_once(tmp_path):
    """Real files stamp frames to the millisecond: frame k arriving 1-2 ms late must still be frame k."""
    rng = np.random.default_rng(1)
    times = np.arange(50) / 25 + rng.uniform(-0.008, 0.008, 50)
    times[0] = 0.0
    p = write_coded(tmp_path / "jitter.mkv", times, time_base=Fraction(1, 1000))
    assert decoded_codes(p) == list(range(50))


def test_variable_frame_rate(tmp_path):
    rng = np.random.default_rng(2)
    durations = rng.choice([1 / 60, 1 / 30, 1 / 25, 1 / 15, 0.1], size=80)
    times = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    p = write_coded(tmp_path / "vfr.mkv", times, time_base=Fraction(1, 1000))
    tl = video_timeline(p)
    assert tl.variable_frame_rate
    assert probe(p).video.variable_frame_rate
    times_ms = np.round(times * 1000) / 1000           # what the 1/1000 container stores
    n = int(np.floor(tl.duration * 25 + 1e-6))
    assert decoded_codes(p) == midpoint_choice(list(times_ms), n)


def test_segment_selection(tmp_path):
    times = np.arange(100) / 25
    p = write_coded(tmp_path / "seg.mp4", times)
    assert decoded_codes(p, start=1.0, end=2.0) == list(range(25, 50))
    with pytest.raises(MediaError, match="outside the video"):
        select_frames(video_timeline(p), 5.0, None, 25)


# ------------------------------------------------------------------------------------------- audio


def test_read_audio_resamples_to_16k_mono_cleanly(tmp_path):
    import soundfile as sf

    sr = 44100
    t = np.arange(sr * 2) / sr
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    alias = 0.3 * np.sin(2 * np.pi * 10000 * t)          # above 8 kHz: must vanish at 16 kHz
    sf.write(tmp_path / "tone.wav", np.stack([left + alias, left - alias], axis=1), sr, subtype="FLOAT")
    a = read_audio(tmp_path / "tone.wav", 16000)
    assert a.dtype == np.float32 and a.ndim == 1 and abs(len(a) - 32000) <= 1
    # down-mix averages the channels, so the 10 kHz tone cancels exactly and the rest is a clean 1 kHz
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(a)) / 16000)
    mid = slice(1000, len(a) - 1000)
    snr = 10 * np.log10(np.mean(ref[mid] ** 2) / np.mean((a[mid] - ref[mid]) ** 2))
    assert snr > 80, snr
    # a single-channel 10 kHz tone is removed by the anti-alias filter (soxr HQ)
    sf.write(tmp_path / "alias.wav", alias, sr, subtype="FLOAT")
    b = read_audio(tmp_path / "alias.wav", 16000)
    assert 20 * np.log10(np.sqrt(np.mean(b[mid] ** 2)) / 0.3) < -80


def test_audio_sample_zero_is_video_frame_zero(tmp_path):
    """Clicks at known frames in the source land on the same frames after normalisation."""
    sr = 16000
    audio = np.zeros(sr * 2, np.float32)
    for frame in (5, 20, 41):
        audio[frame * 640: frame * 640 + 80] = 0.9
    p = write_coded(tmp_path / "click.mp4", np.arange(50) / 25, audio=audio, sr=sr)
    a = read_audio(p, sr)
    energy = np.array([np.abs(a[k * 640:(k + 1) * 640]).max() for k in range(50)])
    assert set(np.flatnonzero(energy > 0.3)) == {5, 20, 41}


# ---------------------------------------------------------------------------------------- writing


def test_lossless_round_trip_is_bit_exact(tmp_path, demo_video):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (6, 37, 53, 3), dtype=np.uint8)        # odd sizes, worst-case content
    write_video(tmp_path / "noise.mkv", noise, fps=25, lossless=True)
    np.testing.assert_array_equal(read_video_frames(tmp_path / "noise.mkv"), noise)
    real = read_video_frames(demo_video)[:8]
    write_video(tmp_path / "real.mkv", iter(real), fps=25, lossless=True,
                audio=np.zeros(8 * 640, np.float32))
    np.testing.assert_array_equal(read_video_frames(tmp_path / "real.mkv"), real)
    assert probe(tmp_path / "real.mkv").audio.codec == "flac"


def test_preview_mp4_has_h264_and_aac_in_sync_length(tmp_path, demo_video):
    frames = read_video_frames(demo_video)[:25]
    audio = (0.1 * np.sin(np.arange(16000) * 0.2)).astype(np.float32)
    p = write_video(tmp_path / "preview.mp4", frames, fps=25, audio=audio)
    info = probe(p)
    assert info.video.codec == "h264" and info.audio.codec == "aac"
    assert info.video.frames == 25 and abs(info.video.duration - 1.0) < 1e-6
    assert abs(info.audio.duration - 1.0) < 0.03
    back = read_video_frames(p)
    mse = np.mean((back.astype(float) - frames.astype(float)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 35
    # odd sizes are padded to even for 4:2:0
    write_video(tmp_path / "odd.mp4", np.zeros((3, 31, 45, 3), np.uint8))
    assert read_video_frames(tmp_path / "odd.mp4").shape == (3, 32, 46, 3)
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_video(tmp_path / "x.mkv", np.zeros((2, 8, 8), np.float32), lossless=True)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "y.mkv", [], lossless=True)
    assert not (tmp_path / "x.mkv").exists() and not (tmp_path / "y.mkv").exists()


# ----------------------------------------------------------------------------------------- probing


def test_probe_real_clip(shared_data):
    info = probe(shared_data / "clips/obama_20s.mp4")
    assert (info.video.width, info.video.height, info.video.frames) == (450, 450, 500)
    assert info.video.fps == pytest.approx(25.0) and not info.video.variable_frame_rate
    assert info.audio.sample_rate == 48000 and info.audio.channels == 2 and info.audio.codec == "aac"
    assert info.audio.duration == pytest.approx(20.0, abs=0.05)


# ------------------------------------------------------------------------------------------ errors


def test_error_no_video_stream(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "speech.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(MediaError, match=r"speech\.wav: has no video stream \(streams: audio\)"):
        video_timeline(tmp_path / "speech.wav")


def test_error_no_audio_stream(tmp_path):
    p = write_coded(tmp_path / "silent.mp4", np.arange(10) / 25)
    with pytest.raises(MediaError, match=r"silent\.mp4: has no audio stream \(streams: video\)"):
        read_audio(p)


def test_error_empty_and_unreadable_and_missing(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: file is empty"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MediaError, match=r"junk\.mp4: cannot be read"):
        video_timeline(tmp_path / "junk.mp4")
    with pytest.raises(MediaError, match="file not found"):
        read_audio(tmp_path / "nope.wav")


def test_error_truncated_file(tmp_path, demo_video):
    data = demo_video.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:2000])   # header cut off before the sample tables end
    with pytest.raises(MediaError, match=r"cut\.mp4"):
        video_timeline(tmp_path / "cut.mp4")


def test_truncated_file_with_its_index_at_the_front_is_named_truncated(tmp_path, demo_video):
    """A faststart mp4 cut short keeps claiming its full length; probe() tells the readable part."""
    import subprocess

    import imageio_ffmpeg

    from data_recipes.clip import DatasetError
    from data_recipes.datasets import load

    whole = tmp_path / "whole.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(demo_video), "-t", "8",
                    "-c", "copy", "-movflags", "+faststart", str(whole)], check=True)
    assert probe(whole).truncation() is None
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.75)])
    info = probe(cut)
    assert info.video.header_duration == pytest.approx(8.0, abs=0.2)
    assert info.video.duration < 7.0
    assert "truncated or partly corrupt" in info.truncation()
    with pytest.raises(DatasetError, match=r"truncated or partly corrupt: its header says 8\.\d+ s"):
        load(f"video:{cut}")


@pytest.mark.parametrize("video_s, audio_s", [(2.0, 6.0), (6.0, 1.0)])
def test_error_audio_video_lengths_differ(tmp_path, isolated_dirs, video_s, audio_s):
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    audio = np.zeros(int(audio_s * 16000), np.float32)
    p = write_coded(tmp_path / "mismatch.mp4", np.arange(int(video_s * 25)) / 25, audio=audio)
    clip = Clip("m", p, subject="x", split="test")
    with pytest.raises(MediaError, match=r"mismatch\.mp4: audio \(its audio track\) is .* s (longer|shorter) than"):
        Recipe(Cache(isolated_dirs / "cache")).output(clip, "normalise")


def test_check_av_lengths_tolerance():
    check_av_lengths(Path("v.mp4"), 10.0, Path("a.wav"), 10.4, 0.5)
    with pytest.raises(MediaError, match=r"a\.wav\) is 0\.60 s longer"):
        check_av_lengths(Path("v.mp4"), 10.0, Path("a.wav"), 10.6, 0.5)


# ------------------------------------------------------------------------------------------ memory


@pytest.mark.slow
def test_streaming_decode_memory_is_bounded(tmp_path):
    """Decoding 40 s of 25 fps video must not hold more than a few frames at once."""
    h, w = 96, 160
    p = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    write_video(p, (np.roll(base, k, axis=1) for k in range(1000)), fps=25, crf=30)
    tl = video_timeline(p)
    wanted = select_frames(tl, 0.0, None, 25)
    frame_bytes = h * w * 3
    tracemalloc.start()
    count = 0
    for frame in iter_frames_at(p, wanted):
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 1000
    assert peak < 20 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"   # vs 1000 if accumulated


# --------------------------------------------------------------------------- 30 fps real clip, in sync


def _mouth_audio_lag(frames: np.ndarray, audio: np.ndarray, max_lag: int = 8) -> tuple[int, np.ndarray]:
    """Lag (frames) at which mouth opening best correlates with audio energy; positive: audio later."""
    from data_recipes.faces import detect

    track = detect(frames)
    lm = track.landmarks478
    face_h = lm[:, 152, 1] - lm[:, 10, 1]
    opening = (lm[:, 14, 1] - lm[:, 13, 1]) / face_h
    n = len(frames)
    energy = np.log(np.sqrt(np.mean(audio[: n * 640].reshape(n, 640) ** 2, axis=1)) + 1e-4)
    o = (opening - opening.mean()) / opening.std()
    e = (energy - energy.mean()) / energy.std()
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array([np.mean(o[max(0, -L): n - max(0, L)] * e[max(0, L): n - max(0, -L)]) for L in lags])
    return int(lags[np.argmax(corr)]), corr


@pytest.mark.slow
def test_30fps_real_clip_comes_out_at_25fps_in_sync(tmp_path, isolated_dirs, demo_video):
    """Re-encode 12 s of a real 25 fps clip at 30 fps (PyAV), normalise both, compare.

    The 30 fps version shows, for frame j, the original frame on screen at its middle
    (floor((j + 0.5) * 25 / 30)); its audio is the original track. After normalising it back to
    25 fps, frame k must be original frame k (midpoint rule both ways), and the lag at which mouth
    opening (landmarks) best correlates with audio energy must match the original's within 1 frame.
    (In this source the peak sits near +5 frames, i.e. its audio trails the mouth by about 0.2 s;
    what matters here is that the rate change does not move it.)
    """
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    seconds = 12
    original = read_video_frames(demo_video)[: seconds * 25]
    audio48 = read_audio(demo_video, 48000)[: seconds * 48000]
    src30 = (original[int(np.floor((j + 0.5) * 25 / 30))] for j in range(seconds * 30))
    p30 = write_video(tmp_path / "obama_30fps.mp4", src30, fps=30, audio=audio48, sample_rate=48000, crf=12)
    assert probe(p30).video.fps == pytest.approx(30.0)

    recipe = Recipe(Cache(isolated_dirs / "cache"))
    c25 = recipe.prepare(Clip("orig", demo_video, subject="o", split="test", start=0.0, end=float(seconds)))
    c30 = recipe.prepare(Clip("thirty", p30, subject="o", split="test"))
    assert c30.num_frames == c25.num_frames == seconds * 25
    assert c30.meta["source_fps"] == pytest.approx(30.0)
    f25, f30 = c25.frames(), c30.frames()

    # frame identity: each output frame is closest to the original frame with the same index
    diffs = np.stack([np.abs(f30.astype(np.int16) - np.roll(f25, s, axis=0).astype(np.int16)).mean(axis=(1, 2, 3))
                      for s in (-1, 0, 1)], axis=1)[1:-1]
    moving = np.sort(diffs, axis=1)[:, 1] > 1.5 * np.sort(diffs, axis=1)[:, 0]   # neighbours distinguishable
    assert moving.sum() > 100
    assert (np.argmin(diffs[moving], axis=1) == 1).all()

    # audio: same samples up to AAC coding, no offset
    a25, a30 = c25.audio(), c30.audio()
    xc = np.correlate(a30[8000:40000], a25[8000 - 64:40000 + 64], "valid")
    assert int(np.argmax(xc)) == 64

    lag25, corr25 = _mouth_audio_lag(f25, a25)
    lag30, corr30 = _mouth_audio_lag(f30, a30)
    assert corr25.max() > 0.2 and corr30.max() > 0.2          # a real, measurable sync peak
    assert abs(lag25 - lag30) <= 1, (lag25, lag30, corr25.round(2), corr30.round(2))
