"""Speed of Wav2Lip on CPU: the generator alone (fp32 / bf16, batch 16 and 32), one training step of
each stage, and end-to-end `generate` on a prepared demo clip.

Run: pytest tests/benchmarks/test_bench_wav2lip.py --benchmark-only
Numbers and the machine go into docs/BENCHMARKS.md. Weights are seeded random (the compute is
the same as with the official checkpoint). frames/s = batch / median seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def generator():
    from methods.wav2lip.models import Wav2Lip

    torch.manual_seed(0)
    return Wav2Lip().eval()


def _inputs(batch: int):
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4, torch.rand(batch, 6, 96, 96, generator=g)


@pytest.mark.parametrize("batch", [16, 32])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generator_frames_per_second(benchmark, generator, batch, precision):
    from methods.wav2lip.inference import autocast_context

    mel, faces = _inputs(batch)

    def run():
        with torch.no_grad(), autocast_context("cpu", precision):  # type: ignore[arg-type]
            return generator(mel, faces)

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape == (batch, 3, 96, 96)
    benchmark.extra_info["frames_per_second"] = batch / benchmark.stats.stats.median


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_expert_training_step_batch16(benchmark, precision):
    from methods.wav2lip.inference import autocast_context
    from methods.wav2lip.models import SyncNet_color, cosine_bce

    torch.manual_seed(0)
    model = SyncNet_color()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, mel, y = torch.rand(16, 15, 48, 96), torch.rand(16, 1, 80, 16), (torch.arange(16) % 2).float()[:, None]

    def step():
        opt.zero_grad()
        with autocast_context("cpu", precision):  # type: ignore[arg-type]
            a, v = model(mel, x)
        loss = cosine_bce(a, v, y)
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generator_gan_training_step_batch4(benchmark, precision):
    """One hq_wav2lip_train step (generator + quality discriminator, syncnet_wt 0) at batch 4 x 5 frames."""
    import torch.nn.functional as F

    from methods.wav2lip.inference import autocast_context
    from methods.wav2lip.models import Wav2Lip, Wav2Lip_disc_qual, bce

    torch.manual_seed(0)
    gen, disc = Wav2Lip(), Wav2Lip_disc_qual()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5, 0.999))
    dopt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999))
    x, mel, gt = torch.rand(4, 6, 5, 96, 96), torch.rand(4, 5, 1, 80, 16), torch.rand(4, 3, 5, 96, 96)

    def step():
        opt.zero_grad()
        with autocast_context("cpu", precision):  # type: ignore[arg-type]
            g = gen(mel, x)
            perc = disc.perceptual_loss(g)
        loss = 0.07 * perc + 0.93 * F.l1_loss(g.float(), gt)
        loss.backward()
        opt.step()
        dopt.zero_grad()
        with autocast_context("cpu", precision):  # type: ignore[arg-type]
            real = bce(disc(gt), torch.ones(20, 1))
            fake = bce(disc(g.detach()), torch.zeros(20, 1))
        (real + fake).backward()
        dopt.step()

    benchmark.pedantic(step, rounds=2, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def prepared_demo(tmp_path_factory, demo_video):
    """The demo test clip (4 s, 100 frames of 450x450) with all Wav2Lip stages computed beforehand."""
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    recipe = Recipe(Cache(tmp_path_factory.mktemp("cache")))
    clip = recipe.prepare(Clip("obama/test", demo_video, "obama", "test", start=16.0, end=20.0))
    for stage in ("normalise", "faces", "wav2lip_crops", "mel"):
        clip.stage(stage)
    return recipe, clip


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generate_end_to_end(benchmark, prepared_demo, tmp_path, precision):
    """Wav2LipMethod.generate on the prepared clip (decode + crops + model + paste, batch 128)."""
    from bench.method import Budget, GenerateRequest, MethodContext
    from bench.progress import Progress
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod
    from methods.wav2lip.models import Wav2Lip

    recipe, clip = prepared_demo
    torch.manual_seed(0)
    path = tmp_path / "g.pth"
    torch.save({"state_dict": Wav2Lip().state_dict(), "optimizer": None, "global_step": 0, "global_epoch": 0}, path)
    ctx = MethodContext(work_dir=tmp_path, cache=recipe.cache, progress=Progress.off(), precision=precision)  # type: ignore[arg-type]
    method = Wav2LipMethod(Wav2LipConfig(checkpoint=path), ctx)
    method.fit([], Budget())
    request = GenerateRequest("obama/test", "self", clip, clip)
    result = benchmark.pedantic(lambda: method.generate(request), rounds=2, iterations=1, warmup_rounds=0)
    n = len(result.frames)
    benchmark.extra_info["frames"] = n
    benchmark.extra_info["video_frames_per_second"] = n / benchmark.stats.stats.median
    benchmark.extra_info["timed_stage_fps"] = n / sum(result.timings.values())
    benchmark.extra_info["timings"] = {k: round(v, 3) for k, v in result.timings.items()}
    assert n == 97 and np.isfinite(np.asarray(result.frames).mean())
