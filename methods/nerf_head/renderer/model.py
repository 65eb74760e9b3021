"""The head field (GeneFace++ RADNeRFwithSR) and the head + torso model (RADNeRFTorsowithSR) with the
original attribute names, so official checkpoints load strictly.

State-dict keys, read from modules/radnerfs/{renderer,radnerf_sr,radnerf_torso_sr}.py @ 6c35651:
- both: aabb_train, aabb_infer (6,), individual_embeddings (13000, 4), density_grid (1, G^3),
  density_bitfield (G^3 / 8,) uint8, step_counter (16, 2) int32, cond_prenet.* (AudioNet),
  blink_embedding.weight (1, 32), blink_encoder.{0,1}.* (the "eye" condition is called blink
  there), cond_att_net.* (AudioAttNet), position_embedder.{embeddings,offsets},
  ambient_net.net.{0,1,2}.weight, ambient_embedder.{embeddings,offsets}, sigma_net.net.{0,1,2}.weight,
  color_net.net.{0,1}.weight, sr_net.{resample_filter, block0.*, block1.*};
- head (RADNeRFwithSR) adds lambda_ambient (1,) (a parameter without gradient);
- head + torso (built on RADNeRF, so without lambda_ambient) adds density_grid_torso (G^2,),
  torso_individual_codes (13000, 8), torso_embedder.{embeddings,offsets},
  head_color_weights_encoder.{0,2,4}.* (torso_head_aware, on in the SR torso config),
  torso_deform_net.net.*, torso_canonicial_net.net.* (sic).
The frequency and SH encoders have no state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from methods.nerf_head.renderer import rays as R
from methods.nerf_head.renderer.config import FieldConfig, TorsoConfig
from methods.nerf_head.renderer.grid import make_grid_encoder
from methods.nerf_head.renderer.nets import MLP, AudioAttNet, AudioNet, freq_encode, sh_encode, trunc_exp
from methods.nerf_head.renderer.sr import Superresolution


def condition_window(conds: torch.Tensor, index: int, win: int = 3) -> torch.Tensor:
    """(T, D) per-frame conditions -> (win, 1, D): frames centred on `index`, zero outside [0, T)
    (get_audio_features att_mode 2)."""
    left = index - win // 2
    out = conds.new_zeros(win, conds.shape[-1])
    for k in range(win):
        j = left + k
        if 0 <= j < conds.shape[0]:
            out[k] = conds[j]
    return out.unsqueeze(1)


class HeadCore(nn.Module):
    """The dynamic head radiance field, its occupancy grid and ray marching."""

    def __init__(self, cfg: FieldConfig):
        super().__init__()
        self.cfg = cfg
        b = cfg.bound
        aabb = torch.tensor([-b, -b / 2, -b, b, b / 2, b], dtype=torch.float32)
        self.register_buffer("aabb_train", aabb.clone())
        self.register_buffer("aabb_infer", aabb.clone())
        self.individual_embeddings = nn.Parameter(torch.randn(cfg.individual_num, cfg.individual_dim) * 0.1)
        g = cfg.grid_size
        self.cascade = 1 + math.ceil(math.log2(b)) if b > 1 else 1
        self.register_buffer("density_grid", torch.zeros(self.cascade, g ** 3))
        self.register_buffer("density_bitfield", torch.zeros(self.cascade * g ** 3 // 8, dtype=torch.uint8))
        self.register_buffer("step_counter", torch.zeros(16, 2, dtype=torch.int32))
        self.register_buffer("_morton", torch.from_numpy(R.morton_table(g)), persistent=False)

        self.cond_prenet = AudioNet(cfg.cond_dim, cfg.cond_out_dim, win_size=cfg.cond_win)
        half = cfg.cond_out_dim // 2
        self.blink_embedding = nn.Embedding(1, half)
        self.blink_encoder = nn.Sequential(nn.Linear(half, half), nn.Linear(half, cfg.eye_blink_dim))
        self.cond_att_net = AudioAttNet(cfg.cond_out_dim, seq_len=cfg.smo_win)
        self.position_embedder = make_grid_encoder(cfg.grid, 3)
        pdim = self.position_embedder.output_dim
        self.ambient_net = MLP(pdim + cfg.cond_out_dim, cfg.ambient_coord_dim, cfg.hidden_ambient, cfg.layers_ambient)
        self.ambient_embedder = make_grid_encoder(cfg.ambient_grid, cfg.ambient_coord_dim)
        adim = self.ambient_embedder.output_dim
        self.sigma_net = MLP(pdim + adim, 1 + cfg.geo_feat_dim, cfg.hidden_sigma, cfg.layers_sigma)
        self.color_net = MLP(16 + cfg.geo_feat_dim + cfg.individual_dim, 3, cfg.hidden_color, cfg.layers_color)
        self.mean_density = 0.0

    # ------------------------------------------------------------------------------ condition

    def cond_feature(self, window: torch.Tensor, eye_area: torch.Tensor | float | None) -> torch.Tensor:
        """(smo_win, cond_win, cond_dim) normalised landmarks + eye area -> (cond_out_dim,)."""
        feat = self.cond_prenet(window)                                   # (smo_win, 64)
        e = torch.as_tensor(0.0 if eye_area is None else eye_area, dtype=feat.dtype, device=feat.device)
        blink = self.blink_embedding.weight[0:1] * e.reshape(1, 1)
        blink = self.blink_encoder(blink)                                  # (1, eye_dim)
        k = self.cfg.eye_blink_dim
        feat = torch.cat([feat[:, :k] + blink, feat[:, k:]], dim=1)
        return self.cond_att_net(feat)

    def individual_code(self, index: int | None) -> torch.Tensor:
        # frame codes in training, code 0 for unseen frames (the original); indices wrap at the table size
        i = 0 if index is None else int(index) % self.cfg.individual_num
        return self.individual_embeddings[i]

    # ------------------------------------------------------------------------------ field

    def density(self, xyz: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        pos = self.position_embedder(xyz, bound=self.cfg.bound)
        amb_in = torch.cat([pos, cond.to(pos.dtype).expand(xyz.shape[0], -1)], dim=1)
        ambient = torch.tanh(self.ambient_net(amb_in).float())
        amb = self.ambient_embedder(ambient, bound=1.0)
        h = self.sigma_net(torch.cat([pos, amb.to(pos.dtype)], dim=-1))
        return {"sigma": trunc_exp(h[..., 0]), "geo_feat": h[..., 1:], "ambient": ambient}

    def forward(self, xyz, dirs, cond, code):
        d = self.density(xyz, cond)
        parts = [sh_encode(dirs), d["geo_feat"].float()]
        if code is not None and code.numel():
            parts.append(code.float().expand(xyz.shape[0], -1))
        rgb = torch.sigmoid(self.color_net(torch.cat(parts, dim=-1)).float())
        return d["sigma"], rgb, d["ambient"]

    # ------------------------------------------------------------------------------ occupancy

    def occupied(self) -> torch.Tensor:
        return R.unpack_dense(self.density_bitfield[: self.cfg.grid_size ** 3 // 8], self._morton)

    @torch.no_grad()
    def mark_untrained(self, poses: torch.Tensor, intrinsics: np.ndarray, chunk: int = 64) -> None:
        """Cells no training camera sees become -1 (never sampled, never updated)."""
        g, b = self.cfg.grid_size, self.cfg.bound
        fx, fy, cx, cy = [float(v) for v in intrinsics]
        half = b / g
        pts = R.cell_centres(g, b).to(self.density_grid.device)
        seen = torch.zeros(pts.shape[0], dtype=torch.bool, device=pts.device)
        for p in poses.to(pts.device).split(chunk):
            cam = (pts[None] - p[:, None, :3, 3]) @ p[:, :3, :3]
            z = cam[..., 2]
            m = (z > 0) & (cam[..., 0].abs() < cx / fx * z + 2 * half) & (cam[..., 1].abs() < cy / fy * z + 2 * half)
            seen |= m.any(0)
        grid = self.density_grid[0]
        grid[self._morton.reshape(-1)[~seen]] = -1.0

    @torch.no_grad()
    def update_occupancy(self, cond: torch.Tensor, decay: float = 0.95, generator=None, chunk: int = 1 << 18) -> None:
        g, b = self.cfg.grid_size, self.cfg.bound
        half = b / g
        pts = R.cell_centres(g, b).to(self.density_grid.device)
        pts = pts + (torch.rand(pts.shape, generator=generator, device=pts.device) * 2 - 1) * half
        sig = torch.cat([self.density(p, cond)["sigma"].float() for p in pts.split(chunk)])
        dense = R.dilate_cross(sig.reshape(g, g, g))
        tmp = torch.empty_like(self.density_grid[0])
        tmp[self._morton.reshape(-1)] = dense.reshape(-1)
        grid = self.density_grid[0]
        valid = (grid >= 0) & (tmp >= 0)
        grid[valid] = torch.maximum(grid[valid] * decay, tmp[valid])
        self.refresh_bitfield()

    @torch.no_grad()
    def refresh_bitfield(self, repack: bool = True) -> None:
        """Mean density from the grid, and (repack) the bitfield at min(mean, density_thresh); a loaded
        checkpoint keeps its own bitfield (repack=False)."""
        self.mean_density = float(self.density_grid.clamp(min=0).mean().item())
        if repack:
            thresh = min(self.mean_density, self.cfg.density_thresh)
            self.density_bitfield.copy_(R.packbits(self.density_grid.reshape(-1), thresh))

    # ------------------------------------------------------------------------------ rendering

    def render_rays(self, rays_o, rays_d, cond, code, *, perturb: bool, generator=None,
                    early_stop: bool = False, chunk_steps: int = 4) -> dict[str, torch.Tensor]:
        """Head colour (premultiplied), accumulated weight, ambient sum and depth per ray."""
        aabb = self.aabb_train if self.training else self.aabb_infer
        nears, fars = R.near_far_from_aabb(rays_o, rays_d, aabb, self.cfg.min_near)
        s = R.march(rays_o, rays_d, nears, fars, self.occupied(), bound=self.cfg.bound,
                    max_steps=self.cfg.max_steps, perturb=perturb, generator=generator)
        n, steps = s["valid"].shape
        dirs = rays_d[:, None, :].expand(-1, steps, -1)
        if not early_stop:
            sig = torch.zeros(n, steps, device=rays_o.device)
            rgb = torch.zeros(n, steps, 3, device=rays_o.device)
            amb = torch.zeros(n, steps, device=rays_o.device)
            v = s["valid"]
            if v.any():
                a, c, am = self(s["xyzs"][v], dirs[v], cond, code)
                sig = sig.masked_scatter(v, a.float())
                rgb = rgb.masked_scatter(v[..., None], c.float())
                amb = amb.masked_scatter(v, am.abs().sum(-1).float())
            out = R.composite(sig, rgb, s["dt"], v, s["ts"], self.cfg.t_thresh)
            out["ambient_sum"] = (amb * out["counted"]).sum(1)
            out["samples"] = v.sum()
            return out
        # inference: a few steps at a time, only for rays still visible (early ray termination)
        trans = torch.ones(n, device=rays_o.device)
        image = torch.zeros(n, 3, device=rays_o.device)
        ws = torch.zeros(n, device=rays_o.device)
        depth = torch.zeros(n, device=rays_o.device)
        total = 0
        for a0 in range(0, steps, chunk_steps):
            a1 = min(steps, a0 + chunk_steps)
            v = s["valid"][:, a0:a1] & (trans >= self.cfg.t_thresh)[:, None]
            if not v.any():
                break
            sig = torch.zeros(n, a1 - a0, device=rays_o.device)
            rgb = torch.zeros(n, a1 - a0, 3, device=rays_o.device)
            a, c, _ = self(s["xyzs"][:, a0:a1][v], dirs[:, a0:a1][v], cond, code)
            total += int(v.sum())
            sig = sig.masked_scatter(v, a.float())
            rgb = rgb.masked_scatter(v[..., None], c.float())
            part = R.composite(sig, rgb, s["dt"], v, s["ts"][:, a0:a1], (self.cfg.t_thresh / trans.clamp(min=1e-30))[:, None])
            image = image + trans[:, None] * part["image"]
            ws = ws + trans * part["weights_sum"]
            depth = depth + trans * part["depth"]
            alpha = torch.where(part["counted"], 1 - torch.exp(-sig * s["dt"]), torch.zeros_like(sig))
            trans = trans * torch.prod(1 - alpha, dim=1)
        return {"image": image, "weights_sum": ws, "depth": depth, "samples": torch.tensor(total)}


class HeadModel(HeadCore):
    """RADNeRFwithSR: the head field + super-resolution + the adaptive ambient weight."""

    def __init__(self, cfg: FieldConfig):
        super().__init__(cfg)
        if cfg.sr:
            self.sr_net = Superresolution(cfg.render_size, cfg.sr_channels)
        self.lambda_ambient = nn.Parameter(torch.tensor([1.0]), requires_grad=False)

    def render_image(self, c2w, intrinsics, cond, code, background, *, perturb=False, generator=None,
                     sr: bool = True, early_stop: bool | None = None) -> dict[str, torch.Tensor]:
        """One frame at render size: background (S, S, 3) in [0, 1]. rgb (1, 3, S, S) clamped; sr_rgb
        (1, 3, 2S, 2S) where the model has SR and `sr`."""
        size = self.cfg.render_size
        ro, rd = R.pixel_rays(c2w, intrinsics, size, size)
        stop = (not torch.is_grad_enabled()) if early_stop is None else early_stop
        out = self.render_rays(ro, rd, cond, code, perturb=perturb, generator=generator, early_stop=stop)
        bg = background.reshape(-1, 3)
        img = (out["image"] + (1 - out["weights_sum"])[:, None] * bg).clamp(0, 1)
        res = dict(out)
        res["rgb"] = img.reshape(1, size, size, 3).permute(0, 3, 1, 2)
        if sr and self.cfg.sr:
            res["sr_rgb"] = self.sr_net(res["rgb"], generator=generator).clamp(0, 1)
        return res


class TorsoModel(HeadCore):
    """RADNeRFTorsowithSR: the (frozen) head, the 2-D deformable torso field and SR."""

    def __init__(self, cfg: FieldConfig, torso: TorsoConfig):
        super().__init__(cfg)
        self.torso_cfg = torso
        g = cfg.grid_size
        self.register_buffer("density_grid_torso", torch.zeros(g * g))
        self.mean_density_torso = 0.0
        self.torso_individual_codes = nn.Parameter(torch.randn(cfg.individual_num, torso.individual_dim) * 0.1)
        self.torso_embedder = make_grid_encoder(torso.grid, 2)
        n_jaw = 2 * len(torso.jaw_points)
        lm_dim = n_jaw * (1 + 2 * torso.lm_freqs)
        pos_dim = 2 * (1 + 2 * torso.pos_freqs)
        deform_in = pos_dim + lm_dim + torso.individual_dim
        canon_in = self.torso_embedder.output_dim + deform_in
        if torso.head_aware:
            self.head_color_weights_encoder = nn.Sequential(
                nn.Linear(4, 16), nn.LeakyReLU(0.02, True), nn.Linear(16, 32), nn.LeakyReLU(0.02, True),
                nn.Linear(32, 16))
            deform_in += 16
            canon_in += 16
        self.torso_deform_net = MLP(deform_in, 2, torso.deform_hidden, torso.deform_layers)
        self.torso_canonicial_net = MLP(canon_in, 4, torso.canonical_hidden, torso.canonical_layers)
        if cfg.sr:
            self.sr_net = Superresolution(cfg.render_size, cfg.sr_channels)

    def torso_code(self, index: int | None) -> torch.Tensor:
        i = 0 if index is None else int(index) % self.cfg.individual_num
        return self.torso_individual_codes[i]

    def forward_torso(self, x, code, lm68, image=None, weights_sum=None):
        """x (M, 2) pixel coordinates in [-1, 1] (row, column); lm68 (68, 2) normalised 2-D landmarks;
        -> alpha (M, 1), colour (M, 3), deformation (M, 2)."""
        t = self.torso_cfg
        x = x * t.shrink
        enc_x = freq_encode(x, t.pos_freqs)
        jaw = lm68.reshape(68, 2)[list(t.jaw_points)].reshape(1, -1).to(x.dtype)
        enc_lm = freq_encode(jaw, t.lm_freqs)
        parts = [enc_x]
        if code is not None and code.numel():
            parts.append(code.to(x.dtype).expand(x.shape[0], -1))
        parts.append(enc_lm.expand(x.shape[0], -1))
        h = torch.cat(parts, dim=-1)
        if t.head_aware:
            if image is None:
                image = x.new_zeros(x.shape[0], 3)
                weights_sum = x.new_zeros(x.shape[0], 1)
            h = torch.cat([h, self.head_color_weights_encoder(torch.cat([image, weights_sum], -1).to(h.dtype))], -1)
        dx = self.torso_deform_net(h)
        xd = (x + dx).clamp(-1, 1).float()
        h = self.torso_canonicial_net(torch.cat([self.torso_embedder(xd, bound=1.0).to(h.dtype), h], -1))
        return torch.sigmoid(h[..., :1].float()), torch.sigmoid(h[..., 1:].float()), dx

    @torch.no_grad()
    def update_torso_occupancy(self, code, lm68, decay: float = 0.95, generator=None) -> None:
        g = self.cfg.grid_size
        dev = self.density_grid_torso.device
        ax = torch.arange(g, device=dev)
        c0, c1 = torch.meshgrid(ax, ax, indexing="ij")
        coords = torch.stack([c0.reshape(-1), c1.reshape(-1)], -1)
        indices = coords[:, 1] * g + coords[:, 0]       # the original's transposed layout
        half = 1 / g
        xys = (2 * coords.float() / (g - 1) - 1) * (1 - half)
        xys = xys + (torch.rand(xys.shape, generator=generator, device=dev) * 2 - 1) * half
        alpha, _, _ = self.forward_torso(xys, code, lm68)
        tmp = torch.zeros_like(self.density_grid_torso)
        tmp[indices] = alpha[:, 0].float()
        tmp = F.max_pool2d(tmp.view(1, 1, g, g), kernel_size=5, stride=1, padding=2).view(-1)
        self.density_grid_torso.copy_(torch.maximum(self.density_grid_torso * decay, tmp))
        self.mean_density_torso = float(self.density_grid_torso.mean().item())

    def render_image(self, c2w, intrinsics, cond, code, background, lm68, *, index=None, perturb=False,
                     generator=None, sr: bool = True, upscale_torso: bool = False,
                     early_stop: bool | None = None) -> dict[str, torch.Tensor]:
        """Head (no grad: frozen) over torso over background at render size, then SR."""
        size = self.cfg.render_size
        ro, rd = R.pixel_rays(c2w, intrinsics, size, size)
        with torch.no_grad():
            stop = (not self.training) if early_stop is None else early_stop
            head = self.render_rays(ro, rd, cond, code, perturb=perturb, generator=generator, early_stop=stop)
        coords = R.bg_coords(size, size, device=ro.device)
        g = self.cfg.grid_size
        thresh = min(self.torso_cfg.density_thresh, self.mean_density_torso)
        occ = F.grid_sample(self.density_grid_torso.view(1, 1, g, g), coords.view(1, -1, 1, 2),
                            align_corners=True).view(-1)
        mask = occ > thresh
        n = coords.shape[0]
        alpha = torch.zeros(n, 1, device=ro.device)
        color = torch.zeros(n, 3, device=ro.device)
        res: dict[str, Any] = {}
        if mask.any():
            a, c, dx = self.forward_torso(coords[mask], self.torso_code(index), lm68,
                                          head["image"][mask], head["weights_sum"][:, None][mask])
            alpha = alpha.masked_scatter(mask[:, None], a.float())
            color = color.masked_scatter(mask[:, None].expand(-1, 3), c.float())
            res["deform"] = dx
        bg = background.reshape(-1, 3)
        torso_bg = color * alpha + bg * (1 - alpha)
        img = (head["image"] + (1 - head["weights_sum"])[:, None] * torso_bg).clamp(0, 1)
        res.update({"torso_alpha": alpha, "weights_sum": head["weights_sum"],
                    "torso_rgb": torso_bg.reshape(1, size, size, 3).permute(0, 3, 1, 2),
                    "rgb": img.reshape(1, size, size, 3).permute(0, 3, 1, 2)})
        if sr and self.cfg.sr:
            res["sr_rgb"] = self.sr_net(res["rgb"], generator=generator).clamp(0, 1)
            if upscale_torso:
                res["sr_torso_rgb"] = self.sr_net(res["torso_rgb"], generator=generator).clamp(0, 1)
        return res


def build_head(cfg: FieldConfig, seed: int = 0) -> HeadModel:
    """A HeadModel whose initial weights depend only on `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HeadModel(cfg)


def build_torso(cfg: FieldConfig, torso: TorsoConfig, seed: int = 0) -> TorsoModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TorsoModel(cfg, torso)
