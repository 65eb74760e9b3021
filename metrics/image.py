"""Full-reference image quality: PSNR and SSIM, as batched PyTorch on whole clips.

The metric classes read the runner's videos (arrays or lazy `data_recipes.frames` videos) in
blocks whose pixel count is bounded (`frames_per_batch`), so scoring memory does not grow with a
clip's length or resolution.

Inputs of every function here: two clips of the same shape (T, H, W, 3), RGB, as numpy arrays or
torch tensors (uint8 frames as the runner hands them; float frames work too). `data_range` is the
span of possible values (255 for uint8) and is always explicit: guessing it from the dtype or from
the data is how published SSIM numbers end up off by a constant.

Outputs are per-frame values, shape (T,): a float64 numpy array for numpy input, a float64 tensor on
the input's device for tensor input. The per-clip value the suite reports is the mean over frames
(every frame weighs the same; see `clip_mean`).

SSIM variants (see `SSIM_VARIANTS`):
- "gaussian" (default, the one the suite reports): Wang et al. 2004 - 11x11 Gaussian window with
  sigma 1.5 (truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, population (co)variances; computed per
  colour channel and averaged. Identical to `skimage.metrics.structural_similarity(a, b,
  channel_axis=-1, data_range=R, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
- "skimage_default": what scikit-image computes when called without those options - 7x7 uniform
  window and sample (N-1) covariances.

Border handling: scikit-image filters with mirror padding and then drops a strip of (window-1)/2
pixels on every side before averaging. Every kept pixel's window lies inside the image, so the
padding never reaches the average: a "valid" convolution gives the same numbers, which is what is
done here.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec

if TYPE_CHECKING:
    import torch

    from bench.progress import Progress


# --------------------------------------------------------------------------------------------------
# input handling


def _to_tensor(x: Any, name: str) -> "torch.Tensor":
    """numpy or torch (T, H, W, C) -> torch tensor sharing memory where possible."""
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.ndim != 4:
        raise ValueError(f"{name} must have shape (T, H, W, C), got {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} has unsupported dtype {t.dtype}")
    return t


def check_pair(a: Any, b: Any, data_range: float) -> tuple["torch.Tensor", "torch.Tensor", bool]:
    """Validate a clip pair; returns both as tensors and whether the caller gave numpy."""
    import torch

    if data_range is None or not (float(data_range) > 0 and math.isfinite(float(data_range))):
        raise ValueError(f"data_range must be a positive finite number (255 for uint8), got {data_range!r}")
    was_numpy = isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    ta, tb = _to_tensor(a, "a"), _to_tensor(b, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"clips differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    if ta.device != tb.device:
        raise ValueError(f"clips are on different devices: {ta.device} vs {tb.device}")
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        was_numpy = False
    return ta, tb, was_numpy


def to_output(values: "torch.Tensor", as_numpy: bool) -> "np.ndarray | torch.Tensor":
    return values.cpu().numpy() if as_numpy else values


def batch_spans(total: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(s, min(s + batch_size, total)) for s in range(0, total, batch_size)]


def tracked(spans: list, progress: "Progress | None", description: str):
    return spans if progress is None else progress.track(spans, description)


@contextlib.contextmanager
def true_fp32(device: "torch.device"):
    """Run cuDNN float32 convolutions in real float32 inside the block.

    On Ampere and newer GPUs PyTorch lets cuDNN use TF32 (10-bit mantissa) for float32 convolutions
    by default. That would wreck SSIM's variance terms (E[x^2] - E[x]^2 with values up to 255^2)
    and break LPIPS parity, so it is switched off here and restored afterwards.
    """
    if device.type != "cuda":
        yield
        return
    import torch

    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


# --------------------------------------------------------------------------------------------------
# PSNR


def psnr(a: Any, b: Any, data_range: float, *, batch_size: int = 32,
         progress: "Progress | None" = None) -> "np.ndarray | torch.Tensor":
    """Peak signal-to-noise ratio per frame, in dB: 10 log10(data_range^2 / MSE).

    a, b: (T, H, W, C) clips, numpy or torch, same shape; MSE is over all pixels and channels of a
    frame, accumulated in float64 (exact for uint8). A frame identical in both clips has MSE 0 and
    PSNR +inf - a real value (the reference row compares ground truth with itself), not an error.
    Matches `skimage.metrics.peak_signal_noise_ratio(a[t], b[t], data_range=data_range)` per frame.
    """
    import torch

    ta, tb, as_numpy = check_pair(a, b, data_range)
    out = torch.empty(ta.shape[0], dtype=torch.float64, device=ta.device)
    for s, e in tracked(batch_spans(ta.shape[0], batch_size), progress, "PSNR"):
        if ta.dtype == torch.uint8 and tb.dtype == torch.uint8:
            # integer squares summed in int64: exact, and a quarter of float64's memory traffic
            d = ta[s:e].to(torch.int32) - tb[s:e].to(torch.int32)
            mse = d.mul_(d).flatten(1).sum(dim=1).to(torch.float64) / d[0].numel()
        else:
            d = ta[s:e].to(torch.float64) - tb[s:e].to(torch.float64)
            mse = d.square().flatten(1).mean(dim=1)
        # R^2 / 0 = +inf in torch (no error), and +inf is the right PSNR for identical frames
        out[s:e] = 10.0 * torch.log10(float(data_range) ** 2 / mse)
    return to_output(out, as_numpy)


# --------------------------------------------------------------------------------------------------
# SSIM


@dataclass(frozen=True)
class SSIMVariant:
    """How SSIM is computed. `window`: "gaussian" (size from sigma and truncate, as scipy.ndimage
    derives it) or "uniform" (size x size box). `sample_covariance`: divide by N-1 instead of N."""

    name: str
    window: Literal["gaussian", "uniform"]
    size: int = 11
    sigma: float = 1.5
    truncate: float = 3.5
    k1: float = 0.01
    k2: float = 0.03
    sample_covariance: bool = False

    @property
    def window_size(self) -> int:
        if self.window == "gaussian":
            return 2 * int(self.truncate * self.sigma + 0.5) + 1  # scipy.ndimage's radius rule
        return self.size


SSIM_VARIANTS: dict[str, SSIMVariant] = {
    # Wang et al. 2004; what talking-head papers cite and what the suite reports
    "gaussian": SSIMVariant("gaussian", "gaussian", sigma=1.5, truncate=3.5, sample_covariance=False),
    # scikit-image's structural_similarity with its own defaults (7x7 box, sample covariance)
    "skimage_default": SSIMVariant("skimage_default", "uniform", size=7, sample_covariance=True),
}


def _window_1d(variant: SSIMVariant, dtype, device) -> "torch.Tensor":
    """Normalised 1-D window; the 2-D window is its outer product (both windows are separable)."""
    import torch

    n = variant.window_size
    if variant.window == "uniform":
        return torch.full((n,), 1.0 / n, dtype=torch.float64).to(dtype=dtype, device=device)
    r = (n - 1) // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / variant.sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _filter_valid(planes: "torch.Tensor", w: "torch.Tensor") -> "torch.Tensor":
    """Separable 'valid' filtering of (N, P, H, W) planes with the outer product of `w` with itself.

    Returns (N, P, H - n + 1, W - n + 1). float64 on CPU goes through shifted in-place sums, because
    PyTorch's CPU convolutions are several times slower in float64 than a plain multiply-add pass;
    everything else uses depthwise convolutions in channels-last layout (oneDNN's fast path).
    """
    import torch
    import torch.nn.functional as F

    n = w.numel()
    if planes.dtype == torch.float64 and planes.device.type == "cpu":
        return _shift_filter(_shift_filter(planes, w, dim=3), w, dim=2)
    p = planes.shape[1]
    planes = planes.contiguous(memory_format=torch.channels_last)
    planes = F.conv2d(planes, w.view(1, 1, 1, n).expand(p, 1, 1, n).contiguous(), groups=p)
    return F.conv2d(planes, w.view(1, 1, n, 1).expand(p, 1, n, 1).contiguous(), groups=p)


def _shift_filter(x: "torch.Tensor", w: "torch.Tensor", dim: int) -> "torch.Tensor":
    """'valid' 1-D correlation of `x` with `w` along `dim` as a sum of shifted slices."""
    n = w.numel()
    m = x.shape[dim] - n + 1
    weights = w.tolist()
    out = x.narrow(dim, 0, m) * weights[0]
    for k in range(1, n):
        out.add_(x.narrow(dim, k, m), alpha=weights[k])
    return out


def _ssim_batch(x: "torch.Tensor", y: "torch.Tensor", data_range: float, v: SSIMVariant,
                w: "torch.Tensor") -> "torch.Tensor":
    """SSIM of (B, H, W, C) float frames -> (B,) float64: mean over channels of mean SSIM maps."""
    import torch

    # channels are independent planes, as scikit-image treats them with channel_axis=-1
    x = x.permute(0, 3, 1, 2)
    y = y.permute(0, 3, 1, 2)
    c = x.shape[1]
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), w)
    ux, uy, uxx, uyy, uxy = stats.split(c, dim=1)
    n_px = v.window_size ** 2
    cov_norm = n_px / (n_px - 1) if v.sample_covariance else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (v.k1 * data_range) ** 2
    c2 = (v.k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # every channel has the same number of pixels, so the mean over (channel, pixel) equals
    # scikit-image's mean of per-channel means; accumulate in float64 as scikit-image does
    return s.to(torch.float64).flatten(1).mean(dim=1)


def ssim(a: Any, b: Any, data_range: float, variant: str | SSIMVariant = "gaussian", *,
         batch_size: int = 8, compute_dtype: "torch.dtype | None" = None,
         progress: "Progress | None" = None) -> "np.ndarray | torch.Tensor":
    """Structural similarity per frame (mean SSIM map, averaged over colour channels).

    a, b: (T, H, W, C) clips, numpy or torch, same shape, H and W at least the window size.
    variant: a name in `SSIM_VARIANTS` ("gaussian" = Wang et al. 2004, the default; or
    "skimage_default") or an `SSIMVariant`. compute_dtype: float32 by default (agrees with
    scikit-image to about 1e-6 on real frames, see the tests); float64 is what scikit-image uses
    for integer images and agrees to about 1e-14, at a few times the cost on CPU.
    Frames are processed `batch_size` at a time so memory stays bounded for long clips.
    """
    import torch

    ta, tb, as_numpy = check_pair(a, b, data_range)
    if isinstance(variant, str) and variant not in SSIM_VARIANTS:
        raise ValueError(f"unknown SSIM variant {variant!r}; choose from {sorted(SSIM_VARIANTS)}")
    v = SSIM_VARIANTS[variant] if isinstance(variant, str) else variant
    n = v.window_size
    if n % 2 != 1 or n < 3:
        raise ValueError(f"SSIM window size must be odd and >= 3, got {n}")
    if min(ta.shape[1], ta.shape[2]) < n:
        raise ValueError(f"frames of {ta.shape[1]}x{ta.shape[2]} are smaller than the {n}x{n} SSIM window")
    dtype = compute_dtype or torch.float32
    w = _window_1d(v, dtype, ta.device)
    out = torch.empty(ta.shape[0], dtype=torch.float64, device=ta.device)
    with true_fp32(ta.device):
        for s, e in tracked(batch_spans(ta.shape[0], batch_size), progress, f"SSIM ({v.name})"):
            out[s:e] = _ssim_batch(ta[s:e].to(dtype), tb[s:e].to(dtype), float(data_range), v, w)
    return to_output(out, as_numpy)


def clip_mean(per_frame: "np.ndarray | torch.Tensor") -> float:
    """The per-clip value: the plain mean over frames (+inf if any frame is +inf, as for PSNR)."""
    arr = np.asarray(per_frame.cpu() if hasattr(per_frame, "cpu") else per_frame, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no frames to average")
    return float(arr.mean())


# --------------------------------------------------------------------------------------------------
# metric classes the runner calls


def per_frame_list(values: np.ndarray, limit: int) -> list[float]:
    """Per-frame values for the results' extra column; evenly subsampled beyond `limit` frames."""
    values = np.asarray(values, dtype=np.float64)
    if limit > 0 and len(values) > limit:
        values = values[np.linspace(0, len(values) - 1, limit).round().astype(int)]
    return [float(x) for x in values]


def frames_per_batch(shape: tuple[int, ...], batch_size: int, max_pixels: int) -> int:
    """`batch_size`, lowered so that one batch holds at most `max_pixels` pixels (at least one
    frame): a metric's working copies are a few float32 planes per pixel, so a batch size chosen
    for 256x256 crops would take gigabytes at 1080x1920."""
    h, w = int(shape[1]), int(shape[2])
    return max(1, min(int(batch_size), int(max_pixels) // max(h * w, 1)))


def per_frame_values(fn: Any, generated: Any, ground_truth: Any, batch: int, progress: "Progress | None",
                     label: str) -> np.ndarray:
    """fn(a, b) -> per-frame values of aligned blocks of `batch` frames of two videos (arrays or lazy
    `data_recipes.frames` videos), concatenated: only one block of each is in memory at a time."""
    from data_recipes.frames import chunk_pairs

    parts = []
    bar = progress.task(label, len(generated)) if progress is not None else contextlib.nullcontext()
    with bar as handle:
        for a, b in chunk_pairs(generated, ground_truth, batch):
            parts.append(np.asarray(fn(a, b), dtype=np.float64))
            if handle is not None:
                handle.advance(len(a))
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


# Pixels per batch of the chunked metrics: about 4 frames of 1080x1920, 32 of 512x512.
PSNR_PIXELS = 8_400_000
SSIM_PIXELS = 2_100_000      # ~15 float32 planes per pixel in flight: ~0.3 GB at this size


def check_sample(sample: Sample) -> Score | None:
    """None when the sample can be scored; otherwise the Score that says why not."""
    if sample.ground_truth is None:
        return Score.missing("not_applicable", "no ground-truth frames (cross-driven request)")
    if sample.generated.shape != sample.ground_truth.shape:
        return Score.missing("failed", f"generated frames {sample.generated.shape} and ground truth "
                                       f"{sample.ground_truth.shape} differ in shape")
    if len(sample.generated) == 0:
        return Score.missing("too_short", "no frames to score")
    return None


@dataclass(frozen=True)
class PSNRConfig:
    """data_range: 255 for the uint8 frames the runner passes. per_frame_limit: how many per-frame
    values to keep in the results (evenly subsampled; 0 keeps all)."""

    data_range: float = 255.0
    batch_size: int = 32
    per_frame_limit: int = 250


@dataclass(frozen=True)
class SSIMConfig:
    """variant: "gaussian" (Wang et al. 2004, the reported one) or "skimage_default"."""

    data_range: float = 255.0
    variant: str = "gaussian"
    batch_size: int = 8
    per_frame_limit: int = 250


class PSNRMetric(Metric):
    spec = MetricSpec(
        name="psnr",
        description="peak signal-to-noise ratio against the ground-truth frames, mean over frames",
        values=(ValueSpec("PSNR", "higher", "dB", "10 log10(255^2 / MSE) per frame, RGB, mean over frames; "
                                                  "+inf when every frame is identical, identical frames "
                                                  "otherwise left out and counted"),),
        config=PSNRConfig,
        needs_ground_truth=True,
    )

    def score(self, sample: Sample) -> dict[str, Score]:
        if (bad := check_sample(sample)) is not None:
            return {"PSNR": bad}
        cfg: PSNRConfig = self.config or PSNRConfig()
        batch = frames_per_batch(sample.generated.shape, cfg.batch_size, PSNR_PIXELS)
        per_frame = per_frame_values(lambda a, b: psnr(a, b, cfg.data_range, batch_size=batch),
                                     sample.generated, sample.ground_truth, batch, self.context.progress, "PSNR")
        identical = np.isposinf(per_frame)
        extra: dict[str, Any] = {"per_frame": per_frame_list(per_frame, cfg.per_frame_limit),
                                 "identical_frames": int(identical.sum())}
        if identical.all():
            # the reference row (ground truth against itself): +inf is the true value, flagged
            return {"PSNR": Score.ok(math.inf, identical=True, **extra)}
        # Some frames copied through unchanged (e.g. frames where a method found no face) would make
        # the plain mean +inf and hide every other frame; they are left out of the mean and counted.
        return {"PSNR": Score.ok(clip_mean(per_frame[~identical]), **extra)}


class SSIMMetric(Metric):
    spec = MetricSpec(
        name="ssim",
        description="structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) against "
                    "the ground-truth frames, per RGB channel, mean over frames",
        values=(ValueSpec("SSIM", "higher", "", "mean SSIM per frame (Gaussian window, per channel), "
                                                "mean over frames; 1 for identical frames"),),
        config=SSIMConfig,
        needs_ground_truth=True,
    )

    def score(self, sample: Sample) -> dict[str, Score]:
        if (bad := check_sample(sample)) is not None:
            return {"SSIM": bad}
        cfg: SSIMConfig = self.config or SSIMConfig()
        window = SSIM_VARIANTS[cfg.variant].window_size if cfg.variant in SSIM_VARIANTS else 0
        if min(sample.generated.shape[1:3]) < window:
            return {"SSIM": Score.missing("not_applicable", f"frames of {sample.generated.shape[1]}x"
                                          f"{sample.generated.shape[2]} are smaller than the "
                                          f"{window}x{window} SSIM window")}
        batch = frames_per_batch(sample.generated.shape, cfg.batch_size, SSIM_PIXELS)
        per_frame = per_frame_values(lambda a, b: ssim(a, b, cfg.data_range, cfg.variant, batch_size=batch),
                                     sample.generated, sample.ground_truth, batch, self.context.progress,
                                     f"SSIM ({cfg.variant})")
        return {"SSIM": Score.ok(clip_mean(per_frame), variant=cfg.variant,
                                 per_frame=per_frame_list(per_frame, cfg.per_frame_limit))}
