"""Small networks and fixed encodings of the GeneFace++ renderer, with the original attribute names
(so state-dict keys match): MLP (`net.{i}`), AudioNet (`encoder_conv`, `encoder_fc1`), AudioAttNet
(`attentionConvNet`, `attentionNet`), the degree-4 spherical-harmonics direction encoding and the
sin/cos frequency encoding (neither has parameters).

Facts (modules/radnerfs/cond_encoder.py, encoders/shencoder, encoders/freqencoder):
- MLP: Linear layers without bias, ReLU between them, none after the last;
- AudioNet(dim_in, 64, win): four Conv1d(k3, pad 1) 204->32->32->64->64 with LeakyReLU(0.02) after
  each (strides 1 for a one-frame window), squeeze, Linear(64,64) LeakyReLU Linear(64,64);
- AudioAttNet(64, seq_len): five Conv1d(k3) 64->16->8->4->2->1 with LeakyReLU(0.02) over the window,
  Linear(seq_len, seq_len) + softmax, weighted sum of the window's features;
- SH: real spherical harmonics up to degree 4 (16 values) with torch-ngp's signs and constants;
- frequency: [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(k-1) x), cos(2^(k-1) x)] grouped per frequency.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, dim_hidden: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.net = nn.ModuleList([
            nn.Linear(dim_in if i == 0 else dim_hidden, dim_out if i == num_layers - 1 else dim_hidden, bias=False)
            for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i != self.num_layers - 1:
                x = F.relu(x)
        return x


def _audio_strides(win_size: int) -> list[int]:
    # the original's table (its `win_size == [5, 8]` comparison can never be true, so 5 and 8 raise)
    table = {1: [1, 1, 1, 1], 2: [2, 1, 1, 1], 3: [2, 2, 1, 1], 4: [2, 2, 1, 1], 16: [2, 2, 2, 2]}
    if win_size not in table:
        raise ValueError(f"unsupported AudioNet window {win_size} (1, 2, 3, 4 or 16)")
    return table[win_size]


class AudioNet(nn.Module):
    """Condition prenet: (B, win, dim_in) -> (B, dim_out)."""

    def __init__(self, dim_in: int = 204, dim_out: int = 64, win_size: int = 1):
        super().__init__()
        s = _audio_strides(win_size)
        act = lambda: nn.LeakyReLU(0.02, True)  # noqa: E731
        self.encoder_conv = nn.Sequential(
            nn.Conv1d(dim_in, 32, 3, stride=s[0], padding=1), act(),
            nn.Conv1d(32, 32, 3, stride=s[1], padding=1), act(),
            nn.Conv1d(32, 64, 3, stride=s[2], padding=1), act(),
            nn.Conv1d(64, 64, 3, stride=s[3], padding=1), act(),
        )
        self.encoder_fc1 = nn.Sequential(nn.Linear(64, 64), act(), nn.Linear(64, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder_conv(x.permute(0, 2, 1)).squeeze(-1)
        return self.encoder_fc1(x)


class AudioAttNet(nn.Module):
    """Attention smoother over a window of condition features: (seq_len, C) -> (C,)."""

    def __init__(self, in_out_dim: int = 64, seq_len: int = 3):
        super().__init__()
        self.seq_len = seq_len
        self.in_out_dim = in_out_dim
        chans = [in_out_dim, 16, 8, 4, 2, 1]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(a, b, 3, stride=1, padding=1), nn.LeakyReLU(0.02, True)]
        self.attentionConvNet = nn.Sequential(*layers)
        self.attentionNet = nn.Sequential(nn.Linear(seq_len, seq_len), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, : self.in_out_dim].permute(1, 0).unsqueeze(0)
        y = self.attentionConvNet(y)
        y = self.attentionNet(y.view(1, self.seq_len)).view(self.seq_len, 1)
        return torch.sum(y * x, dim=0)


def sh_encode(d: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit directions -> (..., 16) degree-4 real SH (torch-ngp's constants and signs)."""
    d = d.float()
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y,
        0.48860251190291987 * z,
        -0.48860251190291987 * x,
        1.0925484305920792 * xy,
        -1.0925484305920792 * yz,
        0.94617469575755997 * z2 - 0.31539156525251999,
        -1.0925484305920792 * xz,
        0.54627421529603959 * x2 - 0.54627421529603959 * y2,
        0.59004358992664352 * y * (-3.0 * x2 + y2),
        2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * z2),
        0.3731763325901154 * z * (5.0 * z2 - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * z2),
        1.4453057213202769 * z * (x2 - y2),
        0.59004358992664352 * x * (-x2 + 3.0 * y2),
    ], dim=-1)


def freq_encode(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(..., D) -> (..., D + 2 D degree): x, then sin and cos of 2^k x for k = 0 .. degree - 1."""
    parts = [x]
    for k in range(degree):
        s = x * (2.0 ** k)
        parts += [torch.sin(s), torch.cos(s)]
    return torch.cat(parts, dim=-1)


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp in fp32 whose gradient uses exp(clamp(x, -15, 15)) (the original's trunc_exp)."""
    return _TruncExp.apply(x.float())


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(-15, 15))
