"""Wav2Lip networks: official state-dict layout, parameter counts, and the forward wiring.

The expected layout is written here from the architecture facts of Rudrabha/Wav2Lip @ 5c90fa9
(models/wav2lip.py, models/syncnet.py, models/conv.py), independently of methods.wav2lip.models:
every conv block is `<prefix>.conv_block.0` (conv: weight (out, in, kh, kw), bias) plus, with
BatchNorm, `<prefix>.conv_block.1` (weight, bias, running_mean, running_var, num_batches_tracked);
a transposed conv stores its weight as (in, out, kh, kw). So a BN block has 7 keys, a plain conv 2:
generator (18 + 13 + 18 + 1) BN blocks x 7 + the final 1x1 conv's 2 = 352 keys; expert
(17 + 14) x 7 = 217; quality discriminator 13 plain blocks x 2 + binary_pred 2 = 28.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods.wav2lip.models import SyncNet_color, Wav2Lip, Wav2Lip_disc_qual, count_parameters
from tests.methods.wav2lip_common import randomise_batchnorm

# (prefix, in, out, kernel, stride, padding, residual, transposed, output_padding)
R = "res"


def _blocks_generator():
    enc = [
        [(6, 16, 7, 1, 3, 0)],
        [(16, 32, 3, 2, 1, 0), (32, 32, 3, 1, 1, R), (32, 32, 3, 1, 1, R)],
        [(32, 64, 3, 2, 1, 0)] + [(64, 64, 3, 1, 1, R)] * 3,
        [(64, 128, 3, 2, 1, 0)] + [(128, 128, 3, 1, 1, R)] * 2,
        [(128, 256, 3, 2, 1, 0)] + [(256, 256, 3, 1, 1, R)] * 2,
        [(256, 512, 3, 2, 1, 0), (512, 512, 3, 1, 1, R)],
        [(512, 512, 3, 1, 0, 0), (512, 512, 1, 1, 0, 0)],
    ]
    audio = ([(1, 32, 3, 1, 1, 0)] + [(32, 32, 3, 1, 1, R)] * 2
             + [(32, 64, 3, (3, 1), 1, 0)] + [(64, 64, 3, 1, 1, R)] * 2
             + [(64, 128, 3, 3, 1, 0)] + [(128, 128, 3, 1, 1, R)] * 2
             + [(128, 256, 3, (3, 2), 1, 0), (256, 256, 3, 1, 1, R)]
             + [(256, 512, 3, 1, 0, 0), (512, 512, 1, 1, 0, 0)])
    T = "T"
    dec = [
        [(512, 512, 1, 1, 0, 0)],
        [(1024, 512, 3, 1, 0, T, 0), (512, 512, 3, 1, 1, R)],
        [(1024, 512, 3, 2, 1, T, 1)] + [(512, 512, 3, 1, 1, R)] * 2,
        [(768, 384, 3, 2, 1, T, 1)] + [(384, 384, 3, 1, 1, R)] * 2,
        [(512, 256, 3, 2, 1, T, 1)] + [(256, 256, 3, 1, 1, R)] * 2,
        [(320, 128, 3, 2, 1, T, 1)] + [(128, 128, 3, 1, 1, R)] * 2,
        [(160, 64, 3, 2, 1, T, 1)] + [(64, 64, 3, 1, 1, R)] * 2,
    ]
    return enc, audio, dec


def _expert_blocks():
    face = ([(15, 32, 7, 1, 3, 0), (32, 64, 5, (1, 2), 1, 0)] + [(64, 64, 3, 1, 1, R)] * 2
            + [(64, 128, 3, 2, 1, 0)] + [(128, 128, 3, 1, 1, R)] * 3
            + [(128, 256, 3, 2, 1, 0)] + [(256, 256, 3, 1, 1, R)] * 2
            + [(256, 512, 3, 2, 1, 0)] + [(512, 512, 3, 1, 1, R)] * 2
            + [(512, 512, 3, 2, 1, 0), (512, 512, 3, 1, 0, 0), (512, 512, 1, 1, 0, 0)])
    audio = ([(1, 32, 3, 1, 1, 0)] + [(32, 32, 3, 1, 1, R)] * 2
             + [(32, 64, 3, (3, 1), 1, 0)] + [(64, 64, 3, 1, 1, R)] * 2
             + [(64, 128, 3, 3, 1, 0)] + [(128, 128, 3, 1, 1, R)] * 2
             + [(128, 256, 3, (3, 2), 1, 0)] + [(256, 256, 3, 1, 1, R)] * 2
             + [(256, 512, 3, 1, 0, 0), (512, 512, 1, 1, 0, 0)])
    return face, audio


DISC = [
    [(3, 32, 7, 1, 3)],
    [(32, 64, 5, (1, 2), 2), (64, 64, 5, 1, 2)],
    [(64, 128, 5, 2, 2), (128, 128, 5, 1, 2)],
    [(128, 256, 5, 2, 2), (256, 256, 5, 1, 2)],
    [(256, 512, 3, 2, 1), (512, 512, 3, 1, 1)],
    [(512, 512, 3, 2, 1), (512, 512, 3, 1, 1)],
    [(512, 512, 3, 1, 0), (512, 512, 1, 1, 0)],
]


def _bn_keys(prefix: str, cin: int, cout: int, k: int, transposed: bool) -> dict[str, tuple]:
    w = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    return {f"{prefix}.conv_block.0.weight": w, f"{prefix}.conv_block.0.bias": (cout,),
            f"{prefix}.conv_block.1.weight": (cout,), f"{prefix}.conv_block.1.bias": (cout,),
            f"{prefix}.conv_block.1.running_mean": (cout,), f"{prefix}.conv_block.1.running_var": (cout,),
            f"{prefix}.conv_block.1.num_batches_tracked": ()}


def expected_generator_keys() -> dict[str, tuple]:
    enc, audio, dec = _blocks_generator()
    out: dict[str, tuple] = {}
    for g, group in enumerate(enc):
        for j, b in enumerate(group):
            out.update(_bn_keys(f"face_encoder_blocks.{g}.{j}", b[0], b[1], b[2], False))
    for j, b in enumerate(audio):
        out.update(_bn_keys(f"audio_encoder.{j}", b[0], b[1], b[2], False))
    for g, group in enumerate(dec):
        for j, b in enumerate(group):
            out.update(_bn_keys(f"face_decoder_blocks.{g}.{j}", b[0], b[1], b[2], len(b) > 6))
    out.update(_bn_keys("output_block.0", 80, 32, 3, False))
    out.update({"output_block.1.weight": (3, 32, 1, 1), "output_block.1.bias": (3,)})
    return out


def expected_expert_keys() -> dict[str, tuple]:
    face, audio = _expert_blocks()
    out: dict[str, tuple] = {}
    for j, b in enumerate(face):
        out.update(_bn_keys(f"face_encoder.{j}", b[0], b[1], b[2], False))
    for j, b in enumerate(audio):
        out.update(_bn_keys(f"audio_encoder.{j}", b[0], b[1], b[2], False))
    return out


def expected_disc_keys() -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for g, group in enumerate(DISC):
        for j, (cin, cout, k, _s, _p) in enumerate(group):
            out[f"face_encoder_blocks.{g}.{j}.conv_block.0.weight"] = (cout, cin, k, k)
            out[f"face_encoder_blocks.{g}.{j}.conv_block.0.bias"] = (cout,)
    out.update({"binary_pred.0.weight": (1, 512, 1, 1), "binary_pred.0.bias": (1,)})
    return out


@pytest.mark.parametrize("cls,expected,n_keys,params", [
    (Wav2Lip, expected_generator_keys, 352, 36.3e6),
    (SyncNet_color, expected_expert_keys, 217, 16.4e6),
    (Wav2Lip_disc_qual, expected_disc_keys, 28, 14.1e6),
])
def test_state_dict_layout_matches_the_official_one(cls, expected, n_keys, params):
    sd = cls().state_dict()
    want = expected()
    assert len(want) == n_keys  # the derivation in the module docstring
    assert list(sd) == list(want)  # same names in the same (registration) order
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert round(count_parameters(cls()) / 1e5) / 10 == params / 1e6  # "about 36.3M / 16.4M / 14.1M"


def test_first_and_last_generator_keys():
    keys = list(Wav2Lip().state_dict())
    assert keys[0] == "face_encoder_blocks.0.0.conv_block.0.weight" and keys[-1] == "output_block.1.bias"


# ------------------------------------------------------------------ independent functional forward




def _f_block(sd, prefix, x, spec, bn=True, leaky=False):
    cin, cout, k, s, p = spec[:5]
    res = len(spec) > 5 and spec[5] == R
    transposed = len(spec) > 6
    w, b = sd[f"{prefix}.conv_block.0.weight"], sd[f"{prefix}.conv_block.0.bias"]
    if transposed:
        y = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=spec[6])
    else:
        y = F.conv2d(x, w, b, stride=s, padding=p)
    if bn:
        y = F.batch_norm(y, sd[f"{prefix}.conv_block.1.running_mean"], sd[f"{prefix}.conv_block.1.running_var"],
                         sd[f"{prefix}.conv_block.1.weight"], sd[f"{prefix}.conv_block.1.bias"], False, 0.0, 1e-5)
    if res:
        y = y + x
    return F.leaky_relu(y, 0.01) if leaky else F.relu(y)


def functional_generator(sd, mel, faces):
    """The official forward, from the facts: encoders, decoder with skip concatenation (decoder output
    first, then the matching encoder feature), output conv block + 1x1 conv + sigmoid."""
    enc, audio, dec = _blocks_generator()
    a = mel
    for j, b in enumerate(audio):
        a = _f_block(sd, f"audio_encoder.{j}", a, b)
    feats, f = [], faces
    for g, group in enumerate(enc):
        for j, b in enumerate(group):
            f = _f_block(sd, f"face_encoder_blocks.{g}.{j}", f, b)
        feats.append(f)
    x = a
    for g, group in enumerate(dec):
        for j, b in enumerate(group):
            x = _f_block(sd, f"face_decoder_blocks.{g}.{j}", x, b)
        x = torch.cat((x, feats.pop()), dim=1)
    x = _f_block(sd, "output_block.0", x, (80, 32, 3, 1, 1))
    return torch.sigmoid(F.conv2d(x, sd["output_block.1.weight"], sd["output_block.1.bias"]))


def functional_expert(sd, mel, faces):
    face, audio = _expert_blocks()
    v, a = faces, mel
    for j, b in enumerate(face):
        v = _f_block(sd, f"face_encoder.{j}", v, b)
    for j, b in enumerate(audio):
        a = _f_block(sd, f"audio_encoder.{j}", a, b)
    return F.normalize(a.flatten(1), dim=1), F.normalize(v.flatten(1), dim=1)


def functional_disc(sd, faces_2d):
    x = faces_2d[:, :, faces_2d.size(2) // 2:]
    for g, group in enumerate(DISC):
        for j, b in enumerate(group):
            x = _f_block(sd, f"face_encoder_blocks.{g}.{j}", x, b, bn=False, leaky=True)
    return torch.sigmoid(F.conv2d(x, sd["binary_pred.0.weight"], sd["binary_pred.0.bias"])).view(len(x), -1)


@pytest.fixture(scope="module")
def seeded_generator():
    torch.manual_seed(0)
    return randomise_batchnorm(Wav2Lip(), 1)


def _inputs(batch: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4
    faces = torch.rand(batch, 6, 96, 96, generator=g)
    faces[:, :3, 48:] = 0
    return mel, faces


def test_generator_forward_equals_the_functional_forward(seeded_generator):
    mel, faces = _inputs(2)
    with torch.no_grad():
        ours = seeded_generator(mel, faces)
        ref = functional_generator(seeded_generator.state_dict(), mel, faces)
    assert ours.shape == (2, 3, 96, 96)
    assert float(ours.std()) > 0.01  # not saturated: the comparison is informative
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_generator_golden_numbers(seeded_generator):
    """Pins the seeded model (torch.manual_seed(0) init, BN randomised with seed 1) on fixed inputs.

    The same values come out of the functional forward above; pinning them catches a change of the
    initialisation order (which would silently change every seeded golden elsewhere).
    """
    mel, faces = _inputs(1)
    with torch.no_grad():
        out = seeded_generator(mel, faces)[0]
    got = [float(out[c, y, x]) for c, y, x in ((0, 0, 0), (1, 48, 48), (2, 95, 95), (0, 70, 30))]
    np.testing.assert_allclose(got, GOLDEN, atol=2e-5)


# Values of the seeded model (equal to the functional forward's to 1e-7 when recorded).
GOLDEN = [0.4978198, 0.5212749, 0.4699742, 0.4872627]


def test_sequence_layout_folds_time_like_the_original(seeded_generator):
    """(B, T, 1, 80, 16) + (B, 6, T, 96, 96) -> (B, 3, T, 96, 96), each time step as a 2D forward."""
    g = torch.Generator().manual_seed(5)
    mel = torch.rand(2, 3, 1, 80, 16, generator=g)
    faces = torch.rand(2, 6, 3, 96, 96, generator=g)
    with torch.no_grad():
        seq = seeded_generator(mel, faces)
        per_t = torch.stack([seeded_generator(mel[:, t], faces[:, :, t]) for t in range(3)], dim=2)
    assert seq.shape == (2, 3, 3, 96, 96)
    torch.testing.assert_close(seq, per_t, atol=1e-6, rtol=1e-5)


def test_expert_forward_equals_the_functional_forward():
    torch.manual_seed(0)
    model = randomise_batchnorm(SyncNet_color(), 2)
    g = torch.Generator().manual_seed(4)
    mel, faces = torch.rand(3, 1, 80, 16, generator=g), torch.rand(3, 15, 48, 96, generator=g)
    with torch.no_grad():
        a, v = model(mel, faces)
        ra, rv = functional_expert(model.state_dict(), mel, faces)
    assert a.shape == v.shape == (3, 512)
    torch.testing.assert_close(a, ra, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(v, rv, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))


def test_discriminator_forward_equals_the_functional_forward():
    torch.manual_seed(0)
    model = Wav2Lip_disc_qual().eval()
    g = torch.Generator().manual_seed(6)
    faces = torch.rand(2, 3, 5, 96, 96, generator=g)
    with torch.no_grad():
        ours = model(faces)
        flat = torch.cat([faces[:, :, t] for t in range(5)], dim=0)  # time-major, as the original's to_2d
        ref = functional_disc(model.state_dict(), flat)
    assert ours.shape == (10, 1)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
