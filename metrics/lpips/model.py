"""LPIPS v0.1 (Zhang et al. 2018) as the `lpips` package computes it, on top of `backbones`.

For images x0, x1 in [-1, 1] (N, 3, H, W), RGB:
1. ScalingLayer: z = (x - shift) / scale with shift (-.030, -.088, -.188), scale (.458, .448, .450)
   (the ImageNet mean/std re-expressed for [-1, 1] inputs; v0.1 applies it, v0.0 did not);
2. the backbone's five ReLU taps f_l (see `backbones`), for both images;
3. unit-normalise each feature vector over channels: f / (sqrt(sum_c f^2) + 1e-10);
4. squared difference, 1x1 convolution with the v0.1 head of layer l (C_l -> 1, no bias; the
   dropout before it is inactive in evaluation), mean over the spatial positions;
5. sum over the five layers.
The image is used at the size it is given (no resizing), as `lpips.LPIPS.forward` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from metrics.lpips.backbones import ARCHS, BackboneArch, build_trunk

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.precision import Precision
    from bench.progress import Progress

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


def _head(channels: int) -> "nn.Module":
    """A v0.1 linear head with lpips' key layout: `model.0` Dropout, `model.1` Conv2d(C, 1, 1)."""
    from torch import nn

    head = nn.Module()
    head.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0, bias=False))
    return head


def build_heads(arch: BackboneArch) -> "nn.Module":
    """Module whose state dict keys are lin0.model.1.weight ... lin4.model.1.weight, as in the heads files."""
    from torch import nn

    heads = nn.Module()
    for i, c in enumerate(arch.channels):
        setattr(heads, f"lin{i}", _head(c))
    return heads


def assemble(arch: BackboneArch, trunk: "nn.Module", heads: "nn.Module") -> "nn.Module":
    """The LPIPS net: `trunk` (torchvision `features` layout), `heads` (lpips `lin*` layout) and the
    fixed scaling constants as non-persistent buffers (they are part of the method, not of any
    weight file, and follow the module across devices). Evaluation mode, no gradients."""
    import torch
    from torch import nn

    model = nn.Module()
    model.arch = arch
    model.trunk = trunk
    model.heads = heads
    model.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
    model.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
    model.eval()
    model.requires_grad_(False)
    return model


def build_lpips_net(net: str) -> "nn.Module":
    """An LPIPS net for "alex" or "vgg" with PyTorch's default initialisation (no files read)."""
    if net not in ARCHS:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose from {sorted(ARCHS)}")
    arch = ARCHS[net]
    return assemble(arch, build_trunk(arch), build_heads(arch))


def lpips_forward(model: "nn.Module", x0: "torch.Tensor", x1: "torch.Tensor") -> "torch.Tensor":
    """float (N, 3, H, W) images in [-1, 1], RGB -> (N,) LPIPS distances (model from `assemble`)."""
    import torch

    n = x0.shape[0]
    # both images go through the trunk as one batch; only the current layer's features stay alive
    h = (torch.cat([x0, x1], dim=0) - model.shift) / model.scale
    total = torch.zeros(n, dtype=h.dtype, device=h.device)
    start = 0
    for i, tap in enumerate(model.arch.taps):
        for j in range(start, tap + 1):
            h = model.trunk.features[j](h)
        start = tap + 1
        f = h / (h.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
        d = (f[:n] - f[n:]).square()
        head = getattr(model.heads, f"lin{i}").model
        total = total + head(d).mean(dim=(2, 3)).flatten()
    return total


def load_heads(heads: "nn.Module", path) -> None:
    """Load a v0.1 heads file (lpips' `lin{k}.model.1.weight` keys) strictly into `heads`."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict of LPIPS heads")
    heads.load_state_dict(state, strict=True)


def frames_to_unit_range(frames: "torch.Tensor", data_range: float) -> "torch.Tensor":
    """(B, H, W, 3) frames with values in [0, data_range] -> float32 (B, 3, H, W) in [-1, 1].

    Division by data_range / 2 (127.5 for uint8) rather than multiplication by its inverse, so the
    float32 values are bit-identical to lpips' `im2tensor` (image / (255 / 2) - 1).
    """
    import torch

    x = frames.permute(0, 3, 1, 2).to(torch.float32)
    return x / (float(data_range) / 2.0) - 1.0


def lpips_distance(a: Any, b: Any, net: "nn.Module", data_range: float, *, batch_size: int = 4,
                   progress: "Progress | None" = None,
                   precision: "Precision | None" = None) -> "np.ndarray | torch.Tensor":
    """LPIPS per frame between two clips.

    a, b: (T, H, W, 3) RGB clips, numpy or torch, same shape, values in [0, data_range] (uint8
    frames: data_range 255). net: from `load_lpips` (or `assemble`). Tensors are scored on their own
    device (the net is moved there); numpy input is scored on the net's device. Returns (T,) float64
    (numpy for numpy input, a tensor on the input's device otherwise). `batch_size` frames at a
    time keep memory bounded (VGG at 512x512 needs about 0.6 GB of activations per frame pair).
    `precision`: a `bench.precision.Precision`; None or fp32 is the faithful path (true fp32, no
    TF32), anything else runs the net under that autocast region.
    """
    import torch

    from metrics.image import batch_spans, check_pair, to_output, tracked, true_fp32

    ta, tb, as_numpy = check_pair(a, b, data_range)
    if ta.shape[-1] != 3:
        raise ValueError(f"LPIPS needs RGB frames (T, H, W, 3), got {tuple(ta.shape)}")
    if isinstance(a, torch.Tensor):
        net.to(ta.device)
        device = ta.device
    else:
        device = net.shift.device
    out = torch.empty(ta.shape[0], dtype=torch.float64, device=device)
    faithful = precision is None or precision.name == "fp32"
    region = true_fp32(torch.device(device)) if faithful else precision.autocast(str(device))
    with torch.inference_mode(), region:
        for s, e in tracked(batch_spans(ta.shape[0], batch_size), progress, f"LPIPS ({net.arch.name})"):
            x0 = frames_to_unit_range(ta[s:e].to(device), data_range)
            x1 = frames_to_unit_range(tb[s:e].to(device), data_range)
            out[s:e] = lpips_forward(net, x0, x1).to(torch.float64)
    return to_output(out, as_numpy)


@dataclass(frozen=True)
class LoadedWeight:
    """A weight file used by a loaded LPIPS net, for the run manifest."""

    role: str
    path: str
    sha256: str
    origin: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "path": self.path, "sha256": self.sha256, "origin": self.origin}


def load_lpips(net: str, device: str = "cpu", folder=None) -> tuple["nn.Module", list[LoadedWeight]]:
    """The LPIPS net for "alex" or "vgg" with the official backbone and the v0.1 heads.

    The backbone comes from the weights folder ($TALKBENCH_WEIGHTS) under torchvision's file name,
    its sha256 checked against the prefix in that name; raises bench.weights.WeightsMissing (with
    what to put where) or WeightsMismatch. The heads come from the weights folder if the user put a
    copy there, else from the copy bundled with the package; their full sha256 is checked.
    """
    from bench import weights as W
    from metrics.lpips import specs
    from metrics.lpips.backbones import load_trunk, read_state_dict

    backbone_spec, heads_spec = specs.backbone_spec(net), specs.heads_spec(net)
    backbone_path = W.locate(backbone_spec, folder)
    heads_path = W.locate(heads_spec, folder)
    arch = ARCHS[net]
    trunk = load_trunk(arch, read_state_dict(backbone_path), str(backbone_path))
    heads = build_heads(arch)
    load_heads(heads, heads_path)
    model = assemble(arch, trunk, heads).to(device)
    bundled = W._bundled_path(heads_spec)
    used = [
        LoadedWeight(f"LPIPS backbone ({arch.name})", str(backbone_path), W.sha256_file(backbone_path), "official"),
        LoadedWeight(f"LPIPS v0.1 heads ({net})", str(heads_path), W.sha256_file(heads_path),
                     "bundled" if bundled is not None and heads_path == bundled else "official"),
    ]
    return model, used
