"""Running the audio-to-motion model: GeneFace++'s inference path and the suite's frame-exact wrapper.

`predict_expression` is the original's computation (inference/genefacepp_infer.py
`prepare_batch_from_inp` + `forward_audio2secc`): the 50 Hz features are TRUNCATED to a multiple of 8
rows (so the latent, at 1/8 of the audio rate, tiles them exactly), f0 is cut or zero-padded to that
length, blink is all zeros, mouth amplitude 0.4, z ~ N(0, 1) x temperature. The only change is the
noise source: a seeded `torch.Generator` instead of the global RNG, so a seed gives one answer.

`predict_motion` is what a benchmark needs: exactly `num_frames` frames. It edge-pads the features to
a multiple of 8 rows, predicts, and drops the frames beyond the audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from methods.nerf_head.audio2motion.model import PitchContourVAEModel

ROW_MULTIPLE = 8  # GeneFace++ get_hubert: hubert[:len(hubert) // 8 * 8]


@dataclass(frozen=True)
class Audio2MotionConfig:
    """Audio-to-motion options of the nerf_head method (flat, so each is settable with --set).

    front_end: "auto" (HuBERT when its weights are present, else the mel front end), "hubert", "mel";
    official_dir: an official GeneFace++ audio2motion experiment folder (config.yaml +
        model_ckpt_steps_<N>.ckpt); when set the model is loaded from it and not trained (needs HuBERT);
    temperature / mouth_amp: sampling temperature and mouth amplitude (GeneFace++ defaults 0.2 / 0.4);
    seed: the latent noise seed;
    lle_k / lle_blend: LLE neighbours and blend (10 / 0.2); clamp: clamp the normalised condition to
        the training 3 % / 97 % quantiles (clamp_low / clamp_high);
    train_*: see `methods.nerf_head.audio2motion.train.TrainConfig` (same names without the prefix).
    """

    front_end: Literal["auto", "hubert", "mel"] = "auto"
    official_dir: str | None = None
    temperature: float = 0.2
    mouth_amp: float = 0.4
    seed: int = 0
    lle_k: int = 10
    lle_blend: float = 0.2
    clamp: bool = True
    clamp_low: float = 0.03
    clamp_high: float = 0.97
    train_steps: int = 0            # 0: from the budget
    train_batch: int = 8
    train_window: int = 64
    train_lr: float = 5e-4
    train_warmup: int = 1000
    train_eval_every: int = 100


def _as_tensor(x, dtype):
    import torch

    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


def _run(model: "PitchContourVAEModel", feats: np.ndarray, f0: np.ndarray, temperature: float, mouth_amp: float,
         seed: int) -> np.ndarray:
    import torch

    if feats.ndim != 2 or feats.shape[1] != model.arch.audio_dim:
        raise ValueError(f"features must be (rows, {model.arch.audio_dim}), got {feats.shape}")
    if len(feats) == 0:
        return np.zeros((0, model.arch.motion_dim), np.float32)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.infer(_as_tensor(feats, torch.float32)[None].to(device),
                              _as_tensor(f0, torch.float32)[None].to(device),
                              temperature=float(temperature), mouth_amp=float(mouth_amp), generator=gen)
    finally:
        model.train(was_training)
    return out[0].float().cpu().numpy()


def predict_expression(model: "PitchContourVAEModel", hubert: np.ndarray, f0: np.ndarray, *, temperature: float = 0.2,
                       mouth_amp: float = 0.4, seed: int = 0) -> np.ndarray:
    """HuBERT features (T x 1024 float32, 50 Hz) and f0 (T, Hz) -> expression (T // 8 * 4, 64) float32 at 25 fps.

    The original's inference (see the module docstring); deterministic for a seed; at temperature 0
    the latent is zero and the output equals the original's for the same weights and inputs. Any
    feature width the model was built for is accepted (the suite's mel front end: T x 80).
    """
    feats = np.asarray(hubert, np.float32)
    rows = len(feats) // ROW_MULTIPLE * ROW_MULTIPLE
    feats = feats[:rows]
    f0 = np.asarray(f0, np.float32).reshape(-1)
    f0 = f0[:rows] if len(f0) >= rows else np.pad(f0, (0, rows - len(f0)))
    return _run(model, feats, f0, temperature, mouth_amp, seed)


def predict_motion(model: "PitchContourVAEModel", feats: np.ndarray, f0: np.ndarray, num_frames: int, *,
                   temperature: float = 0.2, mouth_amp: float = 0.4, seed: int = 0) -> np.ndarray:
    """(2 T, C) features and (2 T,) f0 of a clip -> exactly (num_frames, motion_dim) expression.

    Edge-pads to a multiple of 8 rows (the tail frames beyond the audio are dropped), unlike
    `predict_expression`, which truncates as the original does.
    """
    from data_recipes.audio.align import fit_rows

    rows = 2 * int(num_frames)
    padded = -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE
    feats = fit_rows(np.asarray(feats, np.float32), rows)
    f0 = fit_rows(np.asarray(f0, np.float32).reshape(-1), rows)
    out = _run(model, fit_rows(feats, padded), fit_rows(f0, padded), temperature, mouth_amp, seed)
    return out[:num_frames]
