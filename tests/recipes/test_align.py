"""The 25 fps alignment rule shared by mel, HuBERT and f0."""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.audio import align
from data_recipes.audio.hubert import expected_rows
from data_recipes.audio.mel import inference_windows, training_window_start, wav2lip_mel
from data_recipes.audio.pitch import geneface_mel_length


def test_frame_rows_rule():
    r = align.frame_rows(7)
    assert r.hubert == r.f0 == (14, 16)
    assert r.mel == (22, 38)  # int(80 * 7 / 25) = int(22.4)
    # the mel rule is Wav2Lip's training rule, frame by frame
    assert all(align.frame_rows(i).mel[0] == training_window_start(i) for i in range(500))
    with pytest.raises(ValueError):
        align.frame_rows(-1)


@pytest.mark.parametrize("frames", [1, 25, 75, 501])
def test_raw_stream_lengths_and_padding(frames):
    n = 640 * frames
    # both 50 Hz streams come out one row short of 2 T, which the stages edge-pad
    assert expected_rows(n) == geneface_mel_length(n) == 2 * frames - 1
    assert align.expected_rows_50hz(frames) == 2 * frames
    assert align.mel_columns(n) == 1 + 16 * frames // 5
    # the last frame's 50 Hz rows exist after padding
    assert align.frame_rows(frames - 1).hubert[1] == align.expected_rows_50hz(frames)


def test_fit_rows_edge_pads_and_trims():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    padded = align.fit_rows(x, 7)
    np.testing.assert_array_equal(padded[5:], [[8, 9], [8, 9]])
    np.testing.assert_array_equal(align.fit_rows(x, 3), x[:3])
    with pytest.raises(ValueError):
        align.fit_rows(x[:0], 2)


def test_pad_to_multiple_of_8_like_geneface_inference():
    x = np.ones((149, 4), np.float32)
    y = align.pad_rows_to_multiple(x, 8)
    assert y.shape == (152, 4) and (y[149:] == 0).all() and (y[:149] == 1).all()
    assert align.pad_rows_to_multiple(y, 8) is y


def test_mel_window_lookup_matches_stored_mel():
    wav = np.random.default_rng(1).normal(0, 0.1, 640 * 30).astype(np.float32)
    mel = wav2lip_mel(wav)
    w = align.frame_mel_window(mel, 10)
    np.testing.assert_array_equal(w, mel[:, 32:48])
    # near the end: the training rule runs past the mel; clamping gives inference's last window
    with pytest.raises(IndexError):
        align.frame_mel_window(mel, 29)
    last = inference_windows(mel)[-1]
    np.testing.assert_array_equal(align.frame_mel_window(mel, 29, clamp_end=True), mel[:, last:last + 16])
    feats = np.arange(60)[:, None]
    np.testing.assert_array_equal(align.frame_features_50hz(feats, 29), [[58], [59]])
    with pytest.raises(IndexError):
        align.frame_features_50hz(feats, 30)
