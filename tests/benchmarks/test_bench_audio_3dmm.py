"""Speed of the audio features (mel, f0, HuBERT) and of the 3DMM fit.

Run: pytest tests/benchmarks/test_bench_audio_3dmm.py --benchmark-only
Numbers and the machine go into docs/BENCHMARKS.md. HuBERT runs with random weights (no
HuBERT checkpoint exists here): a tiny model, and one with hubert-large's exact architecture
(1024 hidden, 24 layers, 16 heads, 4096 FFN, layer-norm conv stack) whose compute equals the real one.
"""

from __future__ import annotations

import numpy as np
import pytest

SECONDS = 10.0


@pytest.fixture(scope="module")
def speech(shared_data):
    import librosa

    wav, _ = librosa.load(str(shared_data / "audio" / "english_60s.wav"), sr=16000)
    return wav[: int(16000 * SECONDS)]


def _run(benchmark, fn, rounds=3):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def test_wav2lip_mel_10s(benchmark, speech):
    from data_recipes.audio.mel import wav2lip_mel

    benchmark.extra_info["audio_seconds"] = SECONDS
    mel = _run(benchmark, lambda: wav2lip_mel(speech), rounds=5)
    assert mel.shape == (80, 1 + len(speech) // 200)


def test_f0_praat_10s(benchmark, speech):
    from data_recipes.audio.pitch import geneface_f0

    benchmark.extra_info["audio_seconds"] = SECONDS
    f0 = _run(benchmark, lambda: geneface_f0(speech), rounds=5)
    assert (f0 > 0).any()


def _hubert(tmp_path, **arch):
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    cfg = HubertConfig(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, **arch)
    model = HubertModel(cfg).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    return model, extractor


def test_hubert_tiny_random_10s(benchmark, speech, tmp_path):
    from data_recipes.audio.hubert import hubert_features

    model, extractor = _hubert(tmp_path, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                               num_conv_pos_embedding_groups=2)
    benchmark.extra_info["audio_seconds"] = SECONDS
    out = _run(benchmark, lambda: hubert_features(speech, model, extractor), rounds=5)
    assert out.shape == ((len(speech) - 80) // 320, 32)


@pytest.mark.parametrize("threads", [1, 2])
def test_hubert_large_architecture_random_10s(benchmark, speech, tmp_path, threads):
    from data_recipes.audio.hubert import hubert_features
    from bench.threads import torch_threads

    model, extractor = _hubert(tmp_path, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096)
    params = sum(p.numel() for p in model.parameters())
    benchmark.extra_info.update(audio_seconds=SECONDS, parameters=params, threads=threads)
    with torch_threads(threads):
        out = _run(benchmark, lambda: hubert_features(speech, model, extractor), rounds=2)
    assert out.shape == ((len(speech) - 80) // 320, 1024)


@pytest.fixture(scope="module")
def obama_track(shared_data, tmp_path_factory):
    """FaceTrack of the 20 s, 500-frame obama clip (through the faces stage, in a temporary cache)."""
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.faces import FaceTrack
    from data_recipes.recipe import Recipe

    root = tmp_path_factory.mktemp("bench3dmm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKBENCH_CACHE", str(root / "cache"))
        recipe = Recipe(Cache(root / "cache"))
        clip = Clip(id="obama", video=shared_data / "clips" / "obama_20s.mp4", subject="obama", split="test")
        faces = recipe.output(clip, "faces")
        meta = faces.json()
        return FaceTrack.load(faces.folder), int(meta["width"]), int(meta["height"])


def test_threedmm_fit_obama_20s(benchmark, obama_track):
    """Whole open-model fit of a 20 s clip (model building + all fit stages); frames/s in extra_info."""
    from data_recipes.threedmm.stage import fit_track

    track, w, h = obama_track
    result, _ = _run(benchmark, lambda: fit_track(track, w, h), rounds=2)
    benchmark.extra_info.update(frames=len(track), mean_error_px=float(np.nanmean(result.error_px)))
    assert np.nanmean(result.error_px) < 1.5
