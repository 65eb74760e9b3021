"""Frame and sample rates of real media (issue 16 "what held"): a 60 fps and a variable-frame-rate
copy of the demo come out as exactly the 25 fps frames; 8 kHz, 44.1 kHz and 48 kHz stereo audio
come out at exactly 640 samples per frame and match the 16 kHz reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reliability.media import ffmpeg


def _lossless_25(demo, out):
    """2 s of the demo as lossless RGB H.264 at 25 fps: the frames every other copy must reproduce."""
    ffmpeg("-i", str(demo), "-t", "2", "-an", "-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast", str(out))
    return out


def _frames(path, start: float = 0.0, end: float = 2.0) -> np.ndarray:
    """The 25 fps frames "normalise" maps [start, end) of `path` to, decoded (the copies have no audio,
    so only the frame map is exercised)."""
    from data_recipes.media import iter_frames_at, select_frames, video_timeline

    return np.stack(list(iter_frames_at(path, select_frames(video_timeline(path), start, end, 25))))


def test_60fps_copy_maps_to_exactly_the_25fps_frames(tmp_path, demo_video):
    base = _lossless_25(demo_video, tmp_path / "base.mkv")
    fast = tmp_path / "fast60.mkv"
    ffmpeg("-i", str(base), "-vf", "fps=60", "-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast", str(fast))
    a, b = _frames(base), _frames(fast)
    assert a.shape == b.shape == (50, 450, 450, 3)
    np.testing.assert_array_equal(a, b)


def test_variable_frame_rate_copy_maps_to_exactly_the_25fps_frames(tmp_path, demo_video):
    """Every source frame kept, odd frames stamped 1/50 s late: frames last 3/50 s and 1/50 s in turn."""
    from data_recipes.media import probe

    base = _lossless_25(demo_video, tmp_path / "base.mkv")
    vfr = tmp_path / "vfr.mkv"
    ffmpeg("-i", str(base), "-vf", "setpts='(N*2+if(mod(N,2),1,0))/50/TB'", "-fps_mode", "vfr",
           "-enc_time_base", "1:50", "-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast", str(vfr))
    assert probe(vfr).video.variable_frame_rate
    a, b = _frames(base), _frames(vfr)
    assert len(b) >= 49
    np.testing.assert_array_equal(a[:len(b)], b)


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 2), (48000, 2)])
def test_audio_rates_come_out_at_640_samples_per_frame(tmp_path, demo_video, isolated_dirs, rate, channels):
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    clip_path = tmp_path / f"a{rate}.mov"     # PCM at 8 kHz (AAC would band-limit it further), AAC otherwise
    ffmpeg("-i", str(demo_video), "-t", "3", "-c:v", "copy", "-ar", str(rate), "-ac", str(channels),
           "-c:a", "pcm_s16le" if rate == 8000 else "aac", str(clip_path))
    recipe = Recipe(Cache(isolated_dirs / "cache"))
    clip = recipe.prepare(Clip("a", clip_path, "obama", "test", start=0.0, end=2.0))
    ref = recipe.prepare(Clip("ref", demo_video, "obama", "test", start=0.0, end=2.0))
    assert clip.num_frames == 50 and len(clip.audio()) == 50 * 640
    # the same speech: what survives the band limit of the lower rate correlates with the reference
    x, y = clip.audio().astype(np.float64), ref.audio().astype(np.float64)
    if rate == 8000:  # only < 4 kHz survives: compare below it
        import soxr

        x, y = soxr.resample(x, 16000, 8000), soxr.resample(y, 16000, 8000)
    corr = float(np.corrcoef(x, y)[0, 1])
    assert corr > 0.95, corr
