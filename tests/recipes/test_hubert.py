"""HuBERT stage: real loading code on tiny random models saved in the official folder layout.

The models are random (no HuBERT weights exist on this machine) but keep HuBERT's conv feature
encoder geometry (kernels 10,3,3,3,3,2,2 / strides 5,2,2,2,2,2,2 = 400-sample receptive field,
320-sample stride), so the row arithmetic and chunking are the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.audio import hubert as hub
from data_recipes.audio.align import frame_rows


def _tiny_config(**kw):
    from transformers import HubertConfig

    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(16,) * 7, vocab_size=12, feat_extract_norm="layer", do_stable_layer_norm=True,
                conv_bias=True, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    base.update(kw)
    return HubertConfig(**base)


def _save_folder(folder, fmt="safetensors", seed=0, do_normalize=True):
    """A HubertForCTC checkpoint + feature extractor config in the hubert-large-ls960-ft layout."""
    import torch
    from transformers import HubertForCTC, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    model = HubertForCTC(_tiny_config()).eval()
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(str(folder))
    else:  # the official repo ships pytorch_model.bin (a plain torch.save of the state dict)
        model.config.save_pretrained(str(folder))
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=do_normalize,
                             return_attention_mask=True).save_pretrained(str(folder))
    return model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights") / hub.MODEL_FOLDER
    ctc = _save_folder(folder)
    return folder, ctc


@pytest.fixture(scope="module")
def speech(shared_data):
    import librosa

    wav, _ = librosa.load(str(shared_data / "audio" / "english_radio_8s.wav"), sr=16000)
    return wav


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_ctc_checkpoint_loads_into_hubert_model(tmp_path, fmt):
    import torch

    ctc = _save_folder(tmp_path / "m", fmt=fmt, seed=3)
    model, extractor = hub.load_hubert(tmp_path / "m")
    assert type(model).__name__ == "HubertModel" and not model.training
    ours, theirs = model.state_dict(), ctc.hubert.state_dict()
    assert set(ours) == set(theirs)  # the `hubert.` prefix is gone, lm_head dropped
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert extractor.do_normalize


def test_conv_geometry_of_hubert_large_config():
    from transformers import HubertConfig

    assert hub.conv_geometry(HubertConfig()) == (400, 320)
    # (n - 80) // 320, the count GeneFace++ keeps
    assert [hub.expected_rows(n) for n in (399, 400, 719, 720, 16000, 640 * 75)] == [0, 1, 1, 2, 49, 149]


def test_chunk_bounds_follow_geneface_rule():
    b = hub.chunk_bounds(700_000, 400, 320, 1000)
    assert b == [(0, 320_080), (320_000, 640_080), (640_000, 700_000)]
    # every chunk's frames abut: 1000 per full chunk, then the tail
    frames = [(stop - start - 400) // 320 + 1 for start, stop in b]
    assert frames == [1000, 1000, 187] and sum(frames) == hub.expected_rows(700_000)
    # a 300-sample tail is shorter than the receptive field: skipped, and nothing is lost
    assert hub.chunk_bounds(640_300, 400, 320, 1000) == [(0, 320_080), (320_000, 640_080)]
    assert hub.expected_rows(640_300) == 2000


def test_features_equal_a_direct_forward_on_normalised_audio(tiny_folder, speech):
    """Independent check: zero-mean/unit-variance input, one forward pass, trimmed to (n - 80) // 320."""
    import torch

    folder, ctc = tiny_folder
    model, extractor = hub.load_hubert(folder)
    wav = speech[: 16000 * 2]
    ours = hub.hubert_features(wav, model, extractor, chunk_frames=0)
    x = wav.astype(np.float64)
    x = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
    with torch.no_grad():
        direct = ctc.hubert(torch.from_numpy(x)[None]).last_hidden_state[0].numpy()
    assert ours.shape == ((len(wav) - 80) // 320, 32) == direct[: ours.shape[0]].shape
    np.testing.assert_allclose(ours, direct[: ours.shape[0]], atol=2e-5)


def test_chunked_features_equal_per_chunk_forwards(tiny_folder, speech):
    import torch

    folder, _ = tiny_folder
    model, extractor = hub.load_hubert(folder)
    wav = speech[: 16000 * 3]
    chunked = hub.hubert_features(wav, model, extractor, chunk_frames=50)
    values = extractor(wav, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        second = model(values[:, 16000:16000 + 16080]).last_hidden_state[0].numpy()
    assert chunked.shape[0] == (len(wav) - 80) // 320
    np.testing.assert_allclose(chunked[50:100], second, atol=2e-5)
    assert not np.allclose(chunked, hub.hubert_features(wav, model, extractor, chunk_frames=0), atol=1e-3)


def _run_stage(clip_path, cfg, tmp):
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    recipe = Recipe(Cache(tmp / "cache"), configs={"hubert": cfg})
    clip = Clip(id="clip", video=clip_path, subject="s", split="test", end=3.0)
    return recipe.output(clip, "hubert"), recipe.output(clip, "normalise")


def test_stage_aligns_two_rows_per_frame_and_is_deterministic(tiny_folder, shared_data, isolated_dirs):
    folder, _ = tiny_folder
    cfg = hub.HubertConfig(model_dir=str(folder))
    out, norm = _run_stage(shared_data / "clips" / "may_5s.mp4", cfg, isolated_dirs)
    t = norm.json()["num_frames"]
    feats = out.array("hubert")
    meta = out.json()
    assert t == 75 and feats.shape == (2 * t, 32) and feats.dtype == np.float32
    assert meta["raw_rows"] == 2 * t - 1 and meta["edge_padded_rows"] == 1
    np.testing.assert_array_equal(feats[-1], feats[-2])  # the one padded row repeats the last real one
    start, stop = frame_rows(t - 1).hubert
    assert feats[start:stop].shape == (2, 32)
    # the stored rows are the features of the normalised audio (same code path, same numbers)
    model, extractor = hub.load_hubert(folder)
    again = hub.hubert_features(norm.array("audio"), model, extractor)
    np.testing.assert_array_equal(feats[: 2 * t - 1], again)
    assert len(meta["weights_sha256"]) == 64


def test_unavailable_without_weights_says_what_to_put_where(isolated_dirs):
    from data_recipes.recipe import Recipe
    from bench.cache import Cache

    a = hub.hubert_availability(hub.HubertConfig())
    assert not a.ok
    expected_folder = isolated_dirs / "weights" / hub.MODEL_FOLDER
    assert str(expected_folder) in a.reason
    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin", "model.safetensors"):
        assert name in a.reason
    assert "never downloaded" in a.reason
    # a partial folder names only what is missing
    expected_folder.mkdir(parents=True)
    (expected_folder / "config.json").write_text("{}")
    partial = hub.hubert_availability(hub.HubertConfig())
    assert "lacks preprocessor_config.json, model.safetensors or pytorch_model.bin;" in partial.reason
    # the recipe refuses the stage with the same reason
    assert not Recipe(Cache(isolated_dirs / "c")).availability("hubert").ok


def test_loading_never_reaches_the_network(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks"):
        hub.load_hubert(tmp_path / "nothing-here")
