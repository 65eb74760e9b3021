"""Wav2Lip mel parity: data_recipes.audio.mel against a from-the-facts reference written here.

The reference follows REFERENCE.md's Wav2Lip hparams (Rudrabha/Wav2Lip @ 5c90fa9 audio.py/hparams.py):
pre-emphasis 0.97, centred STFT n_fft 800 / hop 200 / Hann 800 (librosa 0.7 pads by reflection),
Slaney mel basis 80 bands 55-7600 Hz, 20 log10(max(1e-5, mel)) - 20 dB, symmetric normalisation to
[-4, 4]. The STFT is framed by hand with numpy (not librosa.stft) so that centring, padding and the
periodic window are checked too; only the mel filterbank comes from librosa, as in the original.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.audio import mel as melmod

SR = 16000


def _load(path):
    import librosa

    wav, _ = librosa.load(str(path), sr=SR, mono=True)  # resampled to 16 kHz like Wav2Lip's audio.load_wav
    return wav


def reference_mel(wav: np.ndarray, hop: int = 200, fmin: float = 55.0, preemph: float = 0.97,
                  pad_mode: str = "reflect") -> np.ndarray:
    import librosa

    n_fft = 800
    x = np.asarray(wav, dtype=np.float64)
    y = x.copy()
    y[1:] -= preemph * x[:-1]                     # y[n] = x[n] - k x[n-1]
    pad = n_fft // 2
    padded = np.pad(y, pad, mode=pad_mode)        # centred frames
    n_frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spec = np.abs(np.fft.rfft(padded[idx] * window, axis=1)).T       # (401, frames)
    basis = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=80, fmin=fmin, fmax=7600.0)
    m = basis @ spec
    db = 20.0 * np.log10(np.maximum(1e-5, m)) - 20.0
    return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0)


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")


@pytest.fixture(scope="module")
def real_speech(shared_data):
    return {name: _load(shared_data / "audio" / name) for name in ("english_radio_8s.wav", "chinese_20s.wav")}


@pytest.mark.parametrize("name", ["english_radio_8s.wav", "chinese_20s.wav"])
def test_mel_matches_reference_on_real_speech(real_speech, name):
    wav = real_speech[name]
    ours = melmod.wav2lip_mel(wav)
    ref = reference_mel(wav)
    assert ours.dtype == np.float32 and ours.shape == (80, 1 + len(wav) // 200)
    assert _max_err(ours, ref) < 1e-5
    # a real signal spans most of the normalised range (the parity is not on a clipped constant)
    assert ours.min() < -3.0 and ours.max() > 1.0


def test_constant_padding_differs_only_at_the_edges(real_speech):
    wav = real_speech["english_radio_8s.wav"]
    reflect = melmod.wav2lip_mel(wav, pad_mode="reflect")
    constant = melmod.wav2lip_mel(wav, pad_mode="constant")
    assert _max_err(constant, reference_mel(wav, pad_mode="constant")) < 1e-5
    differs = np.abs(reflect - constant).max(axis=0) > 1e-6
    # n_fft / 2 = 400 padded samples reach 400 / 200 = 2 frames into each end
    assert differs[:2].all() and differs[-2:].all() and not differs[2:-2].any()


@pytest.mark.parametrize("attr,value", [("HOP", 160), ("FMIN", 95.0), ("PREEMPHASIS", 0.9)])
def test_parity_check_catches_a_changed_hparam(real_speech, monkeypatch, attr, value):
    """The parity comparison above must fail when any one official hparam changes."""
    wav = real_speech["english_radio_8s.wav"][: SR * 3]
    monkeypatch.setattr(melmod, attr, value)
    melmod._mel_basis.cache_clear()
    try:
        mutated = melmod.wav2lip_mel(wav)
    finally:
        melmod._mel_basis.cache_clear()
    assert _max_err(mutated, reference_mel(wav)) > 1e-2
    # ... and the reference computed with the same change agrees again (the mutant is well-formed)
    kw = {"HOP": "hop", "FMIN": "fmin", "PREEMPHASIS": "preemph"}[attr]
    monkeypatch.setattr(melmod, attr, value)
    try:
        assert _max_err(melmod.wav2lip_mel(wav), reference_mel(wav, **{kw: value})) < 1e-5
    finally:
        melmod._mel_basis.cache_clear()


def test_official_inference_windowing_gives_72_windows_for_3s():
    wav = np.random.default_rng(0).normal(0, 0.1, SR * 3).astype(np.float32)
    mel = melmod.wav2lip_mel(wav)
    assert mel.shape[1] == 241  # 1 + 48000 // 200
    starts = melmod.inference_windows(mel, fps=25)
    # independent derivation: window i starts at int(i * 3.2) while start + 16 <= 241, i.e. i <= 70
    # (int(70 * 3.2) = 224, int(71 * 3.2) = 227 > 225), then one last window at 241 - 16 = 225
    assert len(starts) == 72
    assert starts[:71] == [int(i * 80 / 25) for i in range(71)] and starts[-1] == 225


def test_training_window_rule():
    assert [melmod.training_window_start(i) for i in (0, 1, 5, 24, 25)] == [0, 3, 16, 76, 80]


def test_too_short_audio_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        melmod.inference_windows(np.zeros((80, 10), np.float32))
