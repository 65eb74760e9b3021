"""Training the NeRF renderer on real frames (the embedded demo clip) with a tiny config through the
suite's trainer: held-out PSNR rises, checkpoints round-trip, the torso stage keeps the head frozen,
`render` gives uint8 frames of the output size."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from methods.nerf_head.renderer import rays as R
from methods.nerf_head.renderer.config import FieldConfig, RendererConfig, TorsoConfig, TrainConfig, preset
from methods.nerf_head.renderer.data import RendererData, resize_u8
from methods.nerf_head.renderer.grid import GridConfig
from methods.nerf_head.renderer.inference import render, render_frames
from methods.nerf_head.renderer.model import condition_window
from methods.nerf_head.renderer.tasks import HeadTask, TorsoTask
from tests.conftest import first_frames

SIZE = 64        # the crop side of the test data
T = 12


def tiny_config(head_steps: int = 24, torso_steps: int = 3) -> RendererConfig:
    small = GridConfig(num_levels=6, base_resolution=8, desired_resolution=128, log2_hashmap_size=12)
    head = FieldConfig(grid=small, ambient_grid=small, hidden_ambient=32, hidden_sigma=32, geo_feat_dim=32,
                       hidden_color=32, grid_size=32, sr_channels=(8, 4), render_size=24)
    return RendererConfig(
        name="test", head=head, torso=TorsoConfig(grid=small, deform_hidden=16, canonical_hidden=16),
        head_train=TrainConfig(steps=head_steps, lr=5e-3, decay_steps=1000, lpips_start=10**9, eval_frames=2),
        torso_train=TrainConfig(steps=torso_steps, lr=2e-3, decay_steps=1000, lpips_start=10**9, eval_frames=1),
        output_size=96, note="test")


@pytest.fixture(scope="module")
def data(demo_video) -> RendererData:
    frames = first_frames(demo_video, T, step=8)
    frames = resize_u8(frames, SIZE).permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(0)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    ring = np.stack([SIZE / 2 + SIZE / 5 * np.cos(ang), SIZE / 2 + SIZE / 4 * np.sin(ang)], -1).astype(np.float32)
    labels = np.zeros(frames.shape[:3], np.uint8)
    labels[:, int(SIZE * 0.8):] = 2          # the bottom rows count as torso
    # a flat grey plate: the held-out PSNR can then only rise by learning the face and hair
    return RendererData(
        frames=frames, background=np.full((SIZE, SIZE, 3), 128, np.uint8),
        c2w=R.poses_from_3dmm(np.tile(np.eye(3), (T, 1, 1)), np.zeros((T, 3))),
        intrinsics=R.geneface_intrinsics(SIZE), conds=rng.normal(size=(T, 204)).astype(np.float32),
        eye_area=np.full(T, 0.3, np.float32), lm68=np.tile(ring, (T, 1, 1)),
        train_idx=np.arange(0, 10), val_idx=np.arange(10, T), labels=labels)


def test_head_training_raises_validation_psnr_and_resumes(data, tmp_path):
    from bench.trainer import TrainSettings, train

    cfg = tiny_config()
    task = HeadTask(data, cfg)
    before = task.evaluate(0)["val_psnr"]
    result = train(task, tmp_path / "head", TrainSettings(steps=cfg.head_train.steps, checkpoint_every=12,
                                                          checkpoint_seconds=None, eval_every=0))
    after = result.last_eval["val_psnr"]
    assert after > before + 1.0, (before, after)
    assert "val_psnr_sr" in result.last_eval
    assert all(np.isfinite(r["loss"]) for r in result.curves["train"])
    # lambda_ambient moved from 1 (the adaptive weight) and the occupancy grid was built
    assert float(task.model.lambda_ambient) != 1.0 and task.model.density_bitfield.sum() > 0

    # a fresh task resumed from the trainer's checkpoint renders the same frames
    again = HeadTask(data, cfg)
    result2 = train(again, tmp_path / "head", TrainSettings(steps=cfg.head_train.steps))
    assert result2.stopped == "done-before"
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    assert again.evaluate(0)["val_psnr"] == pytest.approx(task.evaluate(0)["val_psnr"], abs=1e-6)

    # continuing a run gives what an uninterrupted run gives (randomness is drawn per step)
    straight = HeadTask(data, cfg)
    train(straight, tmp_path / "straight", TrainSettings(steps=10, checkpoint_seconds=None))
    cont = HeadTask(data, cfg)
    train(cont, tmp_path / "cont", TrainSettings(steps=6, checkpoint_seconds=None))
    cont = HeadTask(data, cfg)
    train(cont, tmp_path / "cont", TrainSettings(steps=10, checkpoint_seconds=None))
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(v.float(), cont.model.state_dict()[k].float(), atol=1e-6), k

    # torso stage: head frozen, torso learns, render gives output-size uint8 frames
    torso = TorsoTask(data, cfg, task.model.state_dict())
    head_before = {k: v.clone() for k, v in torso.model.state_dict().items() if k.startswith("sigma_net")}
    codes_before = torso.model.torso_individual_codes.detach().clone()
    logs = [torso.step(i, torch.autocast("cpu", enabled=False)) for i in range(cfg.torso_train.steps)]
    assert all(np.isfinite(lg["loss"]) for lg in logs)
    for k, v in head_before.items():
        assert torch.equal(v, torso.model.state_dict()[k])
    assert not torch.equal(codes_before, torso.model.torso_individual_codes.detach())
    assert "val_psnr" in torso.evaluate(cfg.torso_train.steps)

    frame = render(torso.model, data.c2w[11], data.intrinsics, condition_window(torch.from_numpy(data.conds), 11, 3),
                   0.3, data.background, data.lm68[11], output_size=96)
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8 and frame.std() > 1
    import io

    from bench.progress import Progress
    from methods.nerf_head.renderer.batched import render_head_frames

    log = io.StringIO()
    with Progress("log", stream=log, log_every_s=0.0) as progress:   # a render is long work: it shows a bar
        clip = render_frames(task.model, data.c2w[:2], data.intrinsics, data.conds[:2], 0.3, data.background,
                             output_size=48, progress=progress)
        batched = render_head_frames(task.model, data.c2w[:3], data.intrinsics, data.conds[:3], 0.3,
                                     data.background, output_size=48, batch=2, progress=progress)
    assert clip.shape == (2, 48, 48, 3) and batched.shape == (3, 48, 48, 3)
    lines = log.getvalue().splitlines()
    assert "nerf_head: render: start (2)" in lines and "nerf_head: render: start (3)" in lines
    assert sum(line.startswith("done nerf_head: render: 2/2") for line in lines) == 1
    assert sum(line.startswith("done nerf_head: render: 3/3") for line in lines) == 1
    assert task.preview(0).shape == (48, 96, 3)   # ground truth | SR output at 2 x the render size


def test_presets_are_typed_and_say_what_they_are():
    q, s, f = preset("quick"), preset("standard"), preset("full")
    assert f.head_train.steps == f.torso_train.steps == 250_000 and f.head.render_size == 256
    assert f.head.grid.num_levels == 16 and f.head.grid.desired_resolution == 2048 and f.head.max_steps == 16
    assert "NOT the published" in q.note and q.head.render_size <= 64 and q.head.max_steps <= 16
    assert s.head.grid == f.head.grid and s.head_train.steps < f.head_train.steps
    with pytest.raises(ValueError, match="quick"):
        preset("fast")


def test_hull_mask_fills_the_hull_and_nothing_else():
    from methods.nerf_head.renderer.data import hull_mask

    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0], [20.0, 20.0]])
    m = hull_mask(square, 48, dilate=0)
    assert m.shape == (48, 48) and m[12:29, 12:29].all()       # inside (row, col) = (y, x)
    assert not m[:9].any() and not m[32:].any() and not m[:, 32:].any()
    grown = hull_mask(square, 48, dilate=2)
    assert grown.sum() > m.sum() and grown[8, 20] and not m[8, 20]
    assert not hull_mask(np.array([[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]]), 16).any()   # collinear: empty
