"""Official audio-to-motion experiment folders: read (strictly) and write.

Format (GeneFace++ utils/commons/ckpt_utils.py and trainer.py @ 6c35651):
- `<folder>/config.yaml`: the experiment's hparams (yaml.safe_dump); the keys read here are
  `use_pitch` (must be true: PitchContourVAEModel), `motion_type` ("exp" -> 64 channels, "id_exp" ->
  144), `use_mouth_amp_embed`, `use_eye_amp_embed`, `use_flow` (default true), `audio_type`;
- `<folder>/model_ckpt_steps_<N>.ckpt`: `torch.save` of {'epoch', 'global_step',
  'checkpoint_callback_best', 'optimizer_states': [...], 'state_dict': {'model': {...}, ...}}
  written with `_use_new_zipfile_serialization=False` (the legacy format); the highest N is loaded;
  the original also accepts a flat state_dict with 'model.'-prefixed keys, and so does this loader.
The file is opened with `torch.load(weights_only=True)`: it holds only tensors, numbers, strings,
lists and dicts (the optimizer states included), which the restricted unpickler accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from methods.nerf_head.audio2motion.model import A2MArch

if TYPE_CHECKING:
    from methods.nerf_head.audio2motion.model import PitchContourVAEModel

CKPT_RE = re.compile(r"model_ckpt_steps_(\d+)\.ckpt$")
HUBERT_DIM = 1024  # GeneFace++'s inference builds the model with audio_in_dim = 1024
MOTION_DIMS = {"exp": 64, "id_exp": 144}


class CheckpointError(RuntimeError):
    """An official folder or file that cannot be loaded; the message says what is wrong."""


def latest_checkpoint(folder: Path) -> Path:
    """The `model_ckpt_steps_<N>.ckpt` with the highest N in `folder` (a file path is returned as is)."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    found = [(int(m.group(1)), p) for p in folder.glob("model_ckpt_steps_*.ckpt") if (m := CKPT_RE.search(p.name))]
    if not found:
        raise CheckpointError(f"no model_ckpt_steps_<N>.ckpt in {folder}")
    return max(found)[1]


def read_config(folder: Path) -> dict[str, Any]:
    import yaml

    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: an official experiment folder has config.yaml next to its checkpoints")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a mapping")
    return config


def arch_from_config(config: Mapping[str, Any], audio_dim: int = HUBERT_DIM) -> A2MArch:
    """The architecture an official config.yaml describes (GeneFace++ `load_audio2secc`)."""
    if config.get("use_pitch", False) is not True:
        raise CheckpointError("config.yaml has use_pitch != true: that is GeneFace++'s VAEModel (no pitch), "
                              "which this loader does not implement; only PitchContourVAEModel is supported")
    motion_type = config.get("motion_type", "exp")
    if motion_type not in MOTION_DIMS:
        raise CheckpointError(f"config.yaml motion_type {motion_type!r} is not one of {sorted(MOTION_DIMS)}")
    return A2MArch(audio_dim=audio_dim, motion_dim=MOTION_DIMS[motion_type],
                   use_mouth_amp=bool(config.get("use_mouth_amp_embed", False)),
                   use_eye_amp=bool(config.get("use_eye_amp_embed", False)),
                   use_flow=bool(config.get("use_flow", True)))


def config_from_arch(arch: A2MArch, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A config.yaml mapping that `arch_from_config` reads back as `arch` (the size fields the official
    config cannot express are stored under `talkbench_arch`)."""
    from dataclasses import asdict

    motion_type = {v: k for k, v in MOTION_DIMS.items()}.get(arch.motion_dim, "exp")
    out: dict[str, Any] = {"use_pitch": True, "motion_type": motion_type, "use_mouth_amp_embed": arch.use_mouth_amp,
                           "use_eye_amp_embed": arch.use_eye_amp, "use_flow": arch.use_flow,
                           "audio_type": "hubert" if arch.audio_dim == HUBERT_DIM else "mel",
                           "talkbench_arch": asdict(arch)}
    out.update(extra or {})
    return out


def model_state_dict(checkpoint: Mapping[str, Any], name: str = "model") -> dict[str, Any]:
    """The `name` module's state dict from a checkpoint, both layouts GeneFace++'s load_ckpt accepts."""
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint has no 'state_dict' (keys: {sorted(checkpoint)[:10]})")
    sd = checkpoint["state_dict"]
    if any("." in k for k in sd):
        return {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(f"{name}.")}
    if name not in sd:
        raise CheckpointError(f"checkpoint state_dict has no {name!r} entry (has {sorted(sd)})")
    return dict(sd[name])


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, which the suite refuses to unpickle "
            f"(torch.load weights_only=True). Re-save it with only the state dict, e.g. "
            f"torch.save({{'state_dict': {{'model': state_dict}}}}, path). Detail: {e}") from e


def strict_load(model, state: Mapping[str, Any], source: str = "checkpoint") -> None:
    """load_state_dict(strict=True) with one message naming every missing / unexpected / misshaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise CheckpointError(f"{source} does not match PitchContourVAEModel({model.arch}): " + " | ".join(parts))
    model.load_state_dict(state, strict=True)


def load_official(folder: str | Path) -> "PitchContourVAEModel":
    """PitchContourVAEModel from an official experiment folder (or one .ckpt file next to its config.yaml),
    strictly, in eval mode on the CPU.

    The audio width is HuBERT's 1024 unless the folder was written by the suite with another front end
    (its config.yaml then carries `talkbench_arch`).
    """
    from methods.nerf_head.audio2motion.model import PitchContourVAEModel

    folder = Path(folder).expanduser()
    ckpt = latest_checkpoint(folder)
    config = read_config(ckpt.parent)
    arch = arch_from_config(config)
    if isinstance(config.get("talkbench_arch"), dict):
        arch = A2MArch(**config["talkbench_arch"])
    model = PitchContourVAEModel(arch)
    strict_load(model, model_state_dict(load_checkpoint_file(ckpt)), source=str(ckpt))
    return model.eval()


def save_official(model, folder: str | Path, step: int, extra_config: Mapping[str, Any] | None = None,
                  optimizer_states: list | None = None) -> Path:
    """Write `model` as an official experiment folder (config.yaml + model_ckpt_steps_<step>.ckpt in the
    legacy torch.save format, as GeneFace++'s trainer writes it). Returns the checkpoint path."""
    import os

    import torch
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config_from_arch(model.arch, extra_config)), encoding="utf-8")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"epoch": 0, "global_step": int(step), "checkpoint_callback_best": float("inf"),
            "optimizer_states": list(optimizer_states or []), "state_dict": {"model": state}}
    path = folder / f"model_ckpt_steps_{int(step)}.ckpt"
    tmp = path.with_name(path.name + ".part")
    torch.save(ckpt, tmp, _use_new_zipfile_serialization=False)
    os.replace(tmp, path)
    return path
