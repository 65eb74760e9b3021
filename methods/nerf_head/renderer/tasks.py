"""Training of the renderer as tasks for bench.trainer: the head + SR stage and the torso stage.

Faithful to tasks/radnerfs/radnerf_sr.py and radnerf_torso_sr.py:
- head: every step renders the whole frame at the render size with perturbed marching; losses MSE
  (render size) + alpha entropy 1e-4 + ambient loss x lambda_ambient + SR MSE (2x size) + from
  `lpips_start` the perceptual terms (1e-3 head, 0.5e-3 SR, 0.5e-3 SR lips); lambda_ambient then moves
  by 0.01 x (log10 ambient - log10 1e-8), clamped to [0, 1000]; the occupancy grid is refreshed every
  16 steps (not after the perceptual phase starts); Adam (0.9, 0.999, eps 1e-15), lr 5e-4 networks
  (SR and frame codes included), 5e-3 grids, 2.5e-3 attention, x 0.1^(step / 250k), floor 1e-5.
- torso: the head model is loaded and frozen; SR is frozen too (the original re-freezes it every step,
  so its optimiser group never moves); losses torso MSE (torso over plate vs the frame's torso over
  plate) + torso alpha entropy 1e-4 + SR torso MSE (+ perceptual terms from `lpips_start`); lr 5e-4
  torso networks and codes, 5e-3 torso grid; torso occupancy every 16 steps. The head-aware encoder
  gets gradients but is in no optimiser group in the original (its parameter names lack "torso"), so
  it keeps its initial weights - kept as is.
Randomness (frame choice, marching jitter, SR noise, occupancy jitter) is drawn from a generator
seeded by (seed, step), so a run continued from a checkpoint trains exactly as an uninterrupted one.

Perceptual term: the suite's LPIPS (VGG16 trunk + v0.1 heads, metrics/lpips) where its weights are in
the weights folder; GeneFace++ uses its own VGG19 perceptual loss. Without the weights the term is
left out and `notes` says so.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from methods.nerf_head.renderer import data as D
from methods.nerf_head.renderer.config import RendererConfig, TrainConfig
from methods.nerf_head.renderer.model import HeadModel, TorsoModel, build_head, build_torso, condition_window


def lr_at(cfg: TrainConfig, step: int) -> float:
    return max(cfg.lr * (0.1 ** (step / cfg.decay_steps)), cfg.lr_floor)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _entropy(a: torch.Tensor) -> torch.Tensor:
    a = a.clamp(1e-5, 1 - 1e-5)
    return torch.mean(-a * torch.log2(a) - (1 - a) * torch.log2(1 - a))


def _enter(autocast):
    return autocast() if callable(autocast) and not hasattr(autocast, "__enter__") else autocast


def load_perceptual(device: str, enabled: bool = True):
    """(LPIPS net or None, note). The net's parameters are frozen and never part of a task's state."""
    if not enabled:
        return None, "perceptual term off in this preset"
    try:
        from metrics.lpips.model import load_lpips

        net, _ = load_lpips("vgg", device=device)
    except Exception as exc:  # missing / mismatched weights: leave the term out, say why
        return None, f"perceptual term left out: suite LPIPS (vgg) unavailable ({exc})"
    net.requires_grad_(False).eval()
    return net, "perceptual term: suite LPIPS (VGG16 + v0.1 heads) in place of GeneFace++'s VGG19 loss"


def _lpips(net, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from metrics.lpips.model import lpips_forward

    return lpips_forward(net, a * 2 - 1, b * 2 - 1).mean()


class _Frames:
    """The data on the device at the render size (and 2x for SR), built once per task."""

    def __init__(self, data: D.RendererData, render_size: int, sr: bool, device: str):
        self.data = data
        s = data.size
        self.size = render_size
        self.factor = render_size / s
        self.gt = D.resize_u8(data.frames, render_size).to(device)
        bg_torso = D.torso_over_plate(data.frames, data.labels, data.background)
        self.bg_torso = D.resize_u8(bg_torso, render_size).to(device)
        self.plate = D.resize_u8(data.background[None], render_size)[0].to(device)
        self.gt_sr = D.resize_u8(data.frames, 2 * render_size).to(device) if sr else None
        self.bg_torso_sr = D.resize_u8(bg_torso, 2 * render_size).to(device) if sr else None
        del bg_torso
        if data.face_masks is not None:
            masks = torch.from_numpy(np.ascontiguousarray(data.face_masks[..., None].astype(np.uint8) * 255))
            self.face = D.resize_u8(masks.numpy(), render_size).to(device)[:, 0] > 0
        else:
            lm = data.lm68 * self.factor
            self.face = torch.from_numpy(np.stack([D.hull_mask(p, render_size) for p in lm])).to(device)
        self.conds = torch.from_numpy(np.asarray(data.conds, np.float32)).to(device)
        self.eye = torch.from_numpy(np.asarray(data.eye_area, np.float32)).to(device)
        self.c2w = torch.from_numpy(np.asarray(data.c2w, np.float32)).to(device)
        self.lm_nerf = torch.from_numpy(D.nerf_lm68(data.lm68, s)).to(device)
        self.lips = [D.lip_rect(p * self.factor, render_size) for p in data.lm68]
        self.train_idx = np.asarray(data.train_idx, np.int64)
        self.val_idx = np.asarray(data.val_idx, np.int64)
        self.eye_infer = D.eye_area_for_inference(np.asarray(data.eye_area)[self.train_idx])

    def intrinsics(self, index: int) -> np.ndarray:
        return self.data.intrinsics_of(index) * np.float32(self.factor)

    def image(self, t: torch.Tensor, index: int) -> torch.Tensor:
        return t[index].float().unsqueeze(0) / 255.0

    def hwc(self, t: torch.Tensor, index: int | None = None) -> torch.Tensor:
        x = t if index is None else t[index]
        return x.permute(1, 2, 0).float() / 255.0

    def window(self, index: int, win: int) -> torch.Tensor:
        return condition_window(self.conds, index, win)

    def eval_frames(self, count: int) -> list[int]:
        if len(self.val_idx) == 0:
            return []
        pick = np.linspace(0, len(self.val_idx) - 1, min(count, len(self.val_idx))).round().astype(int)
        return [int(self.val_idx[i]) for i in pick]


class _Base:
    def __init__(self, data: D.RendererData, cfg: RendererConfig, train: TrainConfig, device: str,
                 perceptual: bool | None):
        self.cfg = cfg
        self.train_cfg = train
        self.device = device
        self.frames = _Frames(data, cfg.head.render_size, cfg.head.sr, device)
        use = train.lpips_start < train.steps if perceptual is None else perceptual
        self.lpips, self.notes = load_perceptual(device, use) if use else (None, "perceptual term not scheduled")
        self.scaler = None

    def _gen(self, step: int, salt: int = 0) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.train_cfg.seed * 1_000_003 + step * 7 + salt) % (2 ** 63))
        return g

    def _backward(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        fp16 = str(self.device).startswith("cuda") and torch.is_autocast_enabled("cuda") \
            and torch.get_autocast_dtype("cuda") == torch.float16
        if fp16 and self.scaler is None:
            self.scaler = torch.amp.GradScaler("cuda")
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            opt.step()

    def _set_lr(self, opt, step: int, mults: list[float]) -> float:
        lr = lr_at(self.train_cfg, step)
        for group, m in zip(opt.param_groups, mults):
            group["lr"] = lr * m
        return lr

    def _perceptual_on(self, step: int) -> bool:
        return self.lpips is not None and step >= self.train_cfg.lpips_start


class HeadTask(_Base):
    """The head + super-resolution stage (trained from scratch)."""

    def __init__(self, data: D.RendererData, cfg: RendererConfig, device: str = "cpu",
                 perceptual: bool | None = None):
        super().__init__(data, cfg, cfg.head_train, device, perceptual)
        self.model: HeadModel = build_head(cfg.head, cfg.head_train.seed).to(device)
        f = self.frames
        self.model.mark_untrained(f.c2w[torch.from_numpy(f.train_idx).to(device)], f.intrinsics(int(f.train_idx[0])))
        m = self.model
        grids = [p for k, p in m.named_parameters() if p.requires_grad and ("position_embedder" in k or "ambient_embedder" in k)]
        att = [p for k, p in m.named_parameters() if p.requires_grad and "cond_att_net" in k]
        ids = {id(p) for p in grids + att}
        nets = [p for p in m.parameters() if p.requires_grad and id(p) not in ids]
        t = cfg.head_train
        self.mults = [1.0, t.grid_lr_mult, t.att_lr_mult]
        self.optimizer = torch.optim.Adam([{"params": nets}, {"params": grids}, {"params": att}],
                                          lr=t.lr, betas=(0.9, 0.999), eps=1e-15)

    # ----------------------------------------------------------------------------- protocol

    def state(self) -> dict[str, Any]:
        st = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        return st

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            self.scaler = torch.amp.GradScaler("cuda")
            self.scaler.load_state_dict(state["scaler"])
        self.model.refresh_bitfield(repack=False)

    def step(self, step: int, autocast) -> dict[str, float]:
        t, f, m = self.train_cfg, self.frames, self.model
        m.train()
        gen = self._gen(step)
        with _enter(autocast):
            if step % t.update_every == 0 and step < t.lpips_start:
                j = int(f.train_idx[int(torch.randint(len(f.train_idx), (1,), generator=gen, device=self.device))])
                with torch.no_grad():
                    m.update_occupancy(m.cond_feature(f.window(j, m.cfg.smo_win), f.eye[j]), t.ema_decay, gen)
            i = int(f.train_idx[int(torch.randint(len(f.train_idx), (1,), generator=gen, device=self.device))])
            lr = self._set_lr(self.optimizer, step, self.mults)
            cond = m.cond_feature(f.window(i, m.cfg.smo_win), f.eye[i])
            code = m.individual_code(i)
            sr_on = m.cfg.sr and step >= t.sr_start
            out = m.render_image(f.c2w[i], f.intrinsics(i), cond, code, f.hwc(f.bg_torso, i), perturb=True,
                                 generator=gen, sr=sr_on, early_stop=False)
            gt = f.image(f.gt, i)
            logs: dict[str, float] = {}
            mse = torch.mean((out["rgb"] - gt) ** 2)
            entropy = _entropy(out["weights_sum"])
            outside = ~f.face[i].reshape(-1)
            ambient = (out["ambient_sum"].abs() * outside).sum() / (outside.sum() + 1)
            lam = float(m.lambda_ambient.item())
            loss = mse + t.lambda_entropy * entropy + lam * ambient
            if sr_on:
                gt_sr = f.image(f.gt_sr, i)
                sr_mse = torch.mean((out["sr_rgb"] - gt_sr) ** 2)
                loss = loss + sr_mse
                logs["sr_mse"] = float(sr_mse.detach())
            if self._perceptual_on(step):
                lp = _lpips(self.lpips, out["rgb"], gt)
                loss = loss + t.lambda_lpips * lp
                logs["lpips"] = float(lp.detach())
                if sr_on:
                    r0, r1, c0, c1 = (2 * v for v in f.lips[i])
                    loss = loss + 0.5 * t.lambda_lpips * _lpips(self.lpips, out["sr_rgb"], gt_sr)
                    if r1 - r0 >= 8 and c1 - c0 >= 8:
                        loss = loss + 0.5 * t.lambda_lpips * _lpips(
                            self.lpips, out["sr_rgb"][..., r0:r1, c0:c1], gt_sr[..., r0:r1, c0:c1])
        self._backward(loss, self.optimizer)
        amb = float(ambient.detach())
        with torch.no_grad():
            step_l = math.log10(amb + 1e-15) - math.log10(t.target_ambient + 1e-15)
            m.lambda_ambient.add_(t.lr_lambda_ambient * step_l).clamp_(0, 1000)
        loss, mse = loss.detach(), mse.detach()
        logs.update({"loss": float(loss), "mse": float(mse), "psnr": -10 * math.log10(max(float(mse), 1e-12)),
                     "entropy": float(entropy.detach()), "ambient": amb, "lambda_ambient": float(m.lambda_ambient.item()),
                     "samples_per_ray": float(out["samples"]) / out["weights_sum"].numel(), "lr": lr,
                     "mean_density": m.mean_density})
        return logs

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        f, m = self.frames, self.model
        idx = f.eval_frames(self.train_cfg.eval_frames)
        if not idx:
            return {}
        m.eval()
        head, sr = [], []
        try:
            for n, i in enumerate(idx):
                cond = m.cond_feature(f.window(i, m.cfg.smo_win), f.eye[i])
                out = m.render_image(f.c2w[i], f.intrinsics(i), cond, m.individual_code(None),
                                     f.hwc(f.bg_torso, i), generator=self._gen(10**9 + n))
                head.append(psnr(out["rgb"], f.image(f.gt, i)))
                if "sr_rgb" in out:
                    sr.append(psnr(out["sr_rgb"], f.image(f.gt_sr, i)))
        finally:
            m.train()
        res = {"val_psnr": float(np.mean(head))}
        if sr:
            res["val_psnr_sr"] = float(np.mean(sr))
        return res

    @torch.no_grad()
    def preview(self, step: int) -> np.ndarray | None:
        """Ground truth | render (the SR output where there is one) of the first held-out frame."""
        f, m = self.frames, self.model
        idx = f.eval_frames(1) or [int(f.train_idx[0])]
        i = idx[0]
        m.eval()
        try:
            cond = m.cond_feature(f.window(i, m.cfg.smo_win), f.eye[i])
            out = m.render_image(f.c2w[i], f.intrinsics(i), cond, m.individual_code(None),
                                 f.hwc(f.bg_torso, i), generator=self._gen(10**9))
        finally:
            m.train()
        key, gt = ("sr_rgb", f.gt_sr) if "sr_rgb" in out else ("rgb", f.gt)
        pred = (out[key][0].permute(1, 2, 0) * 255).round().byte().cpu().numpy()
        return np.concatenate([gt[i].permute(1, 2, 0).cpu().numpy(), pred], axis=1)


_HEAD_ONLY_KEYS = {"lambda_ambient"}


def torso_head_keys(model: TorsoModel) -> set[str]:
    """Keys of a TorsoModel that come from the head model (everything not torso-specific)."""
    torso_prefixes = ("density_grid_torso", "torso_individual_codes", "torso_embedder.", "torso_deform_net.",
                      "torso_canonicial_net.", "head_color_weights_encoder.")
    return {k for k in model.state_dict() if not k.startswith(torso_prefixes)}


class TorsoTask(_Base):
    """The torso stage: head (and SR) frozen from a finished head model."""

    def __init__(self, data: D.RendererData, cfg: RendererConfig, head_state: dict[str, torch.Tensor],
                 device: str = "cpu", perceptual: bool | None = None):
        super().__init__(data, cfg, cfg.torso_train, device, perceptual)
        m = build_torso(cfg.head, cfg.torso, cfg.torso_train.seed)
        missing, unexpected = m.load_state_dict(head_state, strict=False)
        head_keys = torso_head_keys(m)
        if set(unexpected) - _HEAD_ONLY_KEYS or set(missing) & head_keys:
            raise ValueError(f"head state does not fit the torso model: missing {sorted(set(missing) & head_keys)[:5]}, "
                             f"unexpected {sorted(set(unexpected) - _HEAD_ONLY_KEYS)[:5]}")
        self.model: TorsoModel = m.to(device)
        self.model.refresh_bitfield(repack=False)
        for k, p in m.named_parameters():
            p.requires_grad_("torso" in k or k.startswith("head_color_weights_encoder"))
        grid = [p for k, p in m.named_parameters() if "torso_embedder" in k]
        nets = [p for k, p in m.named_parameters() if "torso" in k and "torso_embedder" not in k]
        t = cfg.torso_train
        self.mults = [1.0, t.grid_lr_mult]
        self.optimizer = torch.optim.Adam([{"params": nets}, {"params": grid}], lr=t.lr, betas=(0.9, 0.999), eps=1e-15)

    def state(self) -> dict[str, Any]:
        st = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
              "mean_density_torso": self.model.mean_density_torso}
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        return st

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.model.mean_density_torso = float(state.get("mean_density_torso", 0.0))
        if "scaler" in state:
            self.scaler = torch.amp.GradScaler("cuda")
            self.scaler.load_state_dict(state["scaler"])
        self.model.refresh_bitfield(repack=False)

    def step(self, step: int, autocast) -> dict[str, float]:
        t, f, m = self.train_cfg, self.frames, self.model
        m.train()
        gen = self._gen(step, salt=1)
        with _enter(autocast):
            if step % t.update_every == 0:
                j = int(f.train_idx[int(torch.randint(len(f.train_idx), (1,), generator=gen, device=self.device))])
                m.update_torso_occupancy(m.torso_code(j), f.lm_nerf[j], t.ema_decay, gen)
            i = int(f.train_idx[int(torch.randint(len(f.train_idx), (1,), generator=gen, device=self.device))])
            lr = self._set_lr(self.optimizer, step, self.mults)
            with torch.no_grad():
                cond = m.cond_feature(f.window(i, m.cfg.smo_win), f.eye[i])
                code = m.individual_code(i)
            sr_on = m.cfg.sr and step >= t.sr_start
            out = m.render_image(f.c2w[i], f.intrinsics(i), cond, code, f.hwc(f.plate), f.lm_nerf[i], index=i,
                                 perturb=True, generator=gen, sr=sr_on, upscale_torso=sr_on, early_stop=False)
            target = f.image(f.bg_torso, i)
            mse = torch.mean((out["torso_rgb"] - target) ** 2)
            entropy = _entropy(out["torso_alpha"])
            loss = mse + t.lambda_entropy * entropy
            logs: dict[str, float] = {}
            if "deform" in out and t.lambda_deform > 0 and step >= 100_000:
                loss = loss + t.lambda_deform * out["deform"].abs().mean()
            if sr_on:
                target_sr = f.image(f.bg_torso_sr, i)
                sr_mse = torch.mean((out["sr_torso_rgb"] - target_sr) ** 2)
                loss = loss + sr_mse
                logs["sr_mse"] = float(sr_mse.detach())
            if self._perceptual_on(step):
                loss = loss + 0.5 * t.lambda_lpips * _lpips(self.lpips, out["torso_rgb"], target)
                if sr_on:
                    loss = loss + 0.5 * t.lambda_lpips * _lpips(self.lpips, out["sr_torso_rgb"], target_sr)
        if loss.requires_grad:
            self._backward(loss, self.optimizer)
        loss, mse = loss.detach(), mse.detach()
        logs.update({"loss": float(loss), "mse": float(mse), "psnr": -10 * math.log10(max(float(mse), 1e-12)),
                     "entropy": float(entropy.detach()), "lr": lr, "mean_density_torso": m.mean_density_torso})
        return logs

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        f, m = self.frames, self.model
        idx = f.eval_frames(self.train_cfg.eval_frames)
        if not idx:
            return {}
        m.eval()
        full, sr = [], []
        try:
            for n, i in enumerate(idx):
                cond = m.cond_feature(f.window(i, m.cfg.smo_win), f.eye[i])
                out = m.render_image(f.c2w[i], f.intrinsics(i), cond, m.individual_code(None), f.hwc(f.plate),
                                     f.lm_nerf[i], generator=self._gen(10**9 + n, 1))
                full.append(psnr(out["rgb"], f.image(f.gt, i)))
                if "sr_rgb" in out:
                    sr.append(psnr(out["sr_rgb"], f.image(f.gt_sr, i)))
        finally:
            m.train()
        res = {"val_psnr": float(np.mean(full))}
        if sr:
            res["val_psnr_sr"] = float(np.mean(sr))
        return res

    @torch.no_grad()
    def preview(self, step: int) -> np.ndarray | None:
        f, m = self.frames, self.model
        i = (f.eval_frames(1) or [int(f.train_idx[0])])[0]
        m.eval()
        try:
            cond = m.cond_feature(f.window(i, m.cfg.smo_win), f.eye[i])
            out = m.render_image(f.c2w[i], f.intrinsics(i), cond, m.individual_code(None), f.hwc(f.plate),
                                 f.lm_nerf[i], generator=self._gen(10**9, 1))
        finally:
            m.train()
        key, gt = ("sr_rgb", f.gt_sr) if "sr_rgb" in out else ("rgb", f.gt)
        pred = (out[key][0].permute(1, 2, 0) * 255).round().byte().cpu().numpy()
        return np.concatenate([gt[i].permute(1, 2, 0).cpu().numpy(), pred], axis=1)


def tiny_override(cfg: RendererConfig, **head_fields: Any) -> RendererConfig:
    """A copy with some FieldConfig fields replaced (tests, benchmarks)."""
    return replace(cfg, head=replace(cfg.head, **head_fields))
