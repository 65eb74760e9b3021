"""Wav2Lip networks with the official state-dict layout (Rudrabha/Wav2Lip @ 5c90fa9, models/).

Three networks, built from layer tables so the layout is readable at a glance:
- `Wav2Lip`: the generator. Inputs: mel windows (B, 1, 80, 16) and faces (B, 6, 96, 96), or the
  training layout (B, T, 1, 80, 16) and (B, 6, T, 96, 96) with T folded into the batch. Faces are
  BGR in [0, 1]: channels 0-2 the target frame with rows 48..95 zeroed, channels 3-5 the reference.
  Output: (B, 3, 96, 96) (or (B, 3, T, 96, 96)) BGR in [0, 1] after a sigmoid.
- `SyncNet_color`: the expert lip-sync discriminator. Inputs: mel (B, 1, 80, 16) and the lower
  halves of 5 consecutive BGR crops stacked on channels (B, 15, 48, 96). Output: two L2-normalised
  512-d embeddings (audio, face).
- `Wav2Lip_disc_qual`: the visual-quality discriminator on the lower half of (B, 3, T, 96, 96) faces;
  output (B*T, 1) probabilities "real".

State-dict names: every conv block is `<name>.conv_block.0` (Conv2d / ConvTranspose2d) and, except in
the discriminator, `<name>.conv_block.1` (BatchNorm2d); the activation follows outside the state
dict. With `residual`, the block input is added to the normalised output before the ReLU.
This module imports torch at import time; `methods.wav2lip.method` only imports it when needed.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Block(NamedTuple):
    """One conv block: channels in/out, kernel, stride, padding, residual add, transposed, out-pad."""

    cin: int
    cout: int
    k: int | tuple[int, int]
    s: int | tuple[int, int] = 1
    p: int = 1
    res: bool = False
    transposed: bool = False
    out_pad: int = 0


def _r(c: int) -> Block:
    """3x3 residual block keeping c channels (the most common block in all three networks)."""
    return Block(c, c, 3, 1, 1, True)


# Generator face encoder: 7 groups, 96 -> 96, 48, 24, 12, 6, 3, 1.
FACE_ENCODER: tuple[tuple[Block, ...], ...] = (
    (Block(6, 16, 7, 1, 3),),
    (Block(16, 32, 3, 2, 1), _r(32), _r(32)),
    (Block(32, 64, 3, 2, 1), _r(64), _r(64), _r(64)),
    (Block(64, 128, 3, 2, 1), _r(128), _r(128)),
    (Block(128, 256, 3, 2, 1), _r(256), _r(256)),
    (Block(256, 512, 3, 2, 1), _r(512)),
    (Block(512, 512, 3, 1, 0), Block(512, 512, 1, 1, 0)),
)

# Audio encoder shared by the generator and the expert: 1x80x16 mel window -> 512x1x1.
AUDIO_ENCODER: tuple[Block, ...] = (
    Block(1, 32, 3, 1, 1), _r(32), _r(32),
    Block(32, 64, 3, (3, 1), 1), _r(64), _r(64),
    Block(64, 128, 3, 3, 1), _r(128), _r(128),
    Block(128, 256, 3, (3, 2), 1), _r(256),
    Block(256, 512, 3, 1, 0), Block(512, 512, 1, 1, 0),
)


def _t(cin: int, cout: int, s: int, p: int, out_pad: int) -> Block:
    return Block(cin, cout, 3, s, p, False, True, out_pad)


# Generator decoder: 7 groups; input channels count the skip concatenated after the previous group.
FACE_DECODER: tuple[tuple[Block, ...], ...] = (
    (Block(512, 512, 1, 1, 0),),                                   # 1x1
    (_t(1024, 512, 1, 0, 0), _r(512)),                             # 3x3
    (_t(1024, 512, 2, 1, 1), _r(512), _r(512)),                    # 6x6
    (_t(768, 384, 2, 1, 1), _r(384), _r(384)),                     # 12x12
    (_t(512, 256, 2, 1, 1), _r(256), _r(256)),                     # 24x24
    (_t(320, 128, 2, 1, 1), _r(128), _r(128)),                     # 48x48
    (_t(160, 64, 2, 1, 1), _r(64), _r(64)),                        # 96x96
)

# Expert face encoder: 15 x 48 x 96 (5 lower halves) -> 512 x 1 x 1.
SYNC_FACE_ENCODER: tuple[Block, ...] = (
    Block(15, 32, 7, 1, 3),
    Block(32, 64, 5, (1, 2), 1), _r(64), _r(64),
    Block(64, 128, 3, 2, 1), _r(128), _r(128), _r(128),
    Block(128, 256, 3, 2, 1), _r(256), _r(256),
    Block(256, 512, 3, 2, 1), _r(512), _r(512),
    Block(512, 512, 3, 2, 1), Block(512, 512, 3, 1, 0), Block(512, 512, 1, 1, 0),
)

# Expert audio encoder: like the generator's but with one more 256 residual block.
SYNC_AUDIO_ENCODER: tuple[Block, ...] = AUDIO_ENCODER[:11] + (_r(256),) + AUDIO_ENCODER[11:]

# Quality discriminator (no normalisation, LeakyReLU 0.01): 3 x 48 x 96 -> 512 x 1 x 1.
DISC_ENCODER: tuple[tuple[Block, ...], ...] = (
    (Block(3, 32, 7, 1, 3),),
    (Block(32, 64, 5, (1, 2), 2), Block(64, 64, 5, 1, 2)),
    (Block(64, 128, 5, 2, 2), Block(128, 128, 5, 1, 2)),
    (Block(128, 256, 5, 2, 2), Block(256, 256, 5, 1, 2)),
    (Block(256, 512, 3, 2, 1), Block(512, 512, 3, 1, 1)),
    (Block(512, 512, 3, 2, 1), Block(512, 512, 3, 1, 1)),
    (Block(512, 512, 3, 1, 0), Block(512, 512, 1, 1, 0)),
)


class ConvBlock(nn.Module):
    """Conv (or transposed conv) + BatchNorm, optional residual add, then ReLU."""

    def __init__(self, b: Block):
        super().__init__()
        if b.transposed:
            conv: nn.Module = nn.ConvTranspose2d(b.cin, b.cout, b.k, b.s, b.p, b.out_pad)
        else:
            conv = nn.Conv2d(b.cin, b.cout, b.k, b.s, b.p)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(b.cout))
        self.residual = b.res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


class LeakyConvBlock(nn.Module):
    """Conv without normalisation, then LeakyReLU(0.01) (the quality discriminator's block)."""

    def __init__(self, b: Block):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(b.cin, b.cout, b.k, b.s, b.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv_block(x), 0.01)


def _seq(blocks: Sequence[Block], kind: type[nn.Module] = ConvBlock) -> nn.Sequential:
    return nn.Sequential(*(kind(b) for b in blocks))


def fold_time(x: torch.Tensor, time_dim: int) -> torch.Tensor:
    """(B, ..., T, ...) -> (T*B, ...): time-major concatenation along the batch, as the original does."""
    return torch.cat([x.select(time_dim, t) for t in range(x.size(time_dim))], dim=0)


class Wav2Lip(nn.Module):
    """The generator (about 36.3M parameters, 352 state-dict keys); see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(_seq(g) for g in FACE_ENCODER)
        self.audio_encoder = _seq(AUDIO_ENCODER)
        self.face_decoder_blocks = nn.ModuleList(_seq(g) for g in FACE_DECODER)
        self.output_block = nn.Sequential(ConvBlock(Block(80, 32, 3, 1, 1)), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        batch = audio_sequences.size(0)
        sequence = face_sequences.dim() > 4
        if sequence:
            audio_sequences = fold_time(audio_sequences, 1)
            face_sequences = fold_time(face_sequences, 2)
        x = self.audio_encoder(audio_sequences)
        skips = []
        f = face_sequences
        for block in self.face_encoder_blocks:
            f = block(f)
            skips.append(f)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        out = self.output_block(x)
        if sequence:
            out = torch.stack(torch.split(out, batch, dim=0), dim=2)
        return out


class SyncNet_color(nn.Module):  # noqa: N801 - the official class name, kept for recognisability
    """The expert lip-sync discriminator (about 16.4M parameters, 217 state-dict keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = _seq(SYNC_FACE_ENCODER)
        self.audio_encoder = _seq(SYNC_AUDIO_ENCODER)

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        face = self.face_encoder(face_sequences).flatten(1)
        audio = self.audio_encoder(audio_sequences).flatten(1)
        return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)


class Wav2Lip_disc_qual(nn.Module):  # noqa: N801 - the official class name
    """The visual-quality discriminator (about 14.1M parameters, 28 state-dict keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(_seq(g, LeakyConvBlock) for g in DISC_ENCODER)
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

    @staticmethod
    def lower_half(faces_2d: torch.Tensor) -> torch.Tensor:
        return faces_2d[:, :, faces_2d.size(2) // 2:]

    def forward(self, face_sequences: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 96, 96) faces in [0, 1] -> (T*B, 1) probability that each frame is real."""
        x = self.lower_half(fold_time(face_sequences, 2))
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred(x).view(len(x), -1)

    def perceptual_loss(self, fake_sequences: torch.Tensor) -> torch.Tensor:
        """BCE of the generated frames against "real": the generator's adversarial term."""
        pred = self(fake_sequences)
        return bce(pred, torch.ones_like(pred))


def bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy in float32 with autocast off (BCE on probabilities is not autocast-safe)."""
    with torch.autocast(pred.device.type, enabled=False):
        return F.binary_cross_entropy(pred.float(), target.float())


def cosine_bce(audio_emb: torch.Tensor, face_emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The expert's loss: BCE of the cosine similarity of the embeddings against y (B, 1).

    Both embeddings come out of ReLUs, so the similarity lies in [0, 1]; the clamp only removes
    rounding overshoot (1 + 1e-7) that BCE would reject.
    """
    with torch.autocast(audio_emb.device.type, enabled=False):
        d = F.cosine_similarity(audio_emb.float(), face_emb.float()).clamp(0.0, 1.0)
        return F.binary_cross_entropy(d.unsqueeze(1), target.float())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
