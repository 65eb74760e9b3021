"""PSNR / SSIM: parity with scikit-image on real frames, the SSIM variants, +inf / 1 for identical
clips, and the metric classes the runner calls."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

from metrics.image import SSIM_VARIANTS, PSNRConfig, PSNRMetric, SSIMConfig, SSIMMetric, psnr, ssim

TOL = 1e-4  # the parity tolerance the suite promises


def decode(path, n: int, start: int = 0) -> np.ndarray:
    """The first frames of a video as uint8 RGB (n, H, W, 3)."""
    import av

    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                out.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
            if len(out) == n:
                break
    return np.stack(out)


def jpeg(frames: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return np.ascontiguousarray(np.stack(out))


@pytest.fixture(scope="module")
def may(shared_data):
    """5 real 512x512 frames of may_5s.mp4."""
    return decode(shared_data / "clips" / "may_5s.mp4", 5)


@pytest.fixture(scope="module")
def pairs(may):
    """(name, a, b): a real frame vs the next real frame, and vs a JPEG-degraded copy of itself."""
    a = may[:4]
    return [("next frame", a, may[1:5]), ("jpeg q25", a, jpeg(a, 25))]


def sk_ssim_gaussian(a, b):
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255, gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False) for x, y in zip(a, b)])


def sk_ssim_default(a, b):
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(a, b)])


@pytest.fixture(scope="module")
def sk_gaussian_refs(pairs):
    return [sk_ssim_gaussian(a, b) for _, a, b in pairs]


# ----------------------------------------------------------------------------------------------- PSNR


def test_psnr_matches_skimage_on_real_frames(pairs):
    from skimage.metrics import peak_signal_noise_ratio

    for name, a, b in pairs:
        ref = np.array([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)])
        ours = psnr(a, b, 255)
        assert ours.dtype == np.float64 and ours.shape == (len(a),)
        assert np.all(np.isfinite(ref)) and ref.min() > 20, name  # the pairs really differ
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL, err_msg=name)


def test_psnr_is_the_textbook_formula(may):
    """Independent of skimage: 10 log10(255^2 / MSE) on a hand-built pair with a known MSE."""
    a = may[:1].copy()
    b = a.astype(np.int16)
    b[0, :, :, 0] += np.where(b[0, :, :, 0] < 128, 4, -4).astype(np.int16)  # |error| 4 on one channel
    b = b.astype(np.uint8)
    mse = 16.0 / 3.0
    assert psnr(a, b, 255)[0] == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-12)
    # data_range is used, not guessed: range 1 on the same data shifts by 20 log10(1/255)
    assert psnr(a, b, 1.0)[0] == pytest.approx(10 * math.log10(1 / mse), abs=1e-12)


def test_psnr_identical_frames_is_inf_without_warning(may):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = psnr(may, may.copy(), 255)
    assert np.all(np.isposinf(values))
    mixed = may.copy()
    mixed[2] = may[3]
    v = psnr(may, mixed, 255)
    assert np.isposinf(v[[0, 1, 3, 4]]).all() and np.isfinite(v[2])


def test_psnr_torch_input_gives_tensor_on_same_device(may):
    import torch

    a, b = torch.from_numpy(may[:3]), torch.from_numpy(may[1:4])
    out = psnr(a, b, 255)
    assert isinstance(out, torch.Tensor) and out.device == a.device and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), psnr(may[:3], may[1:4], 255), atol=0)


# ----------------------------------------------------------------------------------------------- SSIM


def test_ssim_gaussian_matches_skimage_on_real_frames(pairs, sk_gaussian_refs):
    for (name, a, b), ref in zip(pairs, sk_gaussian_refs):
        assert ref.max() < 0.999, name  # not a trivial pair
        np.testing.assert_allclose(ssim(a, b, 255), ref, rtol=0, atol=TOL, err_msg=name)
        assert np.allclose(ssim(a, b, 255, "gaussian"), ssim(a, b, 255))  # it is the default


def test_ssim_float64_matches_skimage_to_rounding(pairs, sk_gaussian_refs):
    import torch

    name, a, b = pairs[1]
    np.testing.assert_allclose(ssim(a, b, 255, compute_dtype=torch.float64), sk_gaussian_refs[1],
                               rtol=0, atol=1e-10)


def test_ssim_skimage_default_variant_matches_skimage(pairs):
    for name, a, b in pairs:
        np.testing.assert_allclose(ssim(a, b, 255, "skimage_default"), sk_ssim_default(a, b),
                                   rtol=0, atol=TOL, err_msg=name)


@pytest.mark.parametrize("change", [
    {"sigma": 2.0},                              # wider Gaussian, 15x15
    {"sigma": 1.6},                              # slightly wider Gaussian, same 11x11 (~1.8e-4 off)
    {"sigma": 1.0},                              # narrower Gaussian, 7x7
    {"truncate": 2.5},                           # same sigma, 9x9 window
    {"window": "uniform", "size": 11},           # box instead of Gaussian
    {"sample_covariance": True},                 # N-1 instead of N
    {"k2": 0.05},
])
def test_ssim_parity_test_detects_a_changed_constant(pairs, sk_gaussian_refs, change):
    """The tolerance is tight enough: changing the window, sigma, covariance or K2 moves the result
    on real frames by more than the parity tolerance, so the parity test would fail. (K1 is left
    out: on natural frames the luminance term is ~1 and doubling K1 moves SSIM by only ~1e-5.)"""
    changed = dataclasses.replace(SSIM_VARIANTS["gaussian"], name="changed", **change)
    worst = max(np.abs(ssim(a, b, 255, changed) - ref).max()
                for (_, a, b), ref in zip(pairs, sk_gaussian_refs))
    assert worst > TOL  # exactly the condition under which the parity assertion fails


def test_ssim_variants_differ_on_real_frames(pairs):
    for name, a, b in pairs:
        assert np.abs(ssim(a, b, 255, "gaussian") - ssim(a, b, 255, "skimage_default")).max() > TOL, name


def test_ssim_identical_is_one_and_batching_does_not_matter(may):
    assert np.allclose(ssim(may, may.copy(), 255), 1.0, atol=1e-6)
    a, b = may[:5], jpeg(may[:5], 40)
    np.testing.assert_allclose(ssim(a, b, 255, batch_size=1), ssim(a, b, 255, batch_size=8), atol=1e-7)


def test_ssim_on_float_frames_with_explicit_range(pairs):
    name, a, b = pairs[1]
    np.testing.assert_allclose(ssim(a / 255.0, b / 255.0, 1.0), ssim(a, b, 255), atol=1e-5)


def test_inputs_are_checked(may):
    with pytest.raises(ValueError, match="data_range"):
        ssim(may, may, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_range"):
        psnr(may, may, 0)
    with pytest.raises(ValueError, match="shape"):
        psnr(may[:2], may[:3], 255)
    with pytest.raises(ValueError, match="T, H, W, C"):
        ssim(may[0], may[0], 255)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(may[:1, :8, :8], may[:1, :8, :8], 255)
    with pytest.raises(ValueError, match="unknown SSIM variant"):
        ssim(may, may, 255, "bogus")


@pytest.mark.gpu
def test_cuda_follows_input_device(may):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    a, b = torch.from_numpy(may[:3]).cuda(), torch.from_numpy(jpeg(may[:3], 25)).cuda()
    out = ssim(a, b, 255)
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), sk_ssim_gaussian(may[:3], jpeg(may[:3], 25)), atol=TOL)
    assert psnr(a, b, 255).is_cuda


# -------------------------------------------------------------------------------------- metric classes


def _context(tmp_path):
    from bench.cache import Cache
    from bench.progress import Progress
    from metrics.base import MetricContext

    return MetricContext(work_dir=tmp_path, cache=Cache(tmp_path / "cache"), progress=Progress.off())


def _sample(generated, truth, kind="self"):
    from metrics.base import Sample

    n = len(generated)
    return Sample(request_id="r", kind=kind, generated=generated, ground_truth=truth,
                  audio=np.zeros(n * 640, np.float32), target=None)  # type: ignore[arg-type]


def test_metrics_on_reference_row_are_inf_and_one(may, tmp_path):
    """Ground truth scored against itself (the `reference` row): PSNR +inf flagged, SSIM 1."""
    ctx = _context(tmp_path)
    sample = _sample(may, may.copy())
    p = PSNRMetric(PSNRConfig(), ctx).score(sample)["PSNR"]
    assert p.status == "ok" and math.isinf(p.value) and p.value > 0
    assert p.extra["identical"] is True and p.extra["identical_frames"] == len(may)
    s = SSIMMetric(SSIMConfig(), ctx).score(sample)["SSIM"]
    assert s.status == "ok" and s.value == pytest.approx(1.0, abs=1e-6)


def test_metrics_on_a_real_pair_report_the_mean_over_frames(pairs, tmp_path):
    from skimage.metrics import peak_signal_noise_ratio

    ctx = _context(tmp_path)
    name, a, b = pairs[1]
    p = PSNRMetric(PSNRConfig(), ctx).score(_sample(b, a))["PSNR"]
    ref = np.mean([peak_signal_noise_ratio(y, x, data_range=255) for x, y in zip(a, b)])
    assert p.value == pytest.approx(ref, abs=TOL) and "identical" not in p.extra
    assert len(p.extra["per_frame"]) == len(a)
    s = SSIMMetric(SSIMConfig(), ctx).score(_sample(b, a))["SSIM"]
    assert s.value == pytest.approx(sk_ssim_gaussian(b, a).mean(), abs=TOL)
    assert s.extra["variant"] == "gaussian"
    s7 = SSIMMetric(SSIMConfig(variant="skimage_default"), ctx).score(_sample(b, a))["SSIM"]
    assert s7.value == pytest.approx(sk_ssim_default(b, a).mean(), abs=TOL)


def test_psnr_of_a_clip_with_some_copied_frames_is_finite_and_counted(pairs, tmp_path):
    """Frames passed through unchanged (no face found) must not turn the clip's PSNR into +inf."""
    from skimage.metrics import peak_signal_noise_ratio

    name, a, b = pairs[1]
    generated = b.copy()
    generated[1] = a[1]
    p = PSNRMetric(PSNRConfig(), _context(tmp_path)).score(_sample(generated, a))["PSNR"]
    finite = [peak_signal_noise_ratio(a[i], b[i], data_range=255) for i in (0, 2, 3)]
    assert p.value == pytest.approx(np.mean(finite), abs=TOL)
    assert p.extra["identical_frames"] == 1 and "identical" not in p.extra
    assert math.isinf(p.extra["per_frame"][1])


def test_metric_specs_and_missing_ground_truth(may, tmp_path):
    assert PSNRMetric.spec.needs_ground_truth and SSIMMetric.spec.needs_ground_truth
    assert [(v.name, v.better, v.unit) for v in PSNRMetric.spec.values] == [("PSNR", "higher", "dB")]
    assert [(v.name, v.better) for v in SSIMMetric.spec.values] == [("SSIM", "higher")]
    ctx = _context(tmp_path)
    cross = _sample(may[:2], None, kind="cross")
    assert PSNRMetric(PSNRConfig(), ctx).score(cross)["PSNR"].status == "not_applicable"
    assert SSIMMetric(SSIMConfig(), ctx).score(cross)["SSIM"].status == "not_applicable"
    tiny = SSIMMetric(SSIMConfig(), ctx).score(_sample(may[:2, :9, :9], may[:2, :9, :9].copy()))["SSIM"]
    assert tiny.status == "not_applicable" and "11x11" in tiny.reason


def test_per_frame_values_are_subsampled_for_long_clips(may, tmp_path):
    clip = np.concatenate([may] * 3)  # 15 frames
    p = PSNRMetric(PSNRConfig(per_frame_limit=5), _context(tmp_path)).score(_sample(clip, clip[::-1].copy()))
    assert len(p["PSNR"].extra["per_frame"]) == 5


def test_registry_names_resolve():
    import importlib

    from metrics import BUILTIN_METRICS

    for family in ("psnr", "ssim", "lpips_alex", "lpips_vgg"):
        module, _, cls = BUILTIN_METRICS[family].partition(":")
        metric = getattr(importlib.import_module(module), cls)
        assert metric.spec.name == family


def test_metrics_read_lazy_videos_in_bounded_blocks_with_the_same_numbers(pairs, tmp_path):
    """The runner hands metrics lazy videos (issue 16): the per-frame values equal the array path's,
    and a 2-megapixel frame is scored one frame per block, not in batches of 8 or 32."""
    from data_recipes.frames import FileFrames
    from data_recipes.media import write_video
    from metrics.image import PSNR_PIXELS, SSIM_PIXELS, frames_per_batch

    ctx = _context(tmp_path)
    _, a, b = pairs[1]
    t, h, w = a.shape[:3]
    lazy_a = FileFrames(write_video(tmp_path / "a.mkv", a, lossless=True), t, h, w)
    lazy_b = FileFrames(write_video(tmp_path / "b.mkv", b, lossless=True), t, h, w)
    for metric, value in ((PSNRMetric(PSNRConfig(), ctx), "PSNR"), (SSIMMetric(SSIMConfig(), ctx), "SSIM")):
        eager = metric.score(_sample(b, a))[value]
        lazy = metric.score(_sample(lazy_b, lazy_a))[value]
        assert lazy.status == "ok" and lazy.value == eager.value
        assert lazy.extra["per_frame"] == eager.extra["per_frame"]
    portrait = (125, 1920, 1080, 3)
    assert frames_per_batch(portrait, SSIMConfig().batch_size, SSIM_PIXELS) == 1
    assert frames_per_batch(portrait, PSNRConfig().batch_size, PSNR_PIXELS) == 4
    assert frames_per_batch((10, 512, 512, 3), SSIMConfig().batch_size, SSIM_PIXELS) == SSIMConfig().batch_size
