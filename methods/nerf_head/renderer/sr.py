"""GeneFace++'s super-resolution module (modules/radnerfs/radnerf_sr.py `Superresolution`, built from
EG3D / StyleGAN2 blocks), written out in plain PyTorch with the original module tree so that
`sr_net.block0.*` / `sr_net.block1.*` keys load strictly.

Facts: block0 = SynthesisBlockNoUp(3 -> 128 channels at the input resolution, skip architecture):
conv0, conv1 (3x3 modulated convolutions with demodulation, noise, bias, leaky ReLU 0.2 x sqrt(2),
clamp 256) and torgb (1x1 modulated, no demodulation, clamp 256); its RGB output is the input image
plus torgb. block1 = SynthesisBlock(128 -> 64, 2x resolution, is_last): conv0 upsamples by 2
(transposed 3x3 convolution, stride 2, then the [1,3,3,1] FIR filter with gain 4), conv1, torgb; its
RGB is the FIR-upsampled (2x, gain 4) block0 RGB plus torgb. The style vector is constant (w = ones,
w_dim 16; each layer's affine maps it to per-channel scales, bias init 1). Noise is random at every
call (noise_mode "random" is the original's default in training and inference) scaled by a learned
strength that starts at 0. Buffers: `resample_filter` (the normalised 1-D filter, 4 values) on the
module, on each block and on each SynthesisLayer; `noise_const` (res x res) on each SynthesisLayer.

Deviation: channel counts and resolutions are parameters (the original fixes 256 -> 512 with 128 / 64
channels); the fp16 pre-normalisation of modulated_conv2d applies only to fp16 inputs in the original
and is left out (this path runs fp32 or bf16 autocast).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LRELU_GAIN = math.sqrt(2.0)
CONV_CLAMP = 256.0


def fir_filter() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return f / f.sum()


def _fir2d(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """Separable FIR over an already zero-upsampled image; pad = (left, right, top, bottom)."""
    c = x.shape[1]
    f = (f * (gain ** 0.5)).to(x.dtype)
    x = F.pad(x, list(pad))
    x = F.conv2d(x, f.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, f.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's upfirdn2d.upsample2d (up 2, padding [2, 1], gain 4)."""
    b, c, h, w = x.shape
    z = x.new_zeros(b, c, h, 2, w, 2)
    z[:, :, :, 0, :, 0] = x
    z = z.reshape(b, c, 2 * h, 2 * w)
    return _fir2d(z, f, (2, 1, 2, 1), gain=4.0)


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = 1.0 / np.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias.to(x.dtype).unsqueeze(0), x, (self.weight.to(x.dtype) * self.weight_gain).t())


def _modulated_conv(x, weight, styles, demodulate: bool, up: int, f: torch.Tensor | None):
    # x * styles -> conv -> * dcoefs: the non-fused form, the same numbers as the fused one
    b = x.shape[0]
    x = x * styles.to(x.dtype).reshape(b, -1, 1, 1)
    w = weight.to(x.dtype)
    if up == 1:
        x = F.conv2d(x, w, padding=w.shape[-1] // 2)
    else:
        # transposed 3x3 convolution, stride 2, no padding (2H + 1), then the FIR filter with
        # padding 1 each side and gain 4 (-> 2H): conv2d_resample's fast path for up=2, padding=1
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        x = _fir2d(x, f, (1, 1, 1, 1), gain=4.0)
    if demodulate:
        wm = weight.unsqueeze(0) * styles.reshape(b, 1, -1, 1, 1)
        dcoefs = (wm.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        x = x * dcoefs.to(x.dtype).reshape(b, -1, 1, 1)
    return x


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.register_buffer("resample_filter", fir_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x, w, noise_mode: str = "random", generator: torch.Generator | None = None):
        styles = self.affine(w)
        x = _modulated_conv(x, self.weight, styles, True, self.up, self.resample_filter)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, generator=generator)
            x = x + (noise * self.noise_strength).to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        x = F.leaky_relu(x + self.bias.to(x.dtype).reshape(1, -1, 1, 1), 0.2) * LRELU_GAIN
        return x.clamp(-CONV_CLAMP, CONV_CLAMP)


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / np.sqrt(in_channels)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = _modulated_conv(x, self.weight, styles, False, 1, None)
        return (x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)).clamp(-CONV_CLAMP, CONV_CLAMP)


class SynthesisBlockNoUp(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int):
        super().__init__()
        self.register_buffer("resample_filter", fir_filter())
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, 3, w_dim)

    def forward(self, x, img, ws, **kw):
        x = self.conv0(x, ws[:, 0], **kw)
        x = self.conv1(x, ws[:, 1], **kw)
        y = self.torgb(x, ws[:, 2]).float()
        return x, (img + y if img is not None else y)


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int):
        super().__init__()
        self.register_buffer("resample_filter", fir_filter())
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, 3, w_dim)

    def forward(self, x, img, ws, **kw):
        x = self.conv0(x, ws[:, 0], **kw)
        x = self.conv1(x, ws[:, 1], **kw)
        if img is not None:
            img = upsample2d(img.float(), self.resample_filter)
        y = self.torgb(x, ws[:, 2]).float()
        return x, (img + y if img is not None else y)


class Superresolution(nn.Module):
    """(B, 3, R, R) in [0, 1] -> (B, 3, 2R, 2R) (unclamped; the renderer clamps)."""

    def __init__(self, input_resolution: int = 256, channels: tuple[int, int] = (128, 64), w_dim: int = 16):
        super().__init__()
        self.input_resolution = input_resolution
        self.w_dim = w_dim
        self.block0 = SynthesisBlockNoUp(3, channels[0], w_dim, input_resolution)
        self.block1 = SynthesisBlock(channels[0], channels[1], w_dim, 2 * input_resolution)
        self.register_buffer("resample_filter", fir_filter())

    def forward(self, rgb: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        if rgb.shape[-1] < self.input_resolution:
            rgb = F.interpolate(rgb, size=(self.input_resolution, self.input_resolution), mode="bilinear",
                                align_corners=False, antialias=True)
        ws = torch.ones(rgb.shape[0], 3, self.w_dim, dtype=rgb.dtype, device=rgb.device)
        x, img = self.block0(rgb, rgb, ws, noise_mode=noise_mode, generator=generator)
        x, img = self.block1(x, img, ws, noise_mode=noise_mode, generator=generator)
        return img
