"""Training the audio-to-motion model as Real3DPortrait's audio2motion task does, as a `bench.trainer` task.

Facts from yerfor/Real3DPortrait @ a9d70c7: tasks/os_avatar/audio2motion_task.py,
egs/os_avatar/audio2motion_vae.yaml (+ egs/egs_bases/audio2motion/base.yaml), utils/nn/schedulers.py
`ExponentialSchedule`, utils/commons/base_task.py (gradient clipping).

Loss = 0.5 mse_exp + 0.5 mse_lm3d + 1.0 lap_exp + 0.1 l2_reg_exp + kl_weight(step) kl
- mse_exp: squared error of the expression over unmasked frames, / (frames x channels);
- mse_lm3d: squared error of the idexp landmarks (x 10) at the 468 MediaPipe points, weighted eyes
  x3, upper eyelids x20, inner / outer lips x5, the 8 points BFM cannot match x0 (68 points for a
  BFM fitted in lm68 mode: eyes, the last 8 inner-lip points and nose 28-30 x5), / (frames x 3 L);
  the identity term is the same for prediction and target (the original repeats frame 0's identity,
  and identity is one global vector per clip), so only the expression offsets enter;
- lap_exp: the temporal Laplacian (-0.5, 1, -0.5) of the predicted expression, zero-padded, squared;
- l2_reg_exp: squared predicted expression / (frames x channels);
- kl: the model's flow-prior KL, weight cyclically annealed: 0.02 x (step mod 4000) / 2000 for the
  first 2000 of every 4000 steps, 0.02 for the rest.
Left out: the landmark-HuBERT sync loss (weight 0.2). It needs a pretrained `LandmarkHubertSyncNet`
that is not available here; the released config sets `syncnet_ckpt_dir: ''`, which trains against a
randomly initialised, frozen SyncNet.
Optimiser: Adam (0.9, 0.999), lr 5e-4, linear warm-up over 1000 steps from 1e-7, then
5e-4 x 0.1^(step / 250k), floor 1e-6; gradient norm clipped to 1.
Data (a deviation): the original batches whole utterances of a large corpus; here each step draws
`batch` random windows of `window` frames from the training clips (a one-clip dataset such as the
demo has a single utterance), with each clip's own mouth amplitude and blink units.
Randomness (windows and the encoder's noise) is drawn from (seed, step), so a run continued from a
checkpoint trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from methods.nerf_head.motion import LM_SCALE, ExpressionSpace

if TYPE_CHECKING:
    import torch

    from methods.nerf_head.audio2motion.data import MotionClip
    from methods.nerf_head.audio2motion.model import A2MArch

# MediaPipe-468 point groups of the original's lm468_mse_loss
UNMATCHED_468 = (93, 127, 132, 234, 323, 356, 361, 454)
UPPER_EYE_468 = (161, 160, 159, 158, 157, 388, 387, 386, 385, 384)
EYE_468 = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
           263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
INNER_LIP_468 = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIP_468 = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)


@dataclass(frozen=True)
class TrainConfig:
    """Real3DPortrait's audio2motion_vae.yaml values, plus the window sampling of this suite.

    batch / window: windows per step and their length in frames (a multiple of 4; the latent runs at
    1/4 of the frame rate); lr / warmup / decay_steps / min_lr: ExponentialSchedule; clip_grad_norm;
    lambda_*: loss weights; kl_t1 / kl_t2: cyclical KL annealing; seed: data and noise seed.
    """

    batch: int = 8
    window: int = 64
    lr: float = 5e-4
    warmup: int = 1000
    decay_steps: float = 250_000.0
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float = 1.0
    lambda_mse_exp: float = 0.5
    lambda_mse_lm3d: float = 0.5
    lambda_lap_exp: float = 1.0
    lambda_l2_reg_exp: float = 0.1
    lambda_kl: float = 0.02
    kl_t1: int = 2000
    kl_t2: int = 2000
    seed: int = 0


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """ExponentialSchedule.step(step): warm-up from 1e-7, then 0.1x per `decay_steps`, floor `min_lr`."""
    if cfg.warmup > 0 and step <= cfg.warmup:
        return max(cfg.lr * min(step / cfg.warmup, 1.0), 1e-7)
    return max(cfg.lr * 0.1 ** (step / cfg.decay_steps), cfg.min_lr)


def kl_weight(step: int, cfg: TrainConfig) -> float:
    """Cyclical annealing (Fu et al. 2019) as the original: ramp over t1 steps, hold for t2, repeat."""
    period = cfg.kl_t1 + cfg.kl_t2
    s = step % period if period > 0 else cfg.kl_t1
    return s / cfg.kl_t1 * cfg.lambda_kl if s < cfg.kl_t1 else cfg.lambda_kl


def landmark_weights(num_points: int) -> np.ndarray:
    """(L,) per-point weights of the landmark loss (468 MediaPipe points or 68 iBUG points)."""
    if num_points == 468:
        w = np.ones(468, np.float32)
        w[list(EYE_468)] = 3
        w[list(UPPER_EYE_468)] = 20
        w[list(INNER_LIP_468)] = 5
        w[list(OUTER_LIP_468)] = 5
        w[list(UNMATCHED_468)] = 0
        return w
    if num_points == 68:
        w = np.ones(68, np.float32)
        w[36:48] = 5
        w[-8:] = 5
        w[28:31] = 5
        return w
    raise ValueError(f"landmark loss weights exist for 468 or 68 points, not {num_points}")


# ---------------------------------------------------------------- losses (torch, (B, T, C) tensors)

def mse_loss(pred, target, mask):
    err = (pred - target) * mask[..., None]
    return (err ** 2).sum() / (mask.sum() * pred.shape[-1])


def l2_reg_loss(pred, mask):
    return ((pred ** 2) * mask[..., None]).sum() / (mask.sum() * pred.shape[-1])


def lap_loss(pred, mask):
    import torch.nn.functional as F

    padded = F.pad(pred, (0, 0, 1, 1))
    lap = padded[:, 1:-1] - 0.5 * padded[:, :-2] - 0.5 * padded[:, 2:]
    return ((lap ** 2) * mask[..., None]).sum() / (mask.sum() * pred.shape[-1])


def landmark_loss(pred_exp, gt_exp, mask, basis, weights):
    """Weighted MSE of (basis . exp) x 10 at L points; basis (L, 3, K), weights (L,)."""
    import torch

    diff = torch.einsum("lck,btk->btlc", basis, pred_exp - gt_exp) * LM_SCALE
    c = basis.shape[0] * 3
    loss = (diff ** 2) * mask[:, :, None, None] * weights[None, None, :, None]
    return loss.sum() / (mask.sum() * c)


# ---------------------------------------------------------------- batches

@dataclass
class Batch:
    audio: Any
    f0: Any
    exp: Any
    mask: Any
    blink: Any
    mouth_amp: Any


def sample_windows(clips: Sequence["MotionClip"], batch: int, window: int, rng: np.random.Generator
                   ) -> list[tuple[int, int, int]]:
    """(clip index, start frame, frames) of `batch` random windows; clips drawn by length."""
    lengths = np.array([c.num_frames for c in clips], np.float64)
    p = lengths / lengths.sum()
    out = []
    for _ in range(batch):
        i = int(rng.choice(len(clips), p=p))
        n = min(window, clips[i].num_frames)
        start = int(rng.integers(0, clips[i].num_frames - n + 1))
        out.append((i, start, n))
    return out


def collate(clips: Sequence["MotionClip"], windows: Sequence[tuple[int, int, int]], stride_frames: int = 4) -> Batch:
    """Zero-padded batch of windows; every length is rounded up to a multiple of `stride_frames` and
    the padding is masked (the original pads to a multiple of 8 audio rows the same way)."""
    import torch

    t = max(n for _, _, n in windows)
    t = -(-t // stride_frames) * stride_frames
    b = len(windows)
    c0 = clips[windows[0][0]]
    audio = np.zeros((b, 2 * t, c0.audio.shape[1]), np.float32)
    f0 = np.zeros((b, 2 * t), np.float32)
    exp = np.zeros((b, t, c0.exp.shape[1]), np.float32)
    mask = np.zeros((b, t), np.float32)
    blink = np.zeros((b, 2 * t), np.int64)
    amp = np.zeros((b,), np.float32)
    for j, (i, s, n) in enumerate(windows):
        c = clips[i]
        audio[j, :2 * n] = c.audio[2 * s:2 * (s + n)]
        f0[j, :2 * n] = c.f0[2 * s:2 * (s + n)]
        exp[j, :n] = c.exp[s:s + n]
        mask[j, :n] = 1
        blink[j, :2 * n] = np.repeat(c.blink[s:s + n], 2)  # the original interpolates x2 to 50 Hz
        amp[j] = c.mouth_amp
    return Batch(*(torch.from_numpy(a) for a in (audio, f0, exp, mask, blink, amp)))


def whole_clip_windows(clips: Sequence["MotionClip"], stride_frames: int = 4) -> list[tuple[int, int, int]]:
    return [(i, 0, c.num_frames // stride_frames * stride_frames) for i, c in enumerate(clips)
            if c.num_frames >= stride_frames]


def _enter(autocast):
    if autocast is None:
        return contextlib.nullcontext()
    return autocast if hasattr(autocast, "__enter__") else autocast()


# ---------------------------------------------------------------- the task

class Audio2MotionTask:
    """A `bench.trainer` task: state / load_state / step / evaluate (see bench/trainer.py).

    train_clips / val_clips: MotionClips (val never trains); space: their ExpressionSpace; arch: the
    model's architecture (audio_dim must match the clips' front end, motion_dim the space).
    """

    def __init__(self, train_clips: Sequence["MotionClip"], val_clips: Sequence["MotionClip"], space: ExpressionSpace,
                 arch: "A2MArch", config: TrainConfig = TrainConfig(), device: str = "cpu", model=None):
        import torch

        from methods.nerf_head.audio2motion.model import PitchContourVAEModel

        if not train_clips:
            raise ValueError("audio2motion training needs at least one training clip")
        front = {c.front_end for c in [*train_clips, *val_clips]}
        if len(front) != 1:
            raise ValueError(f"clips mix audio front ends {sorted(front)}; one model reads one kind of feature")
        if arch.audio_dim != train_clips[0].audio.shape[1] or arch.motion_dim != space.dim:
            raise ValueError(f"arch (audio {arch.audio_dim}, motion {arch.motion_dim}) does not match the data "
                             f"(audio {train_clips[0].audio.shape[1]}, motion {space.dim})")
        if config.window % arch.stride:
            raise ValueError(f"window {config.window} must be a multiple of the latent stride {arch.stride}")
        self.train_clips, self.val_clips = list(train_clips), list(val_clips)
        self.front_end = train_clips[0].front_end
        self.space, self.config, self.device = space, config, device
        torch.manual_seed(config.seed)  # initial weights from the seed (the loop's randomness is per step)
        self.model = (model or PitchContourVAEModel(arch)).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate(0, config), betas=config.betas)
        self._basis = torch.from_numpy(np.ascontiguousarray(space.basis)).to(device)
        self._weights = torch.from_numpy(landmark_weights(space.num_points)).to(device)

    # -- protocol
    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def losses(self, batch: Batch, step: int, noise_seed: int) -> dict[str, "torch.Tensor"]:
        import torch

        b = self._to_device(batch)
        gen = torch.Generator().manual_seed(noise_seed)
        t_lat = b.exp.shape[1] // self.model.arch.stride
        noise = torch.randn((b.exp.shape[0], self.model.arch.latent, t_lat), generator=gen).to(self.device)
        pred, kl = self.model.forward_train(b.audio, b.f0, b.exp, b.mask, blink=b.blink, mouth_amp=b.mouth_amp,
                                            noise=noise)
        pred = pred.float()
        return {"mse_exp": mse_loss(pred, b.exp, b.mask),
                "mse_lm3d": landmark_loss(pred, b.exp, b.mask, self._basis, self._weights),
                "lap_exp": lap_loss(pred, b.mask), "l2_reg_exp": l2_reg_loss(pred, b.mask), "kl": kl.float()}

    def total(self, parts: dict[str, "torch.Tensor"], kl_w: float):
        c = self.config
        return (c.lambda_mse_exp * parts["mse_exp"] + c.lambda_mse_lm3d * parts["mse_lm3d"]
                + c.lambda_lap_exp * parts["lap_exp"] + c.lambda_l2_reg_exp * parts["l2_reg_exp"] + kl_w * parts["kl"])

    def step(self, step: int, autocast=None) -> dict[str, float]:
        import torch

        cfg = self.config
        lr = learning_rate(step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([cfg.seed, step])
        batch = collate(self.train_clips, sample_windows(self.train_clips, cfg.batch, cfg.window, rng),
                        self.model.arch.stride)
        self.model.train()
        kl_w = kl_weight(step, cfg)
        with _enter(autocast):
            parts = self.losses(batch, step, noise_seed=int(rng.integers(2 ** 62)))
        loss = self.total(parts, kl_w)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        self.optimizer.step()
        out = {k: float(v.detach()) for k, v in parts.items()}
        out.update(loss=float(loss.detach()), lr=lr, kl_weight=kl_w)
        return out

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out losses on the whole val clips (fixed noise; KL at its full weight, so the number is
        comparable between steps), and `val_infer_mse_exp`: the expression error of the inference path
        (prior at temperature 0, no ground truth in the loop)."""
        import torch

        if not self.val_clips:
            return {}
        windows = whole_clip_windows(self.val_clips, self.model.arch.stride)
        if not windows:
            return {}
        batch = self._to_device(collate(self.val_clips, windows, self.model.arch.stride))
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                parts = self.losses(batch, step, noise_seed=self.config.seed)
                total = self.total(parts, self.config.lambda_kl)
                pred = self.model.infer(batch.audio, batch.f0, temperature=0.0, mouth_amp=batch.mouth_amp,
                                        blink=None).float()
                infer_mse = mse_loss(pred, batch.exp, batch.mask)
        finally:
            self.model.train(was)
        out = {f"val_{k}": float(v) for k, v in parts.items()}
        out.update(val_loss=float(total), val_infer_mse_exp=float(infer_mse))
        return out

    def _to_device(self, b: Batch) -> Batch:
        return Batch(*(getattr(b, f).to(self.device) for f in ("audio", "f0", "exp", "mask", "blink", "mouth_amp")))
