"""Audio-to-motion training task: schedules and loss definitions as Real3DPortrait's, a short run through
bench.trainer lowers the held-out loss on synthetic audio-driven motion, and a continued run equals a
straight one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.threads import torch_threads
from bench.trainer import TrainSettings, train
from methods.nerf_head.audio2motion.data import MotionClip
from methods.nerf_head.audio2motion.model import A2MArch
from methods.nerf_head.audio2motion.train import (Audio2MotionTask, TrainConfig, kl_weight, lap_loss, landmark_loss,
                                                  landmark_weights, learning_rate, mse_loss)
from methods.nerf_head.motion import ExpressionSpace

K, C = 6, 12
TINY = A2MArch(audio_dim=C, motion_dim=K, feat_dim=16, hidden=16, latent=4, kernel=3, enc_layers=2, dec_layers=2,
               flow_hidden=8, flow_kernel=3, flow_layers=2, flow_count=2)


def test_schedule_and_kl_annealing_are_the_originals():
    cfg = TrainConfig()
    assert learning_rate(0, cfg) == 1e-7
    assert learning_rate(500, cfg) == pytest.approx(2.5e-4)
    assert learning_rate(1000, cfg) == pytest.approx(5e-4)
    assert learning_rate(250_000, cfg) == pytest.approx(5e-5)
    assert learning_rate(10_000_000, cfg) == 1e-6
    assert kl_weight(0, cfg) == 0 and kl_weight(1000, cfg) == pytest.approx(0.01)
    assert kl_weight(3000, cfg) == pytest.approx(0.02) and kl_weight(4500, cfg) == pytest.approx(0.005)


def test_losses_follow_the_original_definitions():
    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.standard_normal((2, 5, 3)))
    gt = torch.from_numpy(rng.standard_normal((2, 5, 3)))
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    assert float(mse_loss(pred, gt, mask)) == pytest.approx(float(((pred - gt) ** 2 * mask[..., None]).sum() / (8 * 3)))
    x = pred[0, :, 0].numpy()
    padded = np.pad(x, 1)
    lap = padded[1:-1] - 0.5 * padded[:-2] - 0.5 * padded[2:]
    single = float(lap_loss(pred[:1, :, :1], torch.ones(1, 5)))
    assert single == pytest.approx((lap ** 2).sum() / 5)
    w = landmark_weights(468)
    assert w[159] == 20 and w[33] == 3 and w[13] == 5 and w[0] == 5 and w[93] == 0 and w[1] == 1
    basis = torch.from_numpy(rng.standard_normal((468, 3, 3)))
    lm = float(landmark_loss(pred, gt, mask, basis, torch.from_numpy(w).double()))
    diff = np.einsum("lck,btk->btlc", basis.numpy(), (pred - gt).numpy()) * 10
    want = (diff ** 2 * mask.numpy()[:, :, None, None] * w[None, None, :, None]).sum() / (8 * 468 * 3)
    assert lm == pytest.approx(want)


def synthetic_clip(name: str, frames: int, seed: int, mix: np.ndarray) -> MotionClip:
    """Motion driven by audio: exp = a fixed linear map of the (smoothed) 25 fps audio features."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((2 * frames, C)).astype(np.float32)
    kernel = np.ones(3) / 3
    smooth = np.stack([np.convolve(audio[::2, i], kernel, mode="same") for i in range(C)], 1)
    exp = (smooth @ mix).astype(np.float32)
    f0 = rng.uniform(0, 300, 2 * frames).astype(np.float32)
    return MotionClip(name, "mel", audio, f0, exp, np.zeros(frames, np.int64), 0.3, np.zeros((468, 3), np.float32))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    mix = rng.standard_normal((C, K)).astype(np.float32)
    space = ExpressionSpace("synthetic", (rng.standard_normal((468, 3, K)) * 0.01).astype(np.float32),
                            np.zeros((468, 3), np.float32))
    return [synthetic_clip("train", 200, 1, mix)], [synthetic_clip("val", 64, 2, mix)], space


def _task(data):
    train_clips, val_clips, space = data
    # a higher lr than the original's 5e-4 so that 150 steps of a tiny model show the trend
    return Audio2MotionTask(train_clips, val_clips, space, TINY, TrainConfig(batch=4, window=32, warmup=10, lr=2e-3, seed=3))


def test_short_training_lowers_the_held_out_loss(data, tmp_path):
    task = _task(data)
    before = task.evaluate(0)
    with torch_threads(1):
        result = train(task, tmp_path / "run", TrainSettings(steps=150, eval_every=75, checkpoint_seconds=None))
    after = result.last_eval
    assert result.steps_done == 150 and {"loss", "mse_exp", "kl", "lr"} <= set(result.curves["train"][0])
    assert after["val_loss"] < 0.8 * before["val_loss"], (before, after)
    assert after["val_infer_mse_exp"] < 0.85 * before["val_infer_mse_exp"], (before, after)


def test_a_continued_run_equals_a_straight_one(data, tmp_path):
    with torch_threads(1):
        straight = _task(data)
        train(straight, tmp_path / "a", TrainSettings(steps=6, checkpoint_seconds=None, eval_at_end=False))
        part = _task(data)
        train(part, tmp_path / "b", TrainSettings(steps=3, checkpoint_seconds=None, eval_at_end=False))
        resumed = _task(data)
        train(resumed, tmp_path / "b", TrainSettings(steps=6, checkpoint_seconds=None, eval_at_end=False))
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_task_refuses_mismatched_data(data):
    train_clips, val_clips, space = data
    with pytest.raises(ValueError, match="does not match"):
        Audio2MotionTask(train_clips, val_clips, space, A2MArch(audio_dim=C + 1, motion_dim=K), TrainConfig())
    hub = MotionClip("h", "hubert", *[getattr(val_clips[0], f) for f in ("audio", "f0", "exp", "blink", "mouth_amp",
                                                                        "id_offset")])
    with pytest.raises(ValueError, match="front ends"):
        Audio2MotionTask(train_clips, [hub], space, TINY, TrainConfig())
