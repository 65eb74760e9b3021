"""Speed of the NeRF renderer's `quick` and `standard` presets: field samples/s, one head+SR training
step, one rendered 512x512 frame (`standard` is the published architecture at 256 -> 512).

Run: pytest tests/benchmarks/test_bench_nerf_renderer.py --benchmark-only
Numbers and the machine go into docs/nerf_head.md ("Renderer") and docs/BENCHMARKS.md. The training
data are synthetic (random frames, a fixed frontal camera): speed does not depend on the picture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

N_SAMPLES = 65536


@pytest.fixture(scope="module", params=["quick", "standard"])
def cfg(request):
    from methods.nerf_head.renderer.config import preset

    return preset(request.param)


@pytest.fixture(scope="module")
def crops(cfg):
    from methods.nerf_head.renderer import rays as R
    from methods.nerf_head.renderer.data import RendererData

    # the crop size the method trains at: twice the internal render (the SR output), at most 512
    t, s = 8, min(512, 2 * cfg.head.render_size)
    rng = np.random.default_rng(0)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    ring = np.stack([s / 2 + s / 5 * np.cos(ang), s / 2 + s / 4 * np.sin(ang)], -1).astype(np.float32)
    return RendererData(
        frames=rng.integers(0, 255, size=(t, s, s, 3), dtype=np.uint8), background=np.full((s, s, 3), 128, np.uint8),
        c2w=R.poses_from_3dmm(np.tile(np.eye(3), (t, 1, 1)), np.zeros((t, 3))), intrinsics=R.geneface_intrinsics(s),
        conds=rng.normal(size=(t, 204)).astype(np.float32), eye_area=np.full(t, 0.3, np.float32),
        lm68=np.tile(ring, (t, 1, 1)), train_idx=np.arange(6), val_idx=np.arange(6, 8))


def test_field_samples_per_second(benchmark, cfg):
    from methods.nerf_head.renderer.model import build_head

    m = build_head(cfg.head)
    cond = m.cond_feature(torch.randn(3, 1, 204), 0.3).detach()
    xyz = torch.rand(N_SAMPLES, 3) * 1.6 - 0.8
    dirs = torch.nn.functional.normalize(torch.randn(N_SAMPLES, 3), dim=-1)
    code = m.individual_code(0).detach()

    def run():
        with torch.no_grad():
            return m(xyz, dirs, cond, code)

    sigma, rgb, _ = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["samples"] = N_SAMPLES
    benchmark.extra_info["samples_per_s"] = N_SAMPLES / benchmark.stats.stats.mean
    assert rgb.shape == (N_SAMPLES, 3)


def test_head_train_step(benchmark, cfg, crops):
    from methods.nerf_head.renderer.tasks import HeadTask

    task = HeadTask(crops, cfg, perceptual=False)
    counter = iter(range(10**6))
    # step indices 1, 2, ... avoid the every-16-steps occupancy refresh except at 16 (measured apart)
    task.step(0, torch.autocast("cpu", enabled=False))
    logs = benchmark.pedantic(lambda: task.step(next(counter) + 1, torch.autocast("cpu", enabled=False)),
                              rounds=2 if cfg.name == "standard" else 4, iterations=1,
                              warmup_rounds=1)
    benchmark.extra_info["rays_per_step"] = cfg.head.render_size ** 2
    benchmark.extra_info["samples_per_ray"] = logs["samples_per_ray"]
    assert np.isfinite(logs["loss"])


def test_render_frame(benchmark, cfg, crops):
    from methods.nerf_head.renderer.inference import render
    from methods.nerf_head.renderer.model import build_head, condition_window

    m = build_head(cfg.head)
    m.update_occupancy(m.cond_feature(torch.randn(3, 1, 204), 0.3).detach())
    win = condition_window(torch.from_numpy(crops.conds), 0, 3)
    frame = benchmark.pedantic(lambda: render(m, crops.c2w[0], crops.intrinsics, win, 0.3,
                                              crops.background, output_size=512),
                               rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["fps"] = 1.0 / benchmark.stats.stats.mean
    assert frame.shape == (512, 512, 3)
