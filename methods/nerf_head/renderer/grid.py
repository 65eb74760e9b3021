"""Multiresolution grid encoder (torch-ngp's `GridEncoder`, "tiled" and "hash") in plain PyTorch.

Facts carried over from GeneFace++'s gridencoder (modules/radnerfs/encoders/gridencoder):
- level l has a float32 scale `2^(l * log2(per_level_scale)) * base - 1` and resolution
  `ceil(scale) + 1`; a point x in [0, 1]^D sits at `x * scale + 0.5`;
- level sizes: `min(2^log2_hashmap_size, (R + 1)^D)` rounded up to a multiple of 8, with
  R = ceil(base * per_level_scale^l) (align_corners=False); `offsets` holds their prefix sums;
- tiled index: sum over dimensions of coord * stride with stride *= (resolution + 1), where a
  dimension is only added while the stride is still <= the level size (so the fine 3-D levels drop z),
  then modulo the level size; "hash" switches to the xor-prime hash where the dense index overflows;
- a point outside [0, 1]^D encodes to zeros on every level;
- parameters `embeddings` (total, level_dim), init U(-1e-4, 1e-4); buffer `offsets` int32.

Here everything is tensor ops (gather + multilinear weights), so it runs on CPU and CUDA alike and
autograd gives the gradient for both the table and the input coordinates (the ambient grid needs the
latter). Forward is deterministic everywhere; the table gradient is a scatter-add, deterministic on
CPU, atomic on CUDA (as in the original kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


@dataclass(frozen=True)
class GridConfig:
    """One grid encoder. Official: 16 levels x 2 features, 16 -> 2048, 2^16 entries per level, tiled.

    backend: "torch" (this file) or "tcnn" (tiny-cuda-nn where importable: same fields, its own
    table layout, so a checkpoint of one backend does not load into the other);
    compile: wrap the encoder's forward in torch.compile (off by default: a CPU run must not need a
    compiler toolchain).
    """

    num_levels: int = 16
    level_dim: int = 2
    base_resolution: int = 16
    desired_resolution: int = 2048
    log2_hashmap_size: int = 16
    gridtype: Literal["tiled", "hash"] = "tiled"
    backend: Literal["torch", "tcnn"] = "torch"
    compile: bool = False


@dataclass(frozen=True)
class LevelLayout:
    """Per-level constants of a grid (numpy, built once)."""

    offsets: np.ndarray       # (L + 1,) int64 prefix sums of the level sizes
    sizes: np.ndarray         # (L,) int64 entries per level
    scales: np.ndarray        # (L,) float32 `x * scale + 0.5`
    strides: np.ndarray       # (L, D) int64 stride per dimension (0 = dimension dropped)
    dense: np.ndarray         # (L,) bool: the dense index never exceeds the level size
    per_level_scale: float


def per_level_scale(cfg: GridConfig) -> float:
    if cfg.num_levels <= 1:
        return 1.0
    return float(np.exp2(np.log2(cfg.desired_resolution / cfg.base_resolution) / (cfg.num_levels - 1)))


def level_layout(cfg: GridConfig, input_dim: int) -> LevelLayout:
    """The level sizes, scales and index strides exactly as torch-ngp computes them."""
    pls = per_level_scale(cfg)
    max_params = 2 ** cfg.log2_hashmap_size
    sizes, offsets = [], [0]
    for level in range(cfg.num_levels):
        res = int(np.ceil(cfg.base_resolution * pls ** level))
        n = min(max_params, (res + 1) ** input_dim)
        n = int(np.ceil(n / 8) * 8)
        sizes.append(n)
        offsets.append(offsets[-1] + n)
    # the kernel's own float32 arithmetic (exp2f of level * float(log2 scale))
    s32 = np.float32(np.log2(pls))
    scales = np.array([np.float32(np.exp2(np.float32(level * s32))) * np.float32(cfg.base_resolution)
                       - np.float32(1.0) for level in range(cfg.num_levels)], dtype=np.float32)
    strides = np.zeros((cfg.num_levels, input_dim), dtype=np.int64)
    dense = np.zeros(cfg.num_levels, dtype=bool)
    for level in range(cfg.num_levels):
        resolution = int(math.ceil(float(scales[level]))) + 1
        stride = 1
        for d in range(input_dim):
            if stride > sizes[level]:
                break
            strides[level, d] = stride
            stride *= resolution + 1
        dense[level] = stride <= sizes[level]
    return LevelLayout(np.array(offsets, dtype=np.int64), np.array(sizes, dtype=np.int64), scales,
                       strides, dense, pls)


def _make_torch_module():
    import torch
    from torch import nn

    class GridEncoder(nn.Module):
        """Pure-PyTorch tiled/hash grid. forward(x in [-bound, bound]^D) -> (..., L * C)."""

        def __init__(self, cfg: GridConfig, input_dim: int):
            super().__init__()
            self.cfg = cfg
            self.input_dim = input_dim
            self.output_dim = cfg.num_levels * cfg.level_dim
            lay = level_layout(cfg, input_dim)
            self.layout = lay
            # official names: a parameter `embeddings` and an int32 buffer `offsets`
            self.embeddings = nn.Parameter(torch.empty(int(lay.offsets[-1]), cfg.level_dim))
            self.register_buffer("offsets", torch.from_numpy(lay.offsets.astype(np.int32)))
            # derived constants, not saved (they follow from the config)
            self.register_buffer("_scales", torch.from_numpy(lay.scales), persistent=False)
            self.register_buffer("_strides", torch.from_numpy(lay.strides), persistent=False)
            self.register_buffer("_starts", torch.from_numpy(lay.offsets[:-1].copy()), persistent=False)
            # non-dense levels are exactly 2^log2_hashmap_size long, so "% size" is "& (size - 1)"
            mask = np.where(lay.dense, np.int64(2 ** 62 - 1), lay.sizes - 1)
            self.register_buffer("_mask", torch.from_numpy(mask.astype(np.int64)), persistent=False)
            self.register_buffer("_dense", torch.from_numpy(lay.dense), persistent=False)
            self.register_buffer("_primes", torch.tensor(PRIMES[:input_dim], dtype=torch.int64), persistent=False)
            bits = np.array([[(c >> d) & 1 for d in range(input_dim)] for c in range(1 << input_dim)], np.int64)
            self.register_buffer("_bits", torch.from_numpy(bits), persistent=False)           # (2^D, D)
            self.register_buffer("_corner_off", torch.from_numpy(lay.strides @ bits.T), persistent=False)  # (L, 2^D)
            self.reset_parameters()
            self._forward = self._encode
            if cfg.compile:
                self._forward = torch.compile(self._encode, dynamic=True)

        def reset_parameters(self, generator=None) -> None:
            with torch.no_grad():
                self.embeddings.uniform_(-1e-4, 1e-4, generator=generator)

        def _rows(self, base: "torch.Tensor") -> "torch.Tensor":
            """(N, L, D) lower-corner coordinates -> (N, L, 2^D) rows into `embeddings`."""
            if self.cfg.gridtype == "tiled":
                # int32 is enough: a tiled level only adds a dimension while its stride <= the level size
                idx = (base.int() * self._strides.int()).sum(-1, dtype=torch.int32)
                idx = idx[..., None] + self._corner_off.int()                              # (N, L, 2^D)
                return (idx & self._mask.clamp(max=2 ** 31 - 1).int()[:, None]) + self._starts.int()[:, None]
            base = base.long()
            corners = base[:, :, None, :] + self._bits                                   # (N, L, 2^D, D)
            dense = (corners * self._strides[:, None, :]).sum(-1)
            h = (corners[..., 0] * self._primes[0]) & 0xFFFFFFFF
            for d in range(1, self.input_dim):
                h = h ^ ((corners[..., d] * self._primes[d]) & 0xFFFFFFFF)
            idx = torch.where(self._dense[:, None], dense, h)
            return (idx & self._mask[:, None]) + self._starts[:, None]

        def _weights(self, frac: "torch.Tensor") -> "torch.Tensor":
            """(N, L, D) fractions -> (N, L, 2^D) multilinear weights, corner c = sum_d bit_d 2^d."""
            w = None
            for d in reversed(range(self.input_dim)):       # the last dimension is the slowest bit
                pair = torch.stack([1 - frac[..., d], frac[..., d]], -1)                # (N, L, 2)
                w = pair if w is None else (w.unsqueeze(-1) * pair.unsqueeze(-2)).flatten(-2)
            return w

        def _encode(self, x: "torch.Tensor") -> "torch.Tensor":
            # x: (N, D) in [0, 1]
            x = x.float()
            n = x.shape[0]
            pos = x[:, None, :] * self._scales[None, :, None] + 0.5               # (N, L, D)
            base = torch.floor(pos)
            rows = self._rows(base)                                                # (N, L, 2^D)
            w = self._weights(pos - base)
            feat = self.embeddings.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)
            out = torch.einsum("nlc,nlcf->nlf", w.to(feat.dtype), feat)            # (N, L, C)
            inside = ((x >= 0) & (x <= 1)).all(-1)
            out = out * inside[:, None, None].to(out.dtype)
            return out.reshape(n, self.output_dim)

        def forward(self, inputs: "torch.Tensor", bound: float = 1.0) -> "torch.Tensor":
            x = (inputs + bound) / (2 * bound)
            prefix = inputs.shape[:-1]
            out = self._forward(x.reshape(-1, self.input_dim))
            return out.reshape(*prefix, self.output_dim)

    return GridEncoder


_TORCH_CLASS = None


def torch_grid_class():
    """The GridEncoder nn.Module class (built on first use so importing this file imports no torch)."""
    global _TORCH_CLASS
    if _TORCH_CLASS is None:
        _TORCH_CLASS = _make_torch_module()
    return _TORCH_CLASS


def tcnn_available() -> tuple[bool, str]:
    """Whether tiny-cuda-nn can be used here, and why not."""
    import importlib.util

    if importlib.util.find_spec("tinycudann") is None:
        return False, "tinycudann is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "tinycudann needs a CUDA device"
    try:
        import tinycudann  # noqa: F401
    except Exception as exc:  # a broken build is a reason, not a crash
        return False, f"tinycudann does not import: {exc}"
    return True, ""


def _make_tcnn_module():
    import torch
    from torch import nn

    class TcnnGridEncoder(nn.Module):
        """tiny-cuda-nn's Grid encoding with the same config fields (its own parameter layout)."""

        def __init__(self, cfg: GridConfig, input_dim: int):
            super().__init__()
            import tinycudann as tcnn

            self.cfg = cfg
            self.input_dim = input_dim
            self.output_dim = cfg.num_levels * cfg.level_dim
            self.layout = level_layout(cfg, input_dim)
            self.encoding = tcnn.Encoding(input_dim, {
                "otype": "Grid", "type": "Tiled" if cfg.gridtype == "tiled" else "Hash",
                "n_levels": cfg.num_levels, "n_features_per_level": cfg.level_dim,
                "log2_hashmap_size": cfg.log2_hashmap_size, "base_resolution": cfg.base_resolution,
                "per_level_scale": self.layout.per_level_scale, "interpolation": "Linear",
            }, dtype=torch.float32)

        def forward(self, inputs: "torch.Tensor", bound: float = 1.0) -> "torch.Tensor":
            x = (inputs + bound) / (2 * bound)
            prefix = inputs.shape[:-1]
            flat = x.reshape(-1, self.input_dim)
            inside = ((flat >= 0) & (flat <= 1)).all(-1, keepdim=True)
            out = self.encoding(flat.clamp(0, 1).float()).float() * inside
            return out.reshape(*prefix, self.output_dim)

    return TcnnGridEncoder


def make_grid_encoder(cfg: GridConfig, input_dim: int):
    """The encoder module for `cfg` ("torch" everywhere; "tcnn" only where it imports)."""
    if cfg.backend == "torch":
        return torch_grid_class()(cfg, input_dim)
    if cfg.backend == "tcnn":
        ok, why = tcnn_available()
        if not ok:
            raise RuntimeError(f"grid backend 'tcnn' is unavailable: {why}; use backend='torch'")
        return _make_tcnn_module()(cfg, input_dim)
    raise ValueError(f"unknown grid backend {cfg.backend!r} (torch | tcnn)")
