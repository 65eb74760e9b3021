"""Rendering frames from a trained model, and GeneFace++'s checkpoint format.

Official format (utils/commons/ckpt_utils.py / trainer): an experiment folder holding config.yaml and
`model_ckpt_steps_<N>.ckpt`; each file is a torch.save dict with `state_dict = {"model": <module
state_dict>}` (plus `global_step` and optimiser states); the highest N is the one loaded.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from methods.nerf_head.renderer.config import FieldConfig, RendererConfig
from methods.nerf_head.renderer.data import nerf_lm68
from methods.nerf_head.renderer.model import HeadModel, TorsoModel, build_head, build_torso, condition_window

CKPT_RE = re.compile(r"model_ckpt_steps_(\d+)\.ckpt$")


@torch.no_grad()
def render(model: HeadModel | TorsoModel, c2w, intrinsics, cond_window, eye_area: float, background: np.ndarray,
           lm68: np.ndarray | None = None, output_size: int = 512, generator: torch.Generator | None = None
           ) -> np.ndarray:
    """One frame -> uint8 (output_size, output_size, 3) RGB.

    c2w (4, 4) renderer camera; intrinsics (fx, fy, cx, cy) in pixels of `background`'s side S;
    cond_window (smo_win, 1, 204) normalised landmarks (`condition_window`); eye_area: the eye
    condition (`data.eye_area_for_inference` for driven frames); background (S, S, 3) uint8 plate;
    lm68 (68, 2) pixel landmarks in S (needed by a TorsoModel: its jaw points drive the torso).
    The SR output (2x the render size) is resized to `output_size` where they differ.
    """
    dev = next(model.parameters()).device
    model.eval()
    size = model.cfg.render_size
    s = background.shape[0]
    k = np.asarray(intrinsics, np.float32) * np.float32(size / s)
    bg = torch.from_numpy(np.ascontiguousarray(background)).to(dev).permute(2, 0, 1)[None].float()
    bg = F.interpolate(bg, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    bg = (bg.permute(1, 2, 0) / 255.0).clamp(0, 1)
    c2w = torch.as_tensor(np.asarray(c2w, np.float32), device=dev)
    window = torch.as_tensor(np.asarray(cond_window, np.float32), device=dev)
    cond = model.cond_feature(window, float(eye_area))
    code = model.individual_code(None)
    if isinstance(model, TorsoModel):
        if lm68 is None:
            raise ValueError("a head + torso model needs the frame's 68 landmarks")
        lm = torch.from_numpy(nerf_lm68(lm68, s)).to(dev)
        out = model.render_image(c2w, k, cond, code, bg, lm, generator=generator)
    else:
        out = model.render_image(c2w, k, cond, code, bg, generator=generator)
    img = out.get("sr_rgb", out["rgb"])
    if img.shape[-1] != output_size:
        img = F.interpolate(img, size=(output_size, output_size), mode="bilinear", align_corners=False,
                            antialias=img.shape[-1] > output_size)
    return (img[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()


def render_frames(model: HeadModel | TorsoModel, c2w: np.ndarray, intrinsics: np.ndarray, conds: np.ndarray,
                  eye_area: np.ndarray | float, background: np.ndarray, lm68: np.ndarray | None = None,
                  output_size: int = 512, seed: int = 0, progress=None) -> np.ndarray:
    """A clip: c2w (T, 4, 4), intrinsics (4,) or (T, 4), conds (T, 204), eye_area scalar or (T,),
    lm68 (T, 68, 2) or None -> uint8 (T, output_size, output_size, 3)."""
    t = conds.shape[0]
    dev = next(model.parameters()).device
    conds_t = torch.from_numpy(np.asarray(conds, np.float32))
    eyes = np.broadcast_to(np.asarray(eye_area, np.float32), (t,))
    k = np.asarray(intrinsics, np.float32)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    out = np.empty((t, output_size, output_size, 3), np.uint8)
    from bench.progress import Progress

    with (progress or Progress.off()).task("nerf_head: render", total=t) as task:
        for i in range(t):
            out[i] = render(model, c2w[i], k if k.ndim == 1 else k[i],
                            condition_window(conds_t, i, model.cfg.smo_win), float(eyes[i]), background,
                            None if lm68 is None else lm68[i], output_size, gen)
            task.advance(1)
    return out


# ---------------------------------------------------------------------------- official format


def save_official(model: torch.nn.Module, folder: Path, steps: int) -> Path:
    """Write `model` as GeneFace++ does: folder/model_ckpt_steps_<steps>.ckpt."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model_ckpt_steps_{steps}.ckpt"
    torch.save({"global_step": steps, "state_dict": {"model": model.state_dict()}}, path)
    return path


def latest_official(folder: Path) -> Path:
    """The checkpoint with the highest step in an experiment folder (or the file itself)."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    found = [(int(m.group(1)), p) for p in folder.glob("model_ckpt_steps_*.ckpt") if (m := CKPT_RE.search(p.name))]
    if not found:
        raise FileNotFoundError(f"no model_ckpt_steps_<N>.ckpt in {folder}")
    return max(found)[1]


def read_official_state(folder: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(latest_official(folder), map_location="cpu", weights_only=True)
    try:
        return ckpt["state_dict"]["model"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{folder}: not a GeneFace++ checkpoint (no state_dict.model)") from exc


def field_config_from_state(state: dict[str, torch.Tensor], base: FieldConfig | None = None) -> FieldConfig:
    """The FieldConfig whose shapes match an official state dict (eye dim, codes, occupancy side, SR)."""
    base = base or FieldConfig()
    g = round((state["density_bitfield"].numel() * 8) ** (1 / 3))
    return replace(base, eye_blink_dim=int(state["blink_encoder.1.weight"].shape[0]),
                   individual_num=int(state["individual_embeddings"].shape[0]),
                   individual_dim=int(state["individual_embeddings"].shape[1]), grid_size=g,
                   sr=any(k.startswith("sr_net.") for k in state))


def load_official(folder: Path, cfg: RendererConfig | None = None, device: str = "cpu") -> HeadModel | TorsoModel:
    """A HeadModel (RADNeRFwithSR checkpoint) or TorsoModel (RADNeRFTorsowithSR), loaded strictly."""
    state = read_official_state(folder)
    cfg = cfg or RendererConfig()
    field = field_config_from_state(state, cfg.head)
    if "density_grid_torso" in state:
        torso = replace(cfg.torso, individual_dim=int(state["torso_individual_codes"].shape[1]),
                        head_aware=any(k.startswith("head_color_weights_encoder.") for k in state))
        model: HeadModel | TorsoModel = build_torso(field, torso)
    else:
        model = build_head(field)
    model.load_state_dict(state, strict=True)
    model.refresh_bitfield(repack=False)
    if isinstance(model, TorsoModel):
        model.mean_density_torso = float(model.density_grid_torso.mean())
    return model.to(device)
