"""f0 with GeneFace++'s Praat settings: known tones, silence, real speech and the 25 fps alignment."""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.audio import pitch
from data_recipes.audio.align import frame_rows

SR = 16000


def _tone(hz: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("hz", [110.0, 220.0, 440.0])
def test_tone_of_known_pitch(hz):
    f0 = pitch.geneface_f0(_tone(hz, 2.0))
    inner = f0[2:-2]  # Praat's first/last windows overlap the signal edges
    assert (inner > 0).all()
    assert np.abs(inner / hz - 1.0).max() < 0.01


def test_silence_is_unvoiced():
    f0 = pitch.geneface_f0(np.zeros(SR * 2, np.float32))
    assert f0.shape == (pitch.geneface_mel_length(SR * 2),) and (f0 == 0).all()


def test_tone_outside_the_range_is_unvoiced_or_octave_free():
    # 40 Hz is below the 80 Hz floor: Praat may not report it
    f0 = pitch.geneface_f0(_tone(40.0, 1.0))
    assert not np.any(np.abs(f0 - 40.0) < 2.0)


def test_praat_call_is_geneface_call():
    """Same numbers as the original's call written out here: right-pad to (n // 320 + 1) * 320,
    to_pitch_ac(time_step=0.02, voicing_threshold=0.6, pitch_floor=80, pitch_ceiling=750)."""
    import parselmouth

    wav = _tone(180.0, 1.3) + 0.01 * np.random.default_rng(0).normal(size=int(SR * 1.3)).astype(np.float32)
    padded = np.pad(wav.astype(np.float64), (0, (len(wav) // 320 + 1) * 320 - len(wav)))
    direct = parselmouth.Sound(padded, SR).to_pitch_ac(time_step=0.02, voicing_threshold=0.6, pitch_floor=80,
                                                      pitch_ceiling=750).selected_array["frequency"]
    np.testing.assert_array_equal(pitch.praat_f0(wav), direct)


@pytest.mark.parametrize("n", [640 * 25, 640 * 75, 640 * 75 + 123, 16000 * 3 + 7])
def test_length_follows_geneface_mel(n):
    f0 = pitch.geneface_f0(_tone(150.0, n / SR))
    assert len(f0) == 1 + (n - 512) // 320


def test_real_speech_in_range(shared_data):
    import librosa

    for name in ("english_radio_8s.wav", "chinese_20s.wav"):
        wav, _ = librosa.load(str(shared_data / "audio" / name), sr=SR)
        f0 = pitch.geneface_f0(wav)
        voiced = f0[f0 > 0]
        # frame energy on the same 20 ms grid: voicing must sit where there is sound, and speech
        # has unvoiced consonants and pauses (chinese_20s is about 65 % pauses)
        rms = librosa.feature.rms(y=wav, frame_length=640, hop_length=320)[0][: len(f0)]
        loud = rms > 0.05 * rms.max()
        is_voiced = f0[: len(rms)] > 0
        assert (is_voiced & loud).sum() >= 0.95 * is_voiced.sum(), name
        assert 0.3 < is_voiced[loud].mean() < 0.98, name
        assert voiced.min() >= 80.0 and voiced.max() <= 750.0, name
        assert 80.0 < np.median(voiced) < 300.0, name  # an adult speaking voice


def test_coarse_bins():
    f0 = np.array([0.0, 50.0, 100.0, 200.0, 400.0, 1100.0, 5000.0])
    c = pitch.f0_to_coarse(f0)
    assert c[0] == 1 and c[1] == 1 and c[5] == 255 and c[6] == 255
    assert np.all(np.diff(c[1:6]) > 0)
    # bin of 200 Hz from the mel formula: 1 + 254 * (m(200) - m(50)) / (m(1100) - m(50)), m(f) = 1127 ln(1 + f/700)
    m = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    assert c[3] == round(1 + 254 * (m(200) - m(50)) / (m(1100) - m(50)))


def test_stage_on_real_clip(shared_data, isolated_dirs):
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    recipe = Recipe(Cache(isolated_dirs / "cache"))
    clip = Clip(id="may", video=shared_data / "clips" / "may_5s.mp4", subject="may", split="test")
    out = recipe.output(clip, "f0")
    audio = recipe.output(clip, "normalise").array("audio")
    t = len(audio) // 640
    f0, coarse, meta = out.array("f0"), out.array("f0_coarse"), out.json()
    assert f0.shape == coarse.shape == (2 * t,) and f0.dtype == np.float32
    assert meta["raw_rows"] == 2 * t - 1
    np.testing.assert_allclose(f0[:-1], pitch.geneface_f0(audio).astype(np.float32))
    assert f0[-1] == f0[-2]
    voiced = f0[f0 > 0]
    assert len(voiced) > 0.2 * len(f0) and voiced.min() >= 80 and voiced.max() <= 750
    a, b = frame_rows(10).f0
    assert (a, b) == (20, 22)
