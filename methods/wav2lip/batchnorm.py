"""BatchNorm statistics recomputed for a generator's final weights ("precise BN"), for short budgets.

Why: every BatchNorm layer keeps running averages of its batch statistics (momentum 0.1), and eval
mode - how the official inference runs the generator - normalises with them. After a few dozen
steps those averages still weigh the initial statistics (mean 0, variance 1) and those of earlier,
very different weights: Wav2Lip's generator then draws a flat grey box in eval mode although its
training-mode output already shows a blurry face. Recomputing the statistics with the final weights
on a few training batches (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021: "precise BN")
fixes that without changing any learned weight. Measured on the demo (12 s train clip, fp32):
6 generator steps at the official lr 1e-4, batch 4, gave a face MediaPipe finds in 0 of 97 test
frames with the running averages and in 97 of 97 with recomputed statistics.

Only the `quick` budget uses it (`method.SCHEDULES`); after thousands of steps the running
averages have converged and the original's weights are kept as trained. The trainer's own state is
never touched, so a larger budget continues from the weights as trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from methods.wav2lip.data import ClipData

PREFIX = "bnstats_"
RNG_STAGE = 3   # batches drawn from (seed, 3, b): not the training (1, 2) or evaluation (11, 12) streams


def recompute_batchnorm(model: "torch.nn.Module", clips: Sequence["ClipData"], batches: int, batch_size: int,
                        seed: int, device: str = "cpu") -> "torch.nn.Module":
    """Replace every BatchNorm2d's running mean and variance of `model` (a Wav2Lip generator) by the
    equal-weight average of its batch statistics over `batches` seeded generator batches, in fp32,
    with no gradient and no weight change. Returns the model in eval mode."""
    import torch

    from methods.wav2lip.data import batch, generator_sample

    if batches < 1:
        raise ValueError("recompute_batchnorm needs at least one batch")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    try:
        with torch.no_grad():
            for b in range(batches):
                x, indiv, _, _ = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in
                                  batch(generator_sample, clips, np.random.default_rng([seed, RNG_STAGE, b]),
                                        batch_size))
                model(indiv, x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    return model.eval()


def recomputed_checkpoint(checkpoint: Path, clips: Sequence["ClipData"], batches: int, batch_size: int,
                          seed: int, device: str = "cpu") -> Path:
    """`bnstats_<name>` next to an official-format generator checkpoint: the same weights with
    BatchNorm statistics recomputed (see `recompute_batchnorm`), in the official format so the
    official inference script loads it too. Always recomputed (a few forward passes; seeded, so a
    rerun writes the same weights); other `bnstats_` files in the folder are removed."""
    from methods.wav2lip.checkpoint import load_into, read_checkpoint, save_checkpoint
    from methods.wav2lip.models import Wav2Lip

    out = checkpoint.with_name(PREFIX + checkpoint.name)
    for old in checkpoint.parent.glob(PREFIX + "*.pth"):
        if old != out:
            old.unlink(missing_ok=True)
    ckpt = read_checkpoint(checkpoint)
    model = Wav2Lip()
    load_into(model, ckpt)
    recompute_batchnorm(model.to(device), clips, batches, batch_size, seed, device)
    return save_checkpoint(checkpoint.parent, model, None, ckpt.global_step, ckpt.global_epoch, PREFIX)
