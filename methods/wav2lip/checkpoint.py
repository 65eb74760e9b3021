"""Official Wav2Lip checkpoint files: strict loading, saving in the same format, finding the latest.

Format (all three training scripts): `torch.save({"state_dict", "optimizer", "global_step",
"global_epoch"}, "checkpoint_step{:09d}.pth")`; the quality discriminator is saved next to the
generator with the prefix `disc_`. Released files may carry DataParallel's `module.` prefix on every
key, which loaders strip. We save without the prefix, so every official loader (the stripping ones
and color_syncnet_train.py's plain `load_state_dict`) reads our files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_KEYS = ("state_dict", "optimizer", "global_step", "global_epoch")
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_step(\d{9})\.pth$")
MODEL_NAMES = {"Wav2Lip": "Wav2Lip generator", "SyncNet_color": "SyncNet_color expert",
               "Wav2Lip_disc_qual": "Wav2Lip_disc_qual quality discriminator"}


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, not the official format, or a different model."""


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, Any]
    optimizer: Any
    global_step: int
    global_epoch: int
    path: Path


def checkpoint_name(step: int, prefix: str = "") -> str:
    return f"{prefix}checkpoint_step{step:09d}.pth"


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove DataParallel's leading `module.` (only at the start of a key, unlike the original's
    str.replace, which would also mangle a `module.` in the middle; no official key has one)."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def read_checkpoint(path: Path) -> Checkpoint:
    """Read an official-format checkpoint with torch.load(weights_only=True) onto the CPU."""
    from bench.safe_load import UnreadableCheckpoint, UnsafeCheckpoint, load_weights

    path = Path(path)
    try:
        raw = load_weights(path, what="Wav2Lip checkpoint")
    except (UnsafeCheckpoint, UnreadableCheckpoint) as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, expected the official dict "
                              f"with keys {list(CHECKPOINT_KEYS)}")
    if "state_dict" not in raw:
        looks_bare = raw and all(hasattr(v, "shape") for v in raw.values())
        hint = (" It looks like a bare state_dict; wrap it as {'state_dict': sd, 'optimizer': None, "
                "'global_step': 0, 'global_epoch': 0} to use it." if looks_bare else "")
        raise CheckpointError(f"{path}: not an official Wav2Lip checkpoint: no 'state_dict' key "
                              f"(found {sorted(map(str, raw))[:6]}).{hint}")
    state = raw["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a mapping of tensors")
    return Checkpoint(
        state_dict=strip_module_prefix(state),
        optimizer=raw.get("optimizer"),
        global_step=int(raw.get("global_step", 0) or 0),
        global_epoch=int(raw.get("global_epoch", 0) or 0),
        path=path,
    )


def _guess_model(keys: set[str]) -> str:
    """Which Wav2Lip network a set of state-dict keys belongs to, for error messages."""
    if any(k.startswith("face_decoder_blocks.") for k in keys):
        return "Wav2Lip generator"
    if any(k.startswith("binary_pred.") for k in keys):
        return "Wav2Lip_disc_qual quality discriminator"
    if any(k.startswith("face_encoder.") for k in keys) and any(k.startswith("audio_encoder.") for k in keys):
        return "SyncNet_color expert"
    return "an unknown model"


def load_into(model: "nn.Module", ckpt: Checkpoint) -> None:
    """Strictly load `ckpt` into `model`, with a message naming the mismatch and the likely model."""
    expected = model.state_dict()
    got = ckpt.state_dict
    want_name = MODEL_NAMES.get(type(model).__name__, type(model).__name__)
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing or unexpected:
        found = _guess_model(set(got))
        raise CheckpointError(
            f"{ckpt.path}: expected a {want_name} checkpoint but its keys look like {found} "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    bad = [(k, tuple(got[k].shape), tuple(v.shape)) for k, v in expected.items()
           if tuple(getattr(got[k], "shape", ())) != tuple(v.shape)]
    if bad:
        k, have, want = bad[0]
        raise CheckpointError(
            f"{ckpt.path}: {len(bad)} tensors have the wrong shape for the official {want_name} "
            f"(e.g. {k}: {have} vs {want}); it is a modified architecture (e.g. a 192/288 px fork)"
        )
    model.load_state_dict(got, strict=True)


def save_checkpoint(folder: Path, model: "nn.Module", optimizer: "torch.optim.Optimizer | None",
                    step: int, epoch: int, prefix: str = "") -> Path:
    """Write `{prefix}checkpoint_step{step:09d}.pth` atomically in the official format."""
    import io

    import torch

    from bench.cache import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "global_step": int(step),
        "global_epoch": int(epoch),
    }, buf)
    path = Path(folder) / checkpoint_name(step, prefix)
    atomic_write_bytes(path, buf.getvalue())
    return path


def latest_checkpoint(folder: Path, prefix: str = "") -> Path | None:
    """The `{prefix}checkpoint_step*.pth` with the highest step in `folder`, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in folder.iterdir():
        name = p.name
        if not name.startswith(prefix):
            continue
        m = CHECKPOINT_PATTERN.match(name[len(prefix):])
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None
