"""Batched inference of the head field: several frames per pass (the per-frame `inference.render` pays
Python and small-op overhead for every frame, which dominates on a CPU at the quick preset's sizes).

Same computation as `inference.render` for a `HeadModel` (no perturbation, the same marching, early ray
termination a few samples at a time, compositing, SR): only the batching differs, and each frame may
have its own background (the method composites the head over the target frame's own torso and the
plate, as the head stage trains it). The SR's per-layer noise is drawn per batch from one generator,
so a frame's noise depends on its batch; with a seed the output is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from methods.nerf_head.renderer import rays as R
from methods.nerf_head.renderer.model import HeadModel


def cond_features(model: HeadModel, conds: torch.Tensor, eye_area: torch.Tensor) -> torch.Tensor:
    """(T, 204) per-frame conditions, (T,) eye areas -> (T, cond_out) features, as `cond_feature` on each
    frame's 3-frame window (zero outside the clip), batched."""
    t, d = conds.shape
    win = model.cfg.smo_win
    pad = torch.cat([conds.new_zeros(win // 2, d), conds, conds.new_zeros(win - 1 - win // 2, d)])
    windows = pad.unfold(0, win, 1).permute(0, 2, 1)                     # (T, win, D)
    feat = model.cond_prenet(windows.reshape(t * win, 1, d)).view(t, win, -1)
    blink = model.blink_embedding.weight[0:1] * eye_area.reshape(t, 1).to(feat.dtype)
    blink = model.blink_encoder(blink)                                       # (T, eye_dim)
    k = model.cfg.eye_blink_dim
    feat = torch.cat([feat[..., :k] + blink[:, None], feat[..., k:]], dim=-1)
    att = model.cond_att_net
    y = feat[..., : att.in_out_dim].permute(0, 2, 1)                         # (T, C, win)
    y = att.attentionConvNet(y)                                              # (T, 1, win)
    y = att.attentionNet(y.view(t, att.seq_len)).view(t, att.seq_len, 1)
    return torch.sum(y * feat, dim=1)


def _march_rays(model: HeadModel, rays_o, rays_d, cond, code, chunk_steps: int = 4):
    """Early-terminated marching of rays whose condition is per ray (cond (N, C))."""
    nears, fars = R.near_far_from_aabb(rays_o, rays_d, model.aabb_infer, model.cfg.min_near)
    s = R.march(rays_o, rays_d, nears, fars, model.occupied(), bound=model.cfg.bound,
                max_steps=model.cfg.max_steps, perturb=False)
    n, steps = s["valid"].shape
    dev = rays_o.device
    trans = torch.ones(n, device=dev)
    image = torch.zeros(n, 3, device=dev)
    ws = torch.zeros(n, device=dev)
    thresh = model.cfg.t_thresh
    for a0 in range(0, steps, chunk_steps):
        a1 = min(steps, a0 + chunk_steps)
        v = s["valid"][:, a0:a1] & (trans >= thresh)[:, None]
        if not v.any():
            break
        rows = torch.nonzero(v, as_tuple=True)[0]
        sig = torch.zeros(n, a1 - a0, device=dev)
        rgb = torch.zeros(n, a1 - a0, 3, device=dev)
        a, c, _ = model(s["xyzs"][:, a0:a1][v], rays_d[rows], cond[rows], code)
        sig = sig.masked_scatter(v, a.float())
        rgb = rgb.masked_scatter(v[..., None], c.float())
        part = R.composite(sig, rgb, s["dt"], v, s["ts"][:, a0:a1], (thresh / trans.clamp(min=1e-30))[:, None])
        image = image + trans[:, None] * part["image"]
        ws = ws + trans * part["weights_sum"]
        alpha = torch.where(part["counted"], 1 - torch.exp(-sig * s["dt"]), torch.zeros_like(sig))
        trans = trans * torch.prod(1 - alpha, dim=1)
    return image, ws


def _resize_bg(backgrounds: np.ndarray, size: int, dev) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, size, size, 3) float in [0, 1] (antialiased bilinear, as `render`)."""
    bg = torch.from_numpy(np.ascontiguousarray(backgrounds)).to(dev).permute(0, 3, 1, 2).float()
    if bg.shape[-1] != size:
        bg = F.interpolate(bg, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (bg.permute(0, 2, 3, 1) / 255.0).clamp(0, 1)


@torch.no_grad()
def render_head_frames(model: HeadModel, c2w: np.ndarray, intrinsics: np.ndarray, conds: np.ndarray,
                       eye_area: np.ndarray | float, backgrounds: np.ndarray, output_size: int = 512, seed: int = 0,
                       batch: int = 8, progress=None) -> np.ndarray:
    """A clip from a head model: c2w (T, 4, 4), intrinsics (4,) or (T, 4) in pixels of the backgrounds'
    side S, conds (T, 204), eye_area scalar or (T,), backgrounds (S, S, 3) or (T, S, S, 3) uint8
    -> uint8 (T, output_size, output_size, 3) (the SR output resized, as `inference.render`)."""
    dev = next(model.parameters()).device
    model.eval()
    t = len(conds)
    size = model.cfg.render_size
    bgs = np.asarray(backgrounds)
    s_side = bgs.shape[-2]
    k_all = np.broadcast_to(np.asarray(intrinsics, np.float32), (t, 4)) * np.float32(size / s_side)
    eyes = torch.from_numpy(np.broadcast_to(np.asarray(eye_area, np.float32), (t,)).copy()).to(dev)
    feats = cond_features(model, torch.from_numpy(np.asarray(conds, np.float32)).to(dev), eyes)
    code = model.individual_code(None)
    poses = torch.from_numpy(np.asarray(c2w, np.float32)).to(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    out = np.empty((t, output_size, output_size, 3), np.uint8)
    from bench.progress import Progress

    with (progress or Progress.off()).task("nerf_head: render", total=t) as task:
        for b0 in range(0, t, batch):
            idx = range(b0, min(t, b0 + batch))
            ro, rd = zip(*(R.pixel_rays(poses[i], k_all[i], size, size) for i in idx))
            ro, rd = torch.cat(ro), torch.cat(rd)
            cond = feats[list(idx)].repeat_interleave(size * size, dim=0)
            image, ws = _march_rays(model, ro, rd, cond, code)
            bg = _resize_bg(bgs[b0:b0 + len(idx)] if bgs.ndim == 4 else bgs[None].repeat(len(idx), 0), size, dev)
            img = (image + (1 - ws)[:, None] * bg.reshape(-1, 3)).clamp(0, 1)
            img = img.reshape(len(idx), size, size, 3).permute(0, 3, 1, 2)
            if model.cfg.sr:
                img = model.sr_net(img, generator=gen).clamp(0, 1)
            if img.shape[-1] != output_size:
                img = F.interpolate(img, size=(output_size, output_size), mode="bilinear", align_corners=False,
                                    antialias=img.shape[-1] > output_size)
            out[b0:b0 + len(idx)] = (img.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
            task.advance(len(idx))
    return out
