"""Helpers shared by the Wav2Lip tests."""

from __future__ import annotations

import torch


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give BatchNorm non-trivial statistics and affine parameters (drawn from `seed`) so eval-mode
    outputs are informative; returns the model in eval mode. Golden numbers depend on the exact draws."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()
