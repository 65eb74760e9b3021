"""LSE-D / LSE-C: architecture, weight loading, and numbers against an independent re-computation.

The independent re-computation below follows syncnet_python's SyncNetInstance.evaluate step by step
(windows stacked by slicing, per-window distance rows against the zero-padded audio features, mean,
min, median) in plain numpy, with its own ffmpeg calls for the JPEG files and the int16 audio, and
with the published constants written out (vshift 15, MFCC frames [4v, 4v + 20), windows = usable - 5).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from metrics.sync import inputs, lse, pipeline
from metrics.sync.model import SyncNetModel, build_syncnet
from tests.metrics.sync_common import decode_clip, save_like_original, seeded_syncnet

CLIP = "clips/vox/00002.mp4"   # 224x224 face crops, 25 fps, 16 kHz: the "lrs" protocol's kind of video
N_FRAMES = 30                  # 25 windows: enough for a meaningful curve, cheap on 2 cores

# ------------------------------------------------------------------------------ architecture facts

# syncnet_python SyncNetModel.S: Sequential indices of the convs (ReLU / MaxPool entries hold no
# parameters but take indices), their shapes, and the FC heads.
AUD_CONVS = [(0, (64, 1, 3, 3)), (4, (192, 64, 3, 3)), (8, (384, 192, 3, 3)), (11, (256, 384, 3, 3)),
             (14, (256, 256, 3, 3)), (18, (512, 256, 5, 4))]
LIP_CONVS = [(0, (96, 3, 5, 7, 7)), (4, (256, 96, 1, 5, 5)), (8, (256, 256, 1, 3, 3)), (11, (256, 256, 1, 3, 3)),
             (14, (256, 256, 1, 3, 3)), (18, (512, 256, 1, 6, 6))]


def expected_state_layout() -> list[tuple[str, tuple[int, ...]]]:
    def convs(prefix: str, table):
        out = []
        for idx, shape in table:
            out += [(f"{prefix}.{idx}.weight", shape), (f"{prefix}.{idx}.bias", (shape[0],))]
            bn = f"{prefix}.{idx + 1}"
            out += [(f"{bn}.weight", (shape[0],)), (f"{bn}.bias", (shape[0],)), (f"{bn}.running_mean", (shape[0],)),
                    (f"{bn}.running_var", (shape[0],)), (f"{bn}.num_batches_tracked", ())]
        return out

    def fc(prefix: str):
        return [(f"{prefix}.0.weight", (512, 512)), (f"{prefix}.0.bias", (512,)), (f"{prefix}.1.weight", (512,)),
                (f"{prefix}.1.bias", (512,)), (f"{prefix}.1.running_mean", (512,)),
                (f"{prefix}.1.running_var", (512,)), (f"{prefix}.1.num_batches_tracked", ()),
                (f"{prefix}.3.weight", (1024, 512)), (f"{prefix}.3.bias", (1024,))]

    # attribute order of S.__init__: netcnnaud, netfcaud, netfclip, netcnnlip
    return convs("netcnnaud", AUD_CONVS) + fc("netfcaud") + fc("netfclip") + convs("netcnnlip", LIP_CONVS)


def test_state_dict_keys_and_shapes_equal_the_published_model():
    got = [(k, tuple(v.shape)) for k, v in SyncNetModel().state_dict().items()]
    assert got == expected_state_layout()


def test_towers_give_one_embedding_per_window():
    m = SyncNetModel().eval()
    with torch.inference_mode():
        assert m.forward_aud(torch.zeros(3, 1, 13, 20)).shape == (3, 1024)
        assert m.forward_lip(torch.zeros(2, 3, 5, 224, 224)).shape == (2, 1024)
        clip = torch.rand(1, 3, 8, 224, 224) * 255
        stacked = torch.cat([clip[:, :, v:v + 5] for v in range(4)])
        np.testing.assert_allclose(m.forward_lip_clip(clip).numpy(), m.forward_lip(stacked).numpy(),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("drop_counters", [False, True])
def test_original_file_format_loads_strictly(tmp_path, legacy, drop_counters):
    src = seeded_syncnet(3)
    path = save_like_original(src, tmp_path / "syncnet_v2.model", legacy=legacy, drop_batch_counters=drop_counters)
    got = build_syncnet(path)
    for (k, a), (k2, b) in zip(src.state_dict().items(), got.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert not got.training


def test_foreign_file_is_rejected(tmp_path):
    state = seeded_syncnet(0).state_dict()
    state["netfclip.5.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.model")
    with pytest.raises(ValueError, match="unexpected"):
        build_syncnet(tmp_path / "extra.model")
    state = seeded_syncnet(0).state_dict()
    del state["netcnnlip.18.weight"]
    torch.save(state, tmp_path / "missing.model")
    with pytest.raises(ValueError, match="missing"):
        build_syncnet(tmp_path / "missing.model")
    state = seeded_syncnet(0).state_dict()
    state["netfcaud.3.weight"] = torch.zeros(512, 512)
    torch.save(state, tmp_path / "shape.model")
    with pytest.raises(RuntimeError, match="size mismatch"):
        build_syncnet(tmp_path / "shape.model")


# --------------------------------------------------------------------------- scoring arithmetic

def test_offset_sign_and_first_minimum_on_constructed_embeddings():
    """Audio delayed by k frames (audio window v + k matches video window v) gives offset -k."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(80, 16)).astype(np.float32)
    for k in (-4, 0, 3):
        lip = base[20:60]
        aud = base[20 - k:60 - k]            # aud[v + k] == lip[v]
        res = lse.sync_scores(lse.calc_pdist(lip, aud))
        assert res.offset == -k
        assert res.curve.shape == (31,)
        assert res.distance == pytest.approx(float(res.curve[15 + k]))
    flat = lse.sync_scores(np.ones((5, 31), np.float32))
    assert flat.offset == 15 and flat.confidence == 0.0  # first minimum (index 0) wins


def test_calc_pdist_matches_the_row_by_row_definition():
    rng = np.random.default_rng(1)
    lip, aud = rng.normal(size=(12, 7)).astype(np.float32), rng.normal(size=(12, 7)).astype(np.float32)
    padded = np.concatenate([np.zeros((15, 7)), aud, np.zeros((15, 7))])
    want = np.stack([np.linalg.norm(lip[i][None] - padded[i:i + 31] + 1e-6, axis=1) for i in range(12)])
    np.testing.assert_allclose(lse.calc_pdist(lip, aud), want, rtol=1e-5)


def test_lengths_follow_the_official_trimming():
    assert lse.usable_length(100, 100 * 640) == 100
    assert lse.usable_length(100, 50 * 640 + 639) == 50
    assert lse.num_windows(100, 64000) == 95
    mf = lse.mfcc(np.zeros(100 * 640, np.int16))
    assert mf.shape == (13, 399)  # 1 + ceil((64000 - 400) / 160) = 4T - 1 frames
    assert lse.audio_windows(mf, [94]).shape == (1, 1, 13, 20)  # last window [376, 396) fits


# ------------------------------------------------------------------ independent re-computation


def _ffmpeg_jpegs(frames: np.ndarray, folder: Path) -> list[Path]:
    h, w = frames.shape[1:3]
    cmd = [inputs.ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-framerate", "25", "-i", "pipe:0", "-threads", "1", "-pix_fmt", "yuvj420p", "-f", "image2",
           str(folder / "%06d.jpg")]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    return sorted(folder.glob("*.jpg"))


def _ffmpeg_pcm16(audio: np.ndarray) -> np.ndarray:
    cmd = [inputs.ffmpeg_exe(), "-loglevel", "error", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", "pipe:0",
           "-acodec", "pcm_s16le", "-ar", "16000", "-ac", "1", "-f", "s16le", "pipe:1"]
    return np.frombuffer(subprocess.run(cmd, input=audio.astype(np.float32).tobytes(), check=True,
                                        capture_output=True).stdout, dtype=np.int16)


def reference_evaluate(model: SyncNetModel, frames_rgb: np.ndarray, audio: np.ndarray, folder: Path,
                       jpeg: bool = True) -> dict[str, object]:
    """syncnet_python's evaluate(), written out plainly (LRS variant: resize to 224)."""
    import cv2
    import python_speech_features

    folder.mkdir(parents=True, exist_ok=True)
    if jpeg:
        images = [cv2.resize(cv2.imread(str(p)), (224, 224)) for p in _ffmpeg_jpegs(frames_rgb, folder)]
    else:
        images = [cv2.resize(f[:, :, ::-1], (224, 224)) for f in frames_rgb]
    im = np.stack(images, axis=3)[None].transpose(0, 3, 4, 1, 2)
    imtv = torch.from_numpy(im.astype(float)).float()
    pcm = _ffmpeg_pcm16(audio)
    mfcc = np.stack([np.array(i) for i in zip(*python_speech_features.mfcc(pcm, 16000))])
    cct = torch.from_numpy(mfcc[None, None].astype(float)).float()
    min_length = min(len(images), int(np.floor(len(pcm) / 640)))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    with torch.inference_mode():
        for i in range(0, lastframe, 20):
            vs = range(i, min(lastframe, i + 20))
            im_feat.append(model.forward_lip(torch.cat([imtv[:, :, v:v + 5] for v in vs])).numpy())
            cc_feat.append(model.forward_aud(torch.cat([cct[:, :, :, v * 4:v * 4 + 20] for v in vs])).numpy())
    im_feat, cc_feat = np.concatenate(im_feat), np.concatenate(cc_feat)
    vshift = 15
    feat2p = np.pad(cc_feat, ((vshift, vshift), (0, 0)))
    dists = [np.linalg.norm(im_feat[i][None] - feat2p[i:i + 2 * vshift + 1] + 1e-6, axis=1)
             for i in range(len(im_feat))]
    mdist = np.mean(np.stack(dists, 1), 1)
    minidx = int(np.argmin(mdist))
    return {"lse_d": float(mdist[minidx]), "lse_c": float(np.median(mdist) - mdist[minidx]),
            "offset": vshift - minidx, "curve": mdist, "lip": im_feat, "windows": lastframe}


@pytest.fixture(scope="module")
def vox(shared_data):
    return decode_clip(shared_data / CLIP, N_FRAMES)


@pytest.fixture(scope="module")
def model():
    return seeded_syncnet(0)


@pytest.fixture(scope="module")
def reference(vox, model, tmp_path_factory):
    frames, audio = vox
    return reference_evaluate(model, frames, audio, tmp_path_factory.mktemp("ref"))


@pytest.fixture(scope="module")
def suite_result(vox, model):
    frames, audio = vox
    return pipeline.score_video(model, frames, audio, "lrs")[0]


# Pinned for the seed-0 random model on the first 30 frames of vox/00002.mp4 (PyAV decode, bundled
# ffmpeg JPEGs); the same numbers come out of the independent re-computation above.
GOLDEN = {"lse_d": 4.7448239, "lse_c": 0.0926676, "offset": -15, "curve_0": 4.7479157, "curve_15": 4.9451928}


def test_matches_independent_recomputation(suite_result, reference):
    r = suite_result
    assert r.windows == reference["windows"] == N_FRAMES - 5
    np.testing.assert_allclose(r.curve, reference["curve"], rtol=2e-6, atol=2e-5)
    assert r.distance == pytest.approx(reference["lse_d"], abs=2e-5)
    assert r.confidence == pytest.approx(reference["lse_c"], abs=2e-5)
    assert r.offset == reference["offset"]


def test_golden_numbers_of_seeded_model(suite_result):
    r = suite_result
    assert r.distance == pytest.approx(GOLDEN["lse_d"], abs=1e-4)
    assert r.confidence == pytest.approx(GOLDEN["lse_c"], abs=1e-4)
    assert r.offset == GOLDEN["offset"]
    assert r.curve[0] == pytest.approx(GOLDEN["curve_0"], abs=1e-4)
    assert r.curve[15] == pytest.approx(GOLDEN["curve_15"], abs=1e-4)


@pytest.mark.parametrize("constant, value", [
    ("VSHIFT", 10),            # the calc_pdist default the CLI overrides
    ("MFCC_PER_FRAME", 3),     # MFCC step per video frame
    ("MFCC_WINSTEP", 0.009),   # python_speech_features' 10 ms step
    ("AUDIO_WINDOW", 21),      # audio window size
    ("VIDEO_WINDOW", 6),       # windows = usable - 5
    ("DIST_EPS", 1e-2),
])
def test_each_published_constant_matters(vox, model, suite_result, monkeypatch, constant, value):
    """With one constant changed, the numbers leave the golden/reference values by far more than the
    tolerance those tests use, so each of those tests would fail."""
    frames, audio = vox
    monkeypatch.setattr(lse, constant, value)
    changed = pipeline.score_video(model, frames, audio, "lrs")[0]
    moved = max(abs(changed.distance - suite_result.distance), abs(changed.confidence - suite_result.confidence),
                abs(changed.offset - suite_result.offset))
    assert moved > 20 * 2e-5 or changed.windows != suite_result.windows, (constant, moved)
    assert (changed.distance, changed.confidence, changed.offset) != pytest.approx(
        (GOLDEN["lse_d"], GOLDEN["lse_c"], GOLDEN["offset"]), abs=1e-4)


def test_jpeg_round_trip_is_applied_and_changes_the_features(vox, model, reference, tmp_path):
    frames, audio = vox
    raw = reference_evaluate(model, frames, audio, tmp_path, jpeg=False)
    # the lip features move: without the round trip the metric would not be the published one
    rel = np.linalg.norm(raw["lip"] - reference["lip"]) / np.linalg.norm(reference["lip"])
    assert rel > 1e-3
    assert not np.allclose(raw["curve"], reference["curve"], atol=1e-4)
    # and the JPEG files really are lossy at ffmpeg's default quality
    back = inputs.jpeg_roundtrip(frames[:5])[..., ::-1]
    assert np.abs(back.astype(int) - frames[:5]).mean() > 1.0


def test_batch_size_does_not_change_numbers(vox, model, suite_result):
    frames, audio = vox
    for bs in (6, N_FRAMES - 5):  # several uneven batches, and one batch of all windows
        r = pipeline.score_video(model, frames, audio, "lrs", pipeline.FeedOptions(batch_size=bs))[0]
        np.testing.assert_allclose(r.curve, suite_result.curve, rtol=1e-6, atol=1e-5)
        assert r.offset == suite_result.offset


def test_short_clips_are_reported_not_scored(vox, model):
    frames, audio = vox
    with pytest.raises(pipeline.TooShort, match="5 usable frames"):
        pipeline.score_video(model, frames[:5], audio[:5 * 640], "lrs")
    r = pipeline.score_video(model, frames[:6], audio[:6 * 640], "lrs")[0]
    assert r.windows == 1
    # audio shorter than the video trims the usable length as floor(samples / 640)
    with pytest.raises(pipeline.TooShort, match="5 usable frames"):
        pipeline.score_video(model, frames[:20], audio[:6 * 640 - 1], "lrs")
