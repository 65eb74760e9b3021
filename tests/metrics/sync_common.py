"""Helpers shared by the lip-sync metric tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def decode_clip(path: Path, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 RGB frames and float32 16 kHz mono audio of exactly T * 640 samples."""
    import av

    from data_recipes.media import read_audio

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
            if num_frames is not None and len(frames) == num_frames:
                break
    video = np.stack(frames)
    audio = read_audio(path)
    need = len(video) * 640
    audio = np.concatenate([audio, np.zeros(max(0, need - len(audio)), np.float32)])[:need]
    return video, audio.astype(np.float32)


def seeded_syncnet(seed: int = 0):
    """A random-initialised SyncNetModel (the published architecture), reproducible from `seed`."""
    import torch

    from metrics.sync.model import SyncNetModel

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return SyncNetModel().eval()
    finally:
        torch.random.set_rng_state(gen_state)


def save_like_original(model, path: Path, legacy: bool = False, drop_batch_counters: bool = False) -> Path:
    """Save as syncnet_python's file is: a bare state dict written by torch.save."""
    import torch

    state = model.state_dict()
    if drop_batch_counters:
        state = type(state)((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def place_syncnet(model, weights_dir: Path, monkeypatch) -> Path:
    """Put a test model where users put `syncnet_v2.model` and let it pass the sha256 check.

    The pinned digest is the official file's, which a test model cannot have; the spec the metric
    reads is swapped for one expecting this file's own digest, so every other check still runs.
    """
    import dataclasses
    import hashlib

    import metrics.sync.metric as sync_metric

    path = save_like_original(model, Path(weights_dir) / "syncnet_v2.model")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(sync_metric, "SYNCNET_V2", dataclasses.replace(sync_metric.SYNCNET_V2, sha256=digest))
    return path
