"""The suite-trained sync scorer: it detects audio shifts, trains within a budget, resumes, and never
carries a published metric's name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench.cache import Cache
from bench.method import Budget
from bench.progress import Progress
from metrics.base import MetricContext, Sample
from metrics.sync.model import SyncNetModel
from bench.trainer import CHECKPOINT as TRAINER_CHECKPOINT
from metrics.sync.suite import CHECKPOINT, SuiteSyncConfig, SuiteSyncMetric, load_checkpoint, shift_audio


def _prepared(cache_root, video, clip_id, start, end):
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    return Recipe(Cache(cache_root)).prepare(Clip(clip_id, video, subject="s", split="train", start=start, end=end))


def _metric(tmp, config=SuiteSyncConfig(), seed=0) -> SuiteSyncMetric:
    ctx = MetricContext(work_dir=tmp / "work", cache=Cache(tmp / "cache"), progress=Progress.off(), seed=seed)
    (tmp / "work").mkdir(parents=True, exist_ok=True)
    return SuiteSyncMetric(config, ctx)


def _sample(clip, audio) -> Sample:
    frames = clip.frames()
    return Sample("r", "cross", frames, None, audio, clip, "lrs")


def test_shift_audio_direction():
    a = np.arange(10 * 640, dtype=np.float32)
    early = shift_audio(a, 2)
    assert early[0] == a[2 * 640] and (early[-2 * 640:] == 0).all()   # content of t + 2 frames now at t
    late = shift_audio(a, -3)
    assert (late[:3 * 640] == 0).all() and late[3 * 640] == a[0]
    np.testing.assert_array_equal(shift_audio(a, 0), a)


def test_spec_never_claims_a_published_name():
    spec = SuiteSyncMetric.spec
    assert not spec.published and spec.fit_scope == "dataset"
    assert all("LSE" not in v.name for v in spec.values)
    assert [v.name for v in spec.values] == ["SyncD-suite", "SyncC-suite", "AV-offset-suite"]
    assert "trained BY THE SUITE" in spec.description and "only within a run" in spec.description


@pytest.mark.slow
def test_suite_scorer_detects_a_k_frame_audio_shift_as_offset_k(demo_video, tmp_path):
    """The acceptance test: trained (quick budget) on the demo's training split [0, 12) s, scoring
    the unseen [12, 16) s with its audio moved by k frames moves the detected offset by exactly k."""
    train = _prepared(tmp_path / "cache", demo_video, "obama/train", 0.0, 12.0)
    held_out = _prepared(tmp_path / "cache", demo_video, "obama/val", 12.0, 16.0)
    metric = _metric(tmp_path)
    assert metric.score(_sample(held_out, held_out.audio()))["AV-offset-suite"].status == "unavailable"
    summary = metric.fit([train], Budget("quick"))
    assert summary["steps"] == SuiteSyncConfig().steps_quick and summary["clips"] == 1
    assert summary["final"]["loss"] < summary["curve"][0]["loss"]

    audio = held_out.audio()
    offsets = {}
    for k in (0, -3, 2):
        scores = metric.score(_sample(held_out, shift_audio(audio, k)))
        assert scores["AV-offset-suite"].status == "ok", scores["AV-offset-suite"].reason
        offsets[k] = int(scores["AV-offset-suite"].value)
        assert scores["SyncD-suite"].extra["protocol"] == "tracked"
    assert offsets[-3] - offsets[0] == -3 and offsets[2] - offsets[0] == 2, offsets
    assert abs(offsets[0]) <= 1, offsets  # the demo clip itself is in sync


@pytest.fixture(scope="module")
def short_clip(shared_data, tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("suite-cache"), shared_data / "clips/vox/00002.mp4", "vox/2", 0.0, 2.0)


# fp32 pinned: the tests compare trained weights bit for bit, on any CPU
SMALL = SuiteSyncConfig(batch_windows=16, blocks=2, calibration_windows=16, checkpoint_every=3, precision="fp32")


def test_training_resumes_from_its_checkpoint(short_clip, tmp_path):
    metric = _metric(tmp_path, SMALL)
    first = metric.fit([short_clip], Budget(steps=4))
    assert first["steps"] == 4 and first["stopped"] == "steps" and first["calibration_windows"] == 16
    state = load_checkpoint(tmp_path / "work" / CHECKPOINT)
    assert state["step"] == 4
    # the trainer's resumable state is a weights-only file too
    assert torch.load(metric.work_folder / TRAINER_CHECKPOINT, weights_only=True)["step"] == 4
    # the checkpoint is a complete state dict in syncnet_python's layout
    SyncNetModel().load_state_dict(state["state_dict"], strict=True)

    again = _metric(tmp_path, SMALL).fit([short_clip], Budget(steps=7))
    assert again["steps"] == 7 and again["resumed_from"] == 4
    assert again["calibration_windows"] == 0   # resumed: trunk kept as saved
    resumed = load_checkpoint(tmp_path / "work" / CHECKPOINT)["state_dict"]
    for name in ("netcnnlip.0.weight", "netcnnlip.1.running_mean", "netcnnaud.15.running_var"):
        assert torch.equal(resumed[name], state["state_dict"][name]), name   # frozen trunk unchanged
    assert not torch.equal(resumed["netfclip.3.weight"], state["state_dict"]["netfclip.3.weight"])

    done = _metric(tmp_path, SMALL).fit([short_clip], Budget(steps=7))
    assert done["stopped"] == "already trained" and done["steps"] == 7
    assert _metric(tmp_path, SMALL).weights_used()[0]["origin"] == "trained-by-suite"


def test_deadline_stops_training_and_saves(short_clip, tmp_path):
    metric = _metric(tmp_path, SMALL)
    out = metric.fit([short_clip], Budget(steps=1000, minutes=0.0))
    assert out["stopped"] == "deadline" and out["steps"] < 1000
    assert load_checkpoint(tmp_path / "work" / CHECKPOINT)["step"] == out["steps"]


def test_precision_auto_follows_the_cpu(short_clip, tmp_path, monkeypatch):
    """The default never depends on a CPU feature the user may lack: "auto" trains fp32 where bf16
    is emulated (capability injected, no timing)."""
    import bench.precision as P

    assert SuiteSyncConfig().precision == "auto"
    monkeypatch.setattr(P, "capability", lambda device: P.Capability("cpu", False, "CPU without avx512_bf16"))
    metric = _metric(tmp_path, dataclasses.replace(SMALL, precision="auto"))
    assert "training" not in metric.precision_used()      # nothing trained yet
    out = metric.fit([short_clip], Budget(steps=9, minutes=0.0))
    assert out["precision"] == "fp32" and "no native bf16" in out["precision_reason"]
    used = metric.precision_used()
    assert used["training"]["name"] == "fp32" and used["scoring"]["name"] == "fp32"
    monkeypatch.setattr(P, "capability", lambda device: P.Capability("cpu", True, "CPU avx512_bf16"))
    out = _metric(tmp_path / "b", dataclasses.replace(SMALL, precision="auto")).fit([short_clip],
                                                                                    Budget(steps=9, minutes=0.0))
    assert out["precision"] == "bf16"


def test_continued_training_equals_a_straight_run_and_a_plain_loop(short_clip, tmp_path):
    """The move onto bench.trainer keeps the results: 4 steps continued to 7 equal 7 straight steps,
    which equal the head training written out as a plain loop (one numpy stream for batches, one
    torch stream for dropout, both seeded once)."""
    from metrics.sync import suite

    _metric(tmp_path / "a", SMALL).fit([short_clip], Budget(steps=7))
    _metric(tmp_path / "b", SMALL).fit([short_clip], Budget(steps=4))
    _metric(tmp_path / "b", SMALL).fit([short_clip], Budget(steps=7))
    straight = load_checkpoint(tmp_path / "a" / "work" / CHECKPOINT)["state_dict"]
    continued = load_checkpoint(tmp_path / "b" / "work" / CHECKPOINT)["state_dict"]
    for k, v in straight.items():
        assert torch.equal(continued[k], v), k

    metric = _metric(tmp_path / "c", SMALL)
    torch.manual_seed(0)
    model = SyncNetModel()
    feats, _ = metric._features(model, [short_clip], SMALL.frames_quick, calibrated=False)
    opt = torch.optim.AdamW(suite._heads(model), lr=SMALL.lr, weight_decay=SMALL.weight_decay)
    rng = np.random.default_rng([0, 0])
    dropout = torch.nn.Dropout(SMALL.dropout)
    torch.manual_seed(0)
    model.train()
    for _ in range(7):
        loss, _ = suite.matching_loss(model, feats, rng, SMALL, dropout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(straight[k], v), k


def test_clips_too_short_to_train_on_are_skipped_with_reason(shared_data, tmp_path):
    tiny = _prepared(tmp_path / "c", shared_data / "clips/vox/00002.mp4", "vox/tiny", 0.0, 0.2)
    with pytest.raises(ValueError, match="vox/tiny"):
        _metric(tmp_path, SMALL).fit([tiny], Budget(steps=2))


def test_val_clips_never_train_the_scorer(shared_data, tmp_path):
    """The runner passes val clips after train ones (for methods' evaluation); the scorer skips them."""
    import dataclasses

    from data_recipes.recipe import Recipe

    val = _prepared(tmp_path / "c", shared_data / "clips/vox/00002.mp4", "vox/v", 0.0, 2.0)
    val = Recipe(Cache(tmp_path / "c")).prepare(dataclasses.replace(val.clip, split="val"))
    with pytest.raises(ValueError, match="no clips of the train split"):
        _metric(tmp_path, SMALL).fit([val], Budget(steps=2))
