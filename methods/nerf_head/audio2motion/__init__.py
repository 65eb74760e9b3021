"""GeneFace++'s audio-to-motion part: HuBERT (or the suite's mel) + f0 -> 3DMM expression at 25 fps.

Modules: `model` (PitchContourVAEModel, official state-dict layout), `checkpoint` (official experiment
folders), `inference` (predict_expression / predict_motion, Audio2MotionConfig), `data` (front ends and
training data from prepared clips), `train` (Real3DPortrait's audio2motion task for bench.trainer),
`overlay` (predicted vs tracked landmarks video). See docs/nerf_head.md, "Audio to motion".

The two entry points below are thin wrappers so that importing this package loads no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from methods.nerf_head.audio2motion.model import PitchContourVAEModel


def load_official(folder: str | Path) -> "PitchContourVAEModel":
    """The model of an official experiment folder (config.yaml + model_ckpt_steps_<N>.ckpt, highest N),
    loaded strictly, in eval mode; see `methods.nerf_head.audio2motion.checkpoint.load_official`."""
    from methods.nerf_head.audio2motion.checkpoint import load_official as _load

    return _load(folder)


def predict_expression(model: "PitchContourVAEModel", hubert: "np.ndarray", f0: "np.ndarray", *,
                       temperature: float = 0.2, mouth_amp: float = 0.4, seed: int = 0) -> "np.ndarray":
    """(T, 1024) HuBERT at 50 Hz + (T,) f0 in Hz -> (T // 8 * 4, 64) expression at 25 fps (numpy);
    see `methods.nerf_head.audio2motion.inference.predict_expression`."""
    from methods.nerf_head.audio2motion.inference import predict_expression as _predict

    return _predict(model, hubert, f0, temperature=temperature, mouth_amp=mouth_amp, seed=seed)
