"""Speed of the image-quality metrics on a batch of 8 real 512x512 frame pairs.

Run: pytest tests/benchmarks/test_bench_image_metrics.py --benchmark-only
Numbers and the machine go into docs/BENCHMARKS.md. LPIPS runs with seeded random
backbones (the ImageNet files are not available here); the compute is identical to the real one.
"""

from __future__ import annotations

import numpy as np
import pytest

N = 8


@pytest.fixture(scope="module")
def frames(shared_data):
    """(a, b): 8 real 512x512 frames of may_5s.mp4 and the 8 frames that follow each of them."""
    import av

    out = []
    with av.open(str(shared_data / "clips" / "may_5s.mp4")) as container:
        for frame in container.decode(video=0):
            out.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
            if len(out) == N + 1:
                break
    clip = np.stack(out)
    assert clip.shape[1:] == (512, 512, 3)
    return clip[:N], clip[1:]


def _run(benchmark, fn, rounds=5):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.fixture(params=["torch-default", "1-thread"])
def threads(request):
    """torch's default intra-op threads, and one thread (faster when other jobs load the cores)."""
    import torch

    before = torch.get_num_threads()
    if request.param == "1-thread":
        torch.set_num_threads(1)
    yield request.param
    torch.set_num_threads(before)


def test_psnr(benchmark, frames, threads):
    from metrics.image import psnr

    a, b = frames
    assert np.isfinite(_run(benchmark, lambda: psnr(a, b, 255))).all()


def test_skimage_psnr(benchmark, frames):
    from skimage.metrics import peak_signal_noise_ratio

    a, b = frames
    _run(benchmark, lambda: [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)])


def test_ssim_gaussian_float32(benchmark, frames, threads):
    from metrics.image import ssim

    a, b = frames
    _run(benchmark, lambda: ssim(a, b, 255, batch_size=N))


def test_ssim_gaussian_float64(benchmark, frames):
    import torch

    from metrics.image import ssim

    a, b = frames
    _run(benchmark, lambda: ssim(a, b, 255, batch_size=N, compute_dtype=torch.float64), rounds=3)


def test_ssim_skimage_default_variant(benchmark, frames):
    from metrics.image import ssim

    a, b = frames
    _run(benchmark, lambda: ssim(a, b, 255, "skimage_default", batch_size=N))


def test_skimage_ssim_gaussian(benchmark, frames):
    from skimage.metrics import structural_similarity

    a, b = frames
    _run(benchmark, lambda: [structural_similarity(x, y, channel_axis=-1, data_range=255, gaussian_weights=True,
                                                   sigma=1.5, use_sample_covariance=False)
                             for x, y in zip(a, b)], rounds=3)


@pytest.mark.parametrize("net, batch", [("alex", 8), ("vgg", 2)])
def test_lpips(benchmark, frames, net, batch):
    _lpips(benchmark, frames, net, batch)


def test_lpips_alex_one_thread(benchmark, frames):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _lpips(benchmark, frames, "alex", 8)
    finally:
        torch.set_num_threads(before)


def _lpips(benchmark, frames, net, batch):
    import torch

    from metrics.lpips.model import build_lpips_net, lpips_distance

    torch.manual_seed(0)
    model = build_lpips_net(net)  # random backbone and heads: same compute as the real weights
    a, b = frames
    _run(benchmark, lambda: lpips_distance(a, b, model, 255, batch_size=batch), rounds=3 if net == "alex" else 2)
