"""SyncNet (Chung & Zisserman 2016) with the exact layout of joonson/syncnet_python's `S` class.

Parameter names and shapes equal those of `syncnet_v2.model` (syncnet_python @ 6efbb1c,
SyncNetModel.py), so the official file loads with `strict=True`:

- `netcnnaud` (Sequential, indices 0..21): 2D convs over the MFCC window, input (N, 1, 13, 20) float
  (13 MFCC coefficients x 20 MFCC frames = 0.2 s), output (N, 512, 1, 1);
- `netfcaud`: Linear(512, 512) - BatchNorm1d - ReLU - Linear(512, 1024);
- `netcnnlip` (indices 0..22): 3D convs, input (N, 3, 5, 224, 224) raw 0..255 BGR floats
  (5 consecutive frames), output (N, 512, 1, 1, 1);
- `netfclip`: as `netfcaud`.

The Sequential indices (and so the state-dict keys) include the parameter-free ReLU / MaxPool
entries, which is why the convs sit at indices 0, 4, 8, 11, 14, 18 (audio) and 0, 4, 8, 11, 14, 18
(lip) with their BatchNorms one index later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

EMBEDDING_DIM = 1024  # num_layers_in_fc_layers of the published model


def _head(out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out_dim))


class SyncNetModel(nn.Module):
    """Audio and lip towers giving one embedding per 0.2 s window (no normalisation of the output).

    forward_aud: (N, 1, 13, 20) float32 MFCC windows -> (N, 1024);
    forward_lip: (N, 3, 5, 224, 224) float32 BGR 0..255 frame windows -> (N, 1024).
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=1, stride=1),
            nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(192), nn.ReLU(inplace=True),
            # stride (1, 2): halves time only, keeps the 13 coefficients' resolution
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.BatchNorm2d(384), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0),
            nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = _head(embedding_dim)
        self.netfclip = _head(embedding_dim)
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
            nn.BatchNorm3d(96), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
            nn.BatchNorm3d(512), nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))

    def forward_lip_clip(self, clip: torch.Tensor) -> torch.Tensor:
        """Embeddings of every 5-frame window of one clip: (1, 3, T, 224, 224) -> (T - 4, 1024).

        The lip tower's only temporal kernel is the first conv's 5, so running it once on the whole
        clip equals stacking the T - 4 overlapping windows as a batch, without the 5x copy.
        """
        feat = self.netcnnlip(clip)                      # (1, 512, T - 4, 1, 1)
        return self.netfclip(feat[0, :, :, 0, 0].transpose(0, 1))


def load_syncnet_state(path: Path) -> Mapping[str, torch.Tensor]:
    """The state dict of a syncnet_python checkpoint (a bare state dict saved with torch.save).

    syncnet_python copies every entry of the loaded dict into its model's state; here the keys must
    match exactly (strict loading), so a truncated or different file fails loudly instead of leaving
    random layers behind.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # tolerate a wrapped copy; the official file is the bare dict
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_syncnet(path: Path | None = None) -> SyncNetModel:
    """A SyncNetModel in eval mode, with the weights of `path` when given.

    Every parameter and buffer of the file must exist here with the same shape, and every one of
    ours must be in the file, except BatchNorm's `num_batches_tracked` counters, which PyTorch < 0.4.1
    did not save and eval mode never reads (syncnet_python copies entries one by one, so it accepts
    such files too).
    """
    model = SyncNetModel()
    if path is not None:
        missing, unexpected = model.load_state_dict(load_syncnet_state(path), strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"{path} is not a syncnet_python SyncNet state dict: "
                             f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                             f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return model.eval()
