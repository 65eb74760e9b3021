"""GeneFace++'s audio-to-motion network (`PitchContourVAEModel`) with the official state-dict layout.

Facts from yerfor/GeneFacePlusPlus @ 6c35651 (modules/audio2motion/vae.py, flow_base.py,
utils/commons/pitch_utils.py); the code here is the suite's own.

Data flow (B batch, 2T rows of 50 Hz audio features, T frames at 25 fps):
- audio (B, 2T, C_audio), f0 (B, 2T) Hz, blink (B, 2T) int in {0, 1} are brought to 25 fps by
  nearest interpolation with scale 0.5 (i.e. rows 0, 2, 4, ...);
- `mel_encoder` Conv1d(C_audio->F, k3, no bias) -> BatchNorm -> GELU -> Conv1d(F->F, k3, no bias);
  f0 -> `f0_to_coarse` (256 mel bins, torch rounding (x + 0.5).long()) -> `pitch_embed`
  Embedding(300, F) -> `pitch_encoder` (same shape as the mel encoder); `blink_embed` Embedding(2, F);
  `mouth_amp_embed` (F,) times the clip's scalar mouth amplitude; concatenated -> `cond_proj` -> F;
- FVAE (`vae`): the condition g (B, F, T) is squeezed by `g_pre_net` Conv1d(F, F, k 2s, stride s,
  pad s // 2) to T / s; encoder = stride-s conv + WaveNet on the squeezed condition -> mean / log-std
  of a latent at T / s; prior = residual-coupling flow (mean-only couplings alternating with channel
  flips) on the squeezed condition; decoder = ConvTranspose1d(latent->hidden, k s, stride s) +
  WaveNet on the full-rate condition + 1x1 projection to the motion channels.
- inference: z ~ N(0, 1) * temperature at T / s, reverse flow, decode.
Weight-normalised convolutions keep the pre-parametrisation names `weight_g` / `weight_v` (what
`torch.nn.utils.weight_norm` saved in the official checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

F0_BIN = 256
F0_MIN = 50.0
F0_MAX = 1100.0
PITCH_VOCAB = 300  # Embedding(300, F): bins 1..255 are used


@dataclass(frozen=True)
class A2MArch:
    """Architecture of `PitchContourVAEModel`; the defaults are the official model's.

    audio_dim: channels of the audio features (1024 for HuBERT-large; 80 for the suite's mel front end);
    motion_dim: output channels (64 BFM expression coefficients; 144 for the id_exp variant);
    feat_dim: condition width (128); hidden / latent / kernel / enc_layers / dec_layers: FVAE
        (256, 16, 5, 8, 4); flow_hidden / flow_kernel / flow_layers / flow_count: prior flow (64, 3,
        4 WaveNet layers per coupling, 4 couplings); stride: latent downsampling (4);
    use_mouth_amp / use_eye_amp: the amplitude embeddings (official config: true / false);
    use_flow: the prior flow (official: true).
    """

    audio_dim: int = 1024
    motion_dim: int = 64
    feat_dim: int = 128
    hidden: int = 256
    latent: int = 16
    kernel: int = 5
    enc_layers: int = 8
    dec_layers: int = 4
    flow_hidden: int = 64
    flow_kernel: int = 3
    flow_layers: int = 4
    flow_count: int = 4
    stride: int = 4
    use_mouth_amp: bool = True
    use_eye_amp: bool = False
    use_flow: bool = True


def f0_to_coarse(f0: torch.Tensor) -> torch.Tensor:
    """GeneFace++'s torch `f0_to_coarse`: Hz -> int64 bins 1..255 on a mel scale, 1 for unvoiced.

    The torch branch rounds with (x + 0.5).long(); the numpy branch (used by the f0 stage) uses rint:
    they differ only on exact .5 ties.
    """
    # the original's bounds are numpy float64 scalars, which torch applies as Python scalars
    mel_min = 1127.0 * math.log(1.0 + F0_MIN / 700.0)
    mel_max = 1127.0 * math.log(1.0 + F0_MAX / 700.0)
    mel = 1127.0 * torch.log(1.0 + f0 / 700.0)
    scaled = (mel - mel_min) * (F0_BIN - 2) / (mel_max - mel_min) + 1.0
    mel = torch.where(mel > 0, scaled, mel)
    mel = torch.where(mel <= 1, torch.ones_like(mel), mel)
    mel = torch.where(mel > F0_BIN - 1, torch.full_like(mel, F0_BIN - 1), mel)
    return (mel + 0.5).long()


def downsample_half(x: torch.Tensor) -> torch.Tensor:
    """(B, 2T, C) -> (B, T, C): `F.interpolate(scale_factor=0.5, mode='nearest')` on the time axis."""
    return F.interpolate(x.transpose(1, 2), scale_factor=0.5, mode="nearest").transpose(1, 2)


class WNConv1d(nn.Conv1d):
    """Conv1d with weight normalisation over all dims but the first, stored as weight_g / weight_v."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        v = self.weight.detach().clone()
        del self.weight
        self.weight_g = nn.Parameter(v.norm(dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(1, 2), keepdim=True))
        return self._conv_forward(x, w, self.bias)


class WaveNet(nn.Module):
    """Non-causal gated WaveNet (GeneFace++ `WN`): cond_layer, in_layers.i, res_skip_layers.i."""

    def __init__(self, hidden: int, kernel: int, dilation_rate: int, layers: int, cond_channels: int = 0):
        super().__init__()
        if kernel % 2 != 1 or hidden % 2 != 0:
            raise ValueError("WaveNet needs an odd kernel and an even hidden size")
        self.hidden, self.layers = hidden, layers
        if cond_channels:
            self.cond_layer = WNConv1d(cond_channels, 2 * hidden * layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(layers):
            dilation = dilation_rate ** i
            pad = (kernel * dilation - dilation) // 2
            self.in_layers.append(WNConv1d(hidden, 2 * hidden, kernel, dilation=dilation, padding=pad))
            out = 2 * hidden if i < layers - 1 else hidden  # the last layer only feeds the skip sum
            self.res_skip_layers.append(WNConv1d(hidden, out, 1))

    def forward(self, x: torch.Tensor, mask, g: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.zeros_like(x)
        if g is not None:
            g = self.cond_layer(g)
        h = self.hidden
        for i in range(self.layers):
            x_in = self.in_layers[i](x)
            g_l = g[:, 2 * h * i:2 * h * (i + 1)] if g is not None else torch.zeros_like(x_in)
            a = x_in + g_l
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            rs = self.res_skip_layers[i](acts)
            if i < self.layers - 1:
                x = (x + rs[:, :h]) * mask
                out = out + rs[:, h:]
            else:
                out = out + rs
        return out * mask


class CouplingLayer(nn.Module):
    """Mean-only residual affine coupling (GeneFace++ `ResidualCouplingLayer`, mean_only=True)."""

    def __init__(self, channels: int, hidden: int, kernel: int, layers: int, cond_channels: int):
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WaveNet(hidden, kernel, 1, layers, cond_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)
        # zero init: each coupling starts as the identity (as the original)
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(self, x: torch.Tensor, mask, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        x0, x1 = x[:, :self.half], x[:, self.half:]
        h = self.enc(self.pre(x0) * mask, mask, g)
        m = self.post(h) * mask
        x1 = (x1 - m) * mask if reverse else m + x1 * mask
        return torch.cat([x0, x1], 1)


class Flip(nn.Module):
    def forward(self, x: torch.Tensor, mask=None, g=None, reverse: bool = False) -> torch.Tensor:
        return torch.flip(x, [1])


class CouplingFlow(nn.Module):
    """`ResidualCouplingBlock`: flows = [coupling, flip] x count (couplings at even indices)."""

    def __init__(self, channels: int, hidden: int, kernel: int, layers: int, count: int, cond_channels: int):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(count):
            self.flows.append(CouplingLayer(channels, hidden, kernel, layers, cond_channels))
            self.flows.append(Flip())

    def forward(self, x: torch.Tensor, mask, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        for flow in (reversed(self.flows) if reverse else self.flows):
            x = flow(x, mask, g=g, reverse=reverse)
        return x


class FVAEEncoder(nn.Module):
    def __init__(self, arch: A2MArch):
        super().__init__()
        s = arch.stride
        self.stride = s
        self.latent = arch.latent
        self.pre_net = nn.Sequential(nn.Conv1d(arch.motion_dim, arch.hidden, kernel_size=2 * s, stride=s, padding=s // 2))
        self.wn = WaveNet(arch.hidden, arch.kernel, 1, arch.enc_layers, arch.feat_dim)
        self.out_proj = nn.Conv1d(arch.hidden, 2 * arch.latent, 1)

    def forward(self, x, mask, g, noise: torch.Tensor | None = None):
        x = self.pre_net(x)
        mask_sqz = mask[:, :, ::self.stride][:, :, :x.shape[-1]]
        x = self.wn(x * mask_sqz, mask_sqz, g) * mask_sqz
        m, logs = torch.split(self.out_proj(x), self.latent, dim=1)
        if noise is None:
            noise = torch.randn_like(m)
        return m + noise * torch.exp(logs), m, logs, mask_sqz


class FVAEDecoder(nn.Module):
    def __init__(self, arch: A2MArch):
        super().__init__()
        s = arch.stride
        self.pre_net = nn.Sequential(nn.ConvTranspose1d(arch.latent, arch.hidden, kernel_size=s, stride=s))
        self.wn = WaveNet(arch.hidden, arch.kernel, 1, arch.dec_layers, arch.feat_dim)
        self.out_proj = nn.Conv1d(arch.hidden, arch.motion_dim, 1)

    def forward(self, z, mask, g):
        x = self.pre_net(z) * mask
        return self.out_proj(self.wn(x, mask, g) * mask)


class FVAE(nn.Module):
    def __init__(self, arch: A2MArch):
        super().__init__()
        s = arch.stride
        self.latent = arch.latent
        self.use_flow = arch.use_flow
        self.g_pre_net = nn.Sequential(nn.Conv1d(arch.feat_dim, arch.feat_dim, kernel_size=2 * s, stride=s, padding=s // 2))
        self.encoder = FVAEEncoder(arch)
        if arch.use_flow:
            self.prior_flow = CouplingFlow(arch.latent, arch.flow_hidden, arch.flow_kernel, arch.flow_layers,
                                           arch.flow_count, arch.feat_dim)
        self.decoder = FVAEDecoder(arch)

    def train_forward(self, x, mask, g, noise: torch.Tensor | None = None):
        """x (B, C, T), mask (B, 1, T), g (B, F, T) -> (recon (B, C, T), kl, m_q, logs_q).

        kl: the original's single-sample estimate log q(z|x) - log p(z) with the flow prior, averaged
        over unmasked latent frames and channels.
        """
        g_sqz = self.g_pre_net(g)
        z_q, m_q, logs_q, mask_sqz = self.encoder(x, mask, g_sqz, noise)
        recon = self.decoder(z_q, mask, g)
        log_q = torch.distributions.Normal(m_q, logs_q.exp()).log_prob(z_q)
        if self.use_flow:
            z_p = self.prior_flow(z_q, mask_sqz, g_sqz)
            log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z_p)
            kl = ((log_q - log_p) * mask_sqz).sum() / mask_sqz.sum() / log_q.shape[1]
        else:
            std = torch.distributions.Normal(torch.zeros_like(m_q), torch.ones_like(m_q))
            kl_t = torch.distributions.kl_divergence(torch.distributions.Normal(m_q, logs_q.exp()), std)
            kl = (kl_t * mask_sqz).sum() / mask_sqz.sum() / z_q.shape[1]
        return recon, kl, m_q, logs_q

    def infer(self, g, temperature: float, generator: torch.Generator | None = None):
        """g (B, F, T) -> (B, C, T) from z ~ N(0, 1) * temperature through the reverse flow."""
        g_sqz = self.g_pre_net(g)
        shape = (g_sqz.shape[0], self.latent, g_sqz.shape[2])
        z = torch.randn(shape, generator=generator, dtype=torch.float32).to(g.device, g.dtype) * temperature
        if self.use_flow:
            z = self.prior_flow(z, 1, g_sqz, reverse=True)
        return self.decoder(z, 1, g)


def _conv_stack(c_in: int, feat: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, feat, 3, 1, 1, bias=False), nn.BatchNorm1d(feat), nn.GELU(),
                         nn.Conv1d(feat, feat, 3, 1, 1, bias=False))


class PitchContourVAEModel(nn.Module):
    """Audio (+ f0, blink, mouth amplitude) -> motion at 25 fps. See the module docstring."""

    def __init__(self, arch: A2MArch = A2MArch()):
        super().__init__()
        self.arch = arch
        f = arch.feat_dim
        self.blink_embed = nn.Embedding(2, f)
        self.mel_encoder = _conv_stack(arch.audio_dim, f)
        self.pitch_embed = nn.Embedding(PITCH_VOCAB, f)
        nn.init.normal_(self.pitch_embed.weight, 0.0, f ** -0.5)  # the original's Embedding() init
        self.pitch_encoder = _conv_stack(f, f)
        cond = 3 * f
        if arch.use_mouth_amp:
            self.mouth_amp_embed = nn.Parameter(torch.randn(f))
            cond += f
        if arch.use_eye_amp:
            self.eye_amp_embed = nn.Parameter(torch.randn(f))
            cond += f
        self.cond_proj = nn.Linear(cond, f, bias=True)
        self.vae = FVAE(arch)

    def condition(self, audio: torch.Tensor, f0: torch.Tensor, blink: torch.Tensor | None = None,
                  mouth_amp: torch.Tensor | float = 0.4, eye_amp: torch.Tensor | float = 1.0) -> torch.Tensor:
        """(B, 2T, C_audio), f0 (B, 2T) Hz, blink (B, 2T) int or None (zeros) -> condition (B, T, F).

        mouth_amp / eye_amp: (B,) or (B, 1) tensors or one float for the batch (inference: 0.4 / 1.0).
        """
        b = audio.shape[0]
        if blink is None:
            blink = torch.zeros(f0.shape, dtype=torch.long, device=f0.device)
        blink_feat = downsample_half(self.blink_embed(blink.long()))
        audio = downsample_half(audio)
        f0 = downsample_half(f0.unsqueeze(-1)).squeeze(-1)
        pitch = self.pitch_embed(f0_to_coarse(f0))
        feats = [self.mel_encoder(audio.transpose(1, 2)).transpose(1, 2),
                 self.pitch_encoder(pitch.transpose(1, 2)).transpose(1, 2), blink_feat]
        t = feats[0].shape[1]
        for use, value, emb in ((self.arch.use_mouth_amp, mouth_amp, "mouth_amp_embed"),
                                (self.arch.use_eye_amp, eye_amp, "eye_amp_embed")):
            if use:
                amp = torch.as_tensor(value, dtype=audio.dtype, device=audio.device).reshape(-1, 1)
                amp = amp.expand(b, 1)
                feats.append((amp.unsqueeze(1) * getattr(self, emb).reshape(1, 1, -1)).expand(b, t, -1))
        return self.cond_proj(torch.cat(feats, dim=-1))

    def forward_train(self, audio, f0, motion, mask, blink=None, mouth_amp=0.4, noise=None):
        """Training pass: motion (B, T, C), mask (B, T) -> (pred (B, T, C) masked, kl)."""
        cond = self.condition(audio, f0, blink, mouth_amp)
        recon, kl, _, _ = self.vae.train_forward(motion.transpose(1, 2), mask.unsqueeze(1), cond.transpose(1, 2), noise)
        return recon.transpose(1, 2) * mask.unsqueeze(-1), kl

    def infer(self, audio, f0, *, temperature: float = 0.2, mouth_amp=0.4, blink=None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 2T, C_audio), (B, 2T) -> (B, T, motion_dim); 2T must be a multiple of 2 * stride."""
        cond = self.condition(audio, f0, blink, mouth_amp)
        return self.vae.infer(cond.transpose(1, 2), temperature, generator).transpose(1, 2)
