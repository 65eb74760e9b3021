"""The official scripts' file conversions: int16 audio as ffmpeg makes it, JPEGs at default quality."""

from __future__ import annotations

import subprocess

import numpy as np

from metrics.sync import inputs


def test_pcm16_equals_ffmpeg_pcm_s16le():
    """The audio the official code reads is ffmpeg's pcm_s16le; ours must be bit-identical."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1.3, 1.3, 50_000),                      # includes clipping
                        np.array([0.5, 1.5, 2.5, -0.5, -1.5, 32767.5]) / 32768,  # rounding ties
                        [1.0, -1.0, 0.0]]).astype(np.float32)
    cmd = [inputs.ffmpeg_exe(), "-loglevel", "error", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", "pipe:0",
           "-acodec", "pcm_s16le", "-f", "s16le", "pipe:1"]
    want = np.frombuffer(subprocess.run(cmd, input=x.tobytes(), capture_output=True, check=True).stdout, np.int16)
    np.testing.assert_array_equal(inputs.pcm16(x), want)


def test_default_quality_jpegs_are_lossy_and_sized_like_the_input(tmp_path):
    yy, xx = np.mgrid[0:96, 0:128]
    frames = np.stack([np.stack([(xx * 2 + k) % 256, yy * 2, (xx + yy) % 256], axis=2) for k in range(3)]).astype(np.uint8)
    paths = inputs.write_jpegs(frames, tmp_path)
    assert [p.name for p in paths] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    back = np.stack([inputs.read_bgr(p) for p in paths])[..., ::-1]
    assert back.shape == frames.shape
    err = np.abs(back.astype(int) - frames).mean()
    assert 0.5 < err < 40  # lossy, but the same picture
    src = inputs.JpegFrames(paths)
    assert src(1, 3).shape == (2, 224, 224, 3)
