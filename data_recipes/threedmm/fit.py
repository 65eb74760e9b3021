"""Landmark-based 3DMM fit: a global identity, per-frame expression and pose, batched PyTorch on the
run's device (fp32 unless a caller asks otherwise through `bench.precision`; torch's thread count
is set by whoever starts the workers, see `bench.threads`, never here).

The objective is GeneFace++'s (yerfor/GeneFacePlusPlus @ 6c35651,
data_gen/utils/process_video/fit_3dmm_landmark.py, `id_mode="global"`):
  mean(w * (proj - target)^2) in a 224-pixel frame      (landmark term, GeneFace++ weights below)
  + 0.2 mean(id^2) + 0.6 mean(exp^2)                     (coefficient priors)
  + 1.0 (lap(exp) + 0.3 lap(euler) + 0.3 lap(trans))    (temporal smoothness: squared second
                                                          differences with edge replication)
with Adam. Landmark weights for the 468 MediaPipe points: 1, eye contours 3, upper eyelids 20, inner
and outer lips 5, and 0 for the 8 cheek-contour points BFM has no counterpart for (93, 127, 132, 234,
323, 356, 361, 454); for 68 points: 1, eyes 3, nose 28-30 3, inner lips 3 (`cal_lan_loss`).

The schedule differs from the original, for speed and because the original's last stage is lost:
1. initial pose: rotation from a caller-given estimate (the open model's Procrustes, or zero), and
   translation from the landmarks' centroid and spread under the camera;
2. pose only, all frames (the original: 200 Adam steps, lr 0.1, from zero pose);
3. identity stage on at most `id_frames` evenly spaced frames: identity + their expression and pose
   (the original optimises every frame jointly here; its `sel_ids = arange(0, T, 40)` is computed and
   never used);
4. identity fixed; expression + pose of every frame with the temporal term, cosine-decayed lr
   (the original's third stage, 50-frame batches at lr 0.005, writes its results into
   `exp_para[sel_ids].data`, a copy, so they are discarded; its output is the joint stage's).
Frames without a face carry zero landmark weight; the priors and the smoothness term fill them in.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from data_recipes.threedmm.model import (GENEFACE_FRAME, Camera, MorphableModel, euler_to_rotation, project,
                                         project_uv, rotation_to_euler)

if TYPE_CHECKING:
    from bench.precision import Precision

UNMATCHED_468 = (93, 127, 132, 234, 323, 356, 361, 454)
EYES_468 = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
            263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
UPPER_EYELIDS_468 = (161, 160, 159, 158, 157, 388, 387, 386, 385, 384)
INNER_LIP_468 = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIP_468 = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)


def landmark_weights(keypoint_mode: str, valid: np.ndarray) -> np.ndarray:
    """(L,) float32 GeneFace++ landmark weights (see the module docstring), 0 where `valid` is False."""
    if keypoint_mode == "mediapipe":
        w = np.ones(468, np.float32)
        w[list(EYES_468)] = 3
        w[list(UPPER_EYELIDS_468)] = 20
        w[list(INNER_LIP_468)] = 5
        w[list(OUTER_LIP_468)] = 5
        w[list(UNMATCHED_468)] = 0
    elif keypoint_mode == "lm68":
        w = np.ones(68, np.float32)
        w[36:48] = 3
        w[-8:] = 3
        w[28:31] = 3
    else:
        raise ValueError(f"unknown keypoint mode {keypoint_mode!r}")
    if len(valid) != len(w):
        raise ValueError(f"{keypoint_mode} weights need {len(w)} landmarks, the model has {len(valid)}")
    return np.where(valid, w, 0).astype(np.float32)


@dataclass(frozen=True)
class FitConfig:
    """Fit options (defaults: GeneFace++'s global-identity weights; steps tuned for CPU).

    lambda_id / lambda_exp: weights of mean(id^2) / mean(exp^2); lambda_lap: temporal Laplacian weight
    (pose terms further scaled by lap_pose_weight); id_frames: frames used to fit the identity;
    pose_steps / id_steps / frame_steps: Adam steps of stages 2 / 3 / 4; lr: Adam learning rate
    (stage 4 decays it to lr * final_lr_fraction by a cosine).
    """

    lambda_id: float = 0.2
    lambda_exp: float = 0.6
    lambda_lap: float = 1.0
    lap_pose_weight: float = 0.3
    id_frames: int = 50
    pose_steps: int = 50
    id_steps: int = 150
    frame_steps: int = 150
    lr: float = 0.05
    final_lr_fraction: float = 0.05


@dataclass(frozen=True)
class FitResult:
    """Fitted coefficients (float32 arrays) and quality.

    id (K_id,); exp (T, K_exp); euler (T, 3) radians (pitch, yaw, roll), GeneFace++ convention;
    rotation (T, 3, 3) = Rz Ry Rx; trans (T, 3) decimetres; landmarks (T, L, 2) projected pixels
    (NaN for landmarks the model lacks); error_px (T,) mean distance to the targets over the weighted
    landmarks (NaN for frames without a face); loss_history: final loss of each stage.
    """

    id: np.ndarray
    exp: np.ndarray
    euler: np.ndarray
    rotation: np.ndarray
    trans: np.ndarray
    landmarks: np.ndarray
    error_px: np.ndarray
    camera: Camera
    loss_history: dict


def initial_translation(model: MorphableModel, targets: np.ndarray, present: np.ndarray, weights: np.ndarray,
                        camera: Camera) -> np.ndarray:
    """(T, 3) translation putting the mean shape's landmarks over each frame's targets (weak perspective)."""
    mean, _, _ = model.landmark_arrays()
    sel = weights > 0
    m = mean[sel].astype(np.float64)
    m_centre = m.mean(axis=0)
    m_spread = np.sqrt(((m[:, :2] - m_centre[:2]) ** 2).sum(axis=1).mean())
    out = np.zeros((len(targets), 3))
    for i in range(len(targets)):
        if not present[i]:
            continue
        q = targets[i, sel].astype(np.float64)
        c = q.mean(axis=0)
        spread = np.sqrt(((q - c) ** 2).sum(axis=1).mean())
        depth = camera.focal * m_spread / max(spread, 1e-6)
        out[i] = [(c[0] - camera.cx) * depth / camera.focal - m_centre[0],
                  (camera.cy - c[1]) * depth / camera.focal - m_centre[1],
                  camera.camera_distance - depth - m_centre[2]]
    if present.any():  # frames without a face start from the nearest frame with one
        out[~present] = _nearest_fill(out, present)[~present]
    return out


def _nearest_fill(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(present)
    nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(present))), 0, len(idx) - 1)]
    return values[nearest]


class Adam:
    """Adam (Kingma & Ba; torch.optim.Adam's defaults: betas 0.9 / 0.999, eps 1e-8, no weight decay).

    Written out because constructing torch.optim.Adam imports torch._dynamo, which took 3-9 s per
    process here: more than the whole fit of a short clip.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v / c2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / c1)


def _laplacian(x):
    """mean squared (x[t] - (x[t-1] + x[t+1]) / 2) with edge replication; x (T, C). GeneFace++'s cal_lap_loss."""
    import torch

    if x.shape[0] < 2:
        return x.new_zeros(())
    padded = torch.cat([x[:1], x, x[-1:]], dim=0)
    lap = padded[1:-1] - 0.5 * (padded[:-2] + padded[2:])
    return (lap ** 2).mean()


def fit_landmarks(model: MorphableModel, targets: np.ndarray, present: np.ndarray, camera: Camera,
                  config: FitConfig = FitConfig(), init_rotation: np.ndarray | None = None,
                  progress=None, device: str = "cpu", precision: "Precision | None" = None) -> FitResult:
    """Fit `model` to per-frame 2D landmarks.

    targets: (T, L, 2) pixels (u right, v down), L = model.num_landmarks; present: (T,) bool frames with
    a face; camera: see `Camera.geneface`; init_rotation: optional (T, 3, 3) rotation estimates
    (NaN rows allowed); progress: optional `bench.progress.Progress`; device: where the tensors live
    ("cpu", "cuda", ...); precision: a `bench.precision.Precision` for the loss evaluations' autocast
    region (None = fp32; the optimiser state and the coefficients stay fp32 either way).
    """
    return _fit(model, targets, present, camera, config, init_rotation, progress, device, precision)


def _fit(model, targets, present, camera, config, init_rotation, progress, device, precision) -> FitResult:
    import torch

    dev = torch.device(device)
    region = (lambda: precision.autocast(str(dev))) if precision is not None else contextlib.nullcontext

    targets = np.asarray(targets, np.float32)
    present = np.asarray(present, bool)
    t_all = len(targets)
    if targets.shape != (t_all, model.num_landmarks, 2):
        raise ValueError(f"targets must be (T, {model.num_landmarks}, 2), got {targets.shape}")
    if not present.any():
        raise ValueError("no frame has a face; nothing to fit")
    weights = landmark_weights(model.keypoint_mode, model.landmark_valid)
    finite = np.isfinite(targets).all(axis=2) & present[:, None]
    frame_w = np.where(finite, weights[None], 0).astype(np.float32)  # (T, L)
    clean = np.where(np.isfinite(targets), targets, 0).astype(np.float32)
    px_scale = GENEFACE_FRAME / camera.height  # losses in GeneFace++'s 224-pixel frame

    mean_np, idb_np, exb_np = model.landmark_arrays()
    n_lm = model.num_landmarks
    mean_t = torch.from_numpy(np.ascontiguousarray(mean_np, np.float32)).to(dev)
    # flattened (3L, K) bases: one matmul per step instead of an einsum over (T, L, 3, K)
    idb = torch.from_numpy(np.ascontiguousarray(idb_np.reshape(n_lm * 3, -1), np.float32)).to(dev)
    exb = torch.from_numpy(np.ascontiguousarray(exb_np.reshape(n_lm * 3, -1), np.float32)).to(dev)
    tgt_u = torch.from_numpy(np.ascontiguousarray(clean[..., 0])).to(dev)
    tgt_v = torch.from_numpy(np.ascontiguousarray(clean[..., 1])).to(dev)
    wt = torch.from_numpy(frame_w).to(dev)

    euler0 = np.zeros((t_all, 3))
    if init_rotation is not None:
        ok = np.isfinite(init_rotation).all(axis=(1, 2))
        euler0[ok] = rotation_to_euler(init_rotation[ok])
        if ok.any():
            euler0[~ok] = _nearest_fill(euler0, ok)[~ok]
    trans0 = initial_translation(model, targets, present, weights, camera)

    id_c = torch.zeros(model.num_id, device=dev, requires_grad=True)
    exp_c = torch.zeros(t_all, model.num_exp, device=dev, requires_grad=True)
    euler = torch.tensor(euler0, dtype=torch.float32, device=dev, requires_grad=True)
    trans = torch.tensor(trans0, dtype=torch.float32, device=dev, requires_grad=True)

    def shapes(id_v, exp_v):
        return mean_t + (idb @ id_v).view(n_lm, 3) + (exp_v @ exb.T).view(-1, n_lm, 3)

    def landmark_loss(idx, id_v, exp_v, eul_v, tr_v):
        u, v = project_uv(shapes(id_v, exp_v), euler_to_rotation(eul_v), tr_v, camera)
        # GeneFace++: mean over frames, landmarks and both coordinates of w * d^2 (224-pixel frame)
        sq = (u - tgt_u[idx]) ** 2 + (v - tgt_v[idx]) ** 2
        return (sq * wt[idx]).mean() * (0.5 * px_scale ** 2)

    def run(params, steps, closure, label, decay=False):
        if steps <= 0:
            return float("nan")
        opt = Adam(params, lr=config.lr)
        loss_v = float("nan")
        with (progress.task(label, total=steps) if progress is not None else contextlib.nullcontext()) as bar:
            for step in range(steps):
                if decay:
                    cos = 0.5 * (1 + math.cos(math.pi * step / steps))
                    opt.lr = config.lr * (config.final_lr_fraction + (1 - config.final_lr_fraction) * cos)
                for p in params:
                    p.grad = None
                with region():
                    loss = closure()
                loss.float().backward()
                opt.step()
                loss_v = float(loss.detach())
                if bar is not None:
                    bar.advance(1, loss=loss_v)
        return loss_v

    history = {}
    all_idx = torch.arange(t_all, device=dev)
    zero_id = torch.zeros(model.num_id, device=dev)
    zero_exp = torch.zeros(t_all, model.num_exp, device=dev)
    history["pose"] = run([euler, trans], config.pose_steps,
                          lambda: landmark_loss(all_idx, zero_id, zero_exp, euler, trans), "3dmm pose")

    sel = np.flatnonzero(present)
    if len(sel) > config.id_frames:
        sel = sel[np.linspace(0, len(sel) - 1, config.id_frames).round().astype(int)]
    sel_t = torch.from_numpy(sel).to(dev)
    exp_s = exp_c.detach()[sel_t].clone().requires_grad_(True)
    eul_s = euler.detach()[sel_t].clone().requires_grad_(True)
    tr_s = trans.detach()[sel_t].clone().requires_grad_(True)

    def id_closure():
        return (landmark_loss(sel_t, id_c, exp_s, eul_s, tr_s)
                + config.lambda_id * (id_c ** 2).mean() + config.lambda_exp * (exp_s ** 2).mean())

    history["identity"] = run([id_c, exp_s, eul_s, tr_s], config.id_steps, id_closure, "3dmm identity")

    id_fixed = id_c.detach()
    with torch.no_grad():
        exp_c[sel_t] = exp_s.detach()
        euler[sel_t] = eul_s.detach()
        trans[sel_t] = tr_s.detach()

    def frame_closure():
        lap = (_laplacian(exp_c) + config.lap_pose_weight * _laplacian(euler)
               + config.lap_pose_weight * _laplacian(trans))
        return (landmark_loss(all_idx, id_fixed, exp_c, euler, trans) + config.lambda_exp * (exp_c ** 2).mean()
                + config.lambda_lap * lap)

    history["frames"] = run([exp_c, euler, trans], config.frame_steps, frame_closure, "3dmm frames", decay=True)

    with torch.no_grad():
        rot = euler_to_rotation(euler)
        proj = project(shapes(id_fixed, exp_c), rot, trans, camera).cpu().numpy().astype(np.float64)
    dist = np.linalg.norm(proj - targets, axis=2)
    used = frame_w > 0
    err = np.full(t_all, np.nan)
    rows = used.any(axis=1)
    err[rows] = (np.where(used, dist, 0).sum(axis=1)[rows] / used.sum(axis=1)[rows])
    proj[:, ~model.landmark_valid] = np.nan
    return FitResult(
        id=id_fixed.cpu().numpy().astype(np.float32), exp=exp_c.detach().cpu().numpy().astype(np.float32),
        euler=euler.detach().cpu().numpy().astype(np.float32), rotation=rot.cpu().numpy().astype(np.float32),
        trans=trans.detach().cpu().numpy().astype(np.float32), landmarks=proj.astype(np.float32),
        error_px=err.astype(np.float32), camera=camera, loss_history=history,
    )
