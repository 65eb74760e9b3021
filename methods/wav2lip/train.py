"""The two Wav2Lip training stages, resumable, with the official losses, optimisers and switches.

Stage 1 (color_syncnet_train.py): the expert `SyncNet_color`, BCE on the cosine similarity of its
audio and face embeddings; Adam(lr 1e-4, default betas (0.9, 0.999)), batch 64.

Stage 2 (wav2lip_train.py / hq_wav2lip_train.py): the generator with the frozen expert.
- loss = syncnet_wt * sync + disc_wt * perceptual + (1 - syncnet_wt - disc_wt) * L1 (disc_wt = 0
  without the quality discriminator); syncnet_wt starts at 0 and is set (never reset) to 0.01
  (plain) / 0.03 (hq) the first time the evaluation sync loss is below 0.75;
- generator Adam(lr 1e-4): betas (0.9, 0.999) in the plain script, (0.5, 0.999) in hq; the quality
  discriminator Adam(lr 1e-4, betas (0.5, 0.999)), trained after each generator step on real (1)
  and detached fake (0) frames; batch 16; the plain script also evaluates after its first step;
- the expert is never switched to eval mode in the original stage-2 scripts, so its BatchNorm layers
  use batch statistics (`expert_bn="train"`, the faithful default).

Suite differences (documented in docs/wav2lip.md): the step counts, intervals and evaluation sizes
come from the budget (`Schedule`); checkpoints are written at each interval and when training stops
(not at step 1), and only the newest `keep` are kept; a JSON sidecar next to each checkpoint holds
what the official globals held (syncnet_wt, loss curves), so a rerun resumes exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from methods.wav2lip.checkpoint import (checkpoint_name, latest_checkpoint, load_into, read_checkpoint,
                                        save_checkpoint)
from methods.wav2lip.data import ClipData, batch, expert_sample, generator_sample

if TYPE_CHECKING:
    import torch

    from bench.progress import Progress

Precision = Literal["fp32", "bf16", "amp"]
SYNC_SWITCH_THRESHOLD = 0.75


@dataclass(frozen=True)
class StageSettings:
    """How one stage trains. Defaults are the official hparams for the expert (stage 1)."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_interval: int = 10000
    eval_interval: int = 10000
    eval_batches: int = 1400
    log_every: int = 1
    keep: int = 2


@dataclass(frozen=True)
class GeneratorSettings(StageSettings):
    """Stage 2. gan=True is hq_wav2lip_train.py (quality discriminator, syncnet_wt 0.03, betas 0.5)."""

    gan: bool = True
    disc_wt: float = 0.07
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.5, 0.999)
    sync_wt_after_switch: float = 0.03
    eval_at_first_step: bool = False
    expert_bn: Literal["train", "eval"] = "train"


def official_generator_settings(steps: int, gan: bool, **changes: Any) -> GeneratorSettings:
    """hparams.py + the chosen script: batch 16, lr 1e-4, intervals 3000, eval 300 (hq) / 700 batches."""
    base = dict(steps=steps, batch_size=16, lr=1e-4, betas=(0.5, 0.999) if gan else (0.9, 0.999),
                checkpoint_interval=3000, eval_interval=3000, eval_batches=300 if gan else 700,
                gan=gan, disc_wt=0.07 if gan else 0.0, sync_wt_after_switch=0.03 if gan else 0.01,
                eval_at_first_step=not gan)
    base.update(changes)
    settings = GeneratorSettings(**base)
    if settings.expert_bn == "train" and settings.batch_size < 2:
        raise ValueError("wav2lip: the expert runs with BatchNorm in training mode (as in the original), which "
                         "needs a generator batch of at least 2; raise the batch size or set expert_bn=eval")
    return settings


@dataclass
class StageResult:
    """What a stage left behind: the final checkpoint, its step, curves and the last evaluation."""

    checkpoint: Path | None
    step: int
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "steps"          # "steps", "deadline", or "done-before" (nothing left to do)
    syncnet_wt: float = 0.0


def autocast(device: str, precision: Precision):
    from methods.wav2lip.inference import autocast_context

    return autocast_context(device, precision)


def _scaler(device: str, precision: Precision):
    """A GradScaler for fp16 AMP on CUDA, else None (bf16 needs none)."""
    import torch

    if precision == "amp" and str(device).startswith("cuda"):
        return torch.amp.GradScaler("cuda")
    return None


def _step(loss: "torch.Tensor", optimizer, scaler) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def _rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


def _tensors(arrays: Sequence[np.ndarray], device: str) -> list["torch.Tensor"]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def _state_path(folder: Path, step: int) -> Path:
    return folder / f"train_state_step{step:09d}.json"


def _write_state(folder: Path, step: int, state: dict[str, Any]) -> None:
    from bench.cache import atomic_write_text

    atomic_write_text(_state_path(folder, step), json.dumps(state))


def _read_state(folder: Path, step: int) -> dict[str, Any]:
    p = _state_path(folder, step)
    return json.loads(p.read_text()) if p.is_file() else {}


def _prune(folder: Path, keep: int, prefixes: Sequence[str]) -> None:
    """Delete all but the newest `keep` checkpoints (and their sidecars)."""
    steps = sorted({int(p.name[-13:-4]) for p in folder.glob("checkpoint_step*.pth")})
    for s in steps[:-keep] if keep > 0 else []:
        for prefix in prefixes:
            (folder / checkpoint_name(s, prefix)).unlink(missing_ok=True)
        _state_path(folder, s).unlink(missing_ok=True)


def _epoch(step: int, n_clips: int, batch_size: int) -> int:
    """The original counts epochs as passes over its loader of one item per video."""
    return step // max(1, math.ceil(n_clips / batch_size))


class _Logger:
    """Averages losses over `every` steps into curve rows {"step", "loss", ...}."""

    def __init__(self, every: int, curve: list[dict[str, float]]):
        self.every, self.curve = max(1, every), curve
        self._sum: dict[str, float] = {}
        self._n = 0

    def add(self, step: int, values: dict[str, float], force: bool = False) -> None:
        for k, v in values.items():
            self._sum[k] = self._sum.get(k, 0.0) + float(v)
        self._n += 1
        if self._n >= self.every or force:
            self.flush(step)

    def flush(self, step: int) -> None:
        if self._n:
            self.curve.append({"step": float(step), **{k: v / self._n for k, v in self._sum.items()}})
            self._sum, self._n = {}, 0


# ----------------------------------------------------------------------------------------- stage 1


def _batches(n: int, progress: "Progress | None", label: str):
    rounds = range(max(1, n))
    return progress.track(rounds, label, total=len(rounds)) if progress is not None else rounds


def evaluate_expert(model, clips: Sequence[ClipData], settings: StageSettings, device: str,
                    precision: Precision, seed: int, progress: "Progress | None" = None) -> float:
    """Mean BCE over `eval_batches` batches in eval mode (the same batches every time: seeded)."""
    import torch

    from methods.wav2lip.models import cosine_bce

    model.eval()
    losses = []
    with torch.no_grad():
        for b in _batches(settings.eval_batches, progress, "wav2lip: evaluate expert"):
            x, mel, y = _tensors(batch(expert_sample, clips, _rng(seed, 11, b), settings.batch_size), device)
            with autocast(device, precision):
                a, v = model(mel, x)
            losses.append(float(cosine_bce(a, v, y)))
    return float(np.mean(losses))


def train_expert(train: Sequence[ClipData], held_out: Sequence[ClipData], settings: StageSettings,
                 folder: Path, device: str = "cpu", precision: Precision = "fp32", seed: int = 0,
                 deadline: float | None = None, progress: "Progress | None" = None) -> StageResult:
    """Train (or resume) SyncNet_color in `folder` until `settings.steps` or the deadline."""
    import torch

    from methods.wav2lip.models import SyncNet_color, cosine_bce

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = SyncNet_color().to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr, betas=settings.betas)
    step, state = _resume(folder, model, opt, device)
    res = StageResult(latest_checkpoint(folder), step, float(state.get("seconds", 0.0)),
                      state.get("curve", []), state.get("eval_curve", []))
    if step >= settings.steps:
        res.stopped = "done-before"
        return res
    scaler = _scaler(device, precision)
    log = _Logger(settings.log_every, res.curve)
    t0 = time.monotonic()
    task = progress.task("wav2lip: train expert (stage 1)", total=settings.steps) if progress else None
    if task:
        task.advance(step)
    try:
        while step < settings.steps:
            if deadline is not None and time.monotonic() >= deadline:
                res.stopped = "deadline"
                break
            model.train()
            x, mel, y = _tensors(batch(expert_sample, train, _rng(seed, 1, step), settings.batch_size), device)
            opt.zero_grad()
            with autocast(device, precision):
                a, v = model(mel, x)
            loss = cosine_bce(a, v, y)
            _step(loss, opt, scaler)
            step += 1
            log.add(step, {"loss": loss.item()}, force=step == settings.steps)
            if task:
                task.advance(loss=loss.item())
            last = step >= settings.steps or (deadline is not None and time.monotonic() >= deadline)
            if step % settings.eval_interval == 0 or last:
                ev = evaluate_expert(model, held_out, settings, device, precision, seed, progress)
                res.eval_curve.append({"step": float(step), "eval_loss": ev})
            if step % settings.checkpoint_interval == 0 or last:
                log.flush(step)
                res.seconds += time.monotonic() - t0
                t0 = time.monotonic()
                res.checkpoint = _save(folder, step, _epoch(step, len(train), settings.batch_size),
                                       [("", model, opt)], res, settings.keep)
    finally:
        if task:
            task.__exit__(None, None, None)
    return _finish(folder, step, t0, len(train), settings, [("", model, opt)], res, log)


def _resume(folder: Path, model, opt, device: str, prefix: str = "") -> tuple[int, dict[str, Any]]:
    """Load the newest checkpoint in `folder` (model + optimizer); returns (step, sidecar state)."""
    path = latest_checkpoint(folder, prefix)
    if path is None:
        return 0, {}
    ckpt = read_checkpoint(path)
    load_into(model, ckpt)
    if opt is not None and ckpt.optimizer is not None:
        opt.load_state_dict(ckpt.optimizer)
        _optimizer_to(opt, device)
    return ckpt.global_step, _read_state(folder, ckpt.global_step)


def _optimizer_to(opt, device: str) -> None:
    import torch

    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)


def _finish(folder: Path, step: int, t0: float, n_clips: int, settings: StageSettings, parts,
            res: StageResult, log) -> StageResult:
    """End of a training stage (steps done, deadline hit or interrupted): the last step is always
    checkpointed, so a rerun resumes exactly where this one stopped."""
    log.flush(step)
    res.step = step
    if res.checkpoint is None or not res.checkpoint.name.endswith(f"{step:09d}.pth"):
        res.seconds += time.monotonic() - t0
        res.checkpoint = _save(folder, step, _epoch(step, n_clips, settings.batch_size), parts, res, settings.keep)
    return res


def _save(folder: Path, step: int, epoch: int, parts, res: StageResult, keep: int) -> Path:
    first = None
    for prefix, model, opt in parts:
        p = save_checkpoint(folder, model, opt, step, epoch, prefix)
        first = first or p
    _write_state(folder, step, {"seconds": res.seconds, "curve": res.curve, "eval_curve": res.eval_curve,
                                "syncnet_wt": res.syncnet_wt})
    _prune(folder, keep, [prefix for prefix, _, _ in parts])
    return first


def load_expert(path: Path, device: str = "cpu"):
    """A frozen SyncNet_color from an official-format checkpoint (requires_grad off)."""
    from methods.wav2lip.models import SyncNet_color

    model = SyncNet_color()
    load_into(model, read_checkpoint(path))
    for p in model.parameters():
        p.requires_grad = False
    return model.to(device)


# ----------------------------------------------------------------------------------------- stage 2


def sync_loss(expert, mel: "torch.Tensor", generated: "torch.Tensor") -> "torch.Tensor":
    """The expert's loss on generated windows: lower halves of (B, 3, 5, 96, 96) stacked -> (B, 15, 48, 96)."""
    import torch

    from methods.wav2lip.models import cosine_bce

    g = generated[:, :, :, generated.size(3) // 2:]
    g = torch.cat([g[:, :, i] for i in range(g.size(2))], dim=1)
    a, v = expert(mel, g)
    return cosine_bce(a, v, torch.ones(g.size(0), 1, device=g.device))


def evaluate_generator(model, disc, expert, clips: Sequence[ClipData], settings: GeneratorSettings,
                       device: str, precision: Precision, seed: int, syncnet_wt: float,
                       progress: "Progress | None" = None) -> dict[str, float]:
    """Mean losses over `eval_batches` seeded batches, models in eval mode (expert as configured)."""
    import torch
    import torch.nn.functional as F

    from methods.wav2lip.models import bce

    model.eval()
    if disc is not None:
        disc.eval()
    rows: dict[str, list[float]] = {}
    with torch.no_grad():
        for b in _batches(settings.eval_batches, progress, "wav2lip: evaluate generator"):
            x, indiv, mel, gt = _tensors(batch(generator_sample, clips, _rng(seed, 12, b), settings.batch_size), device)
            with autocast(device, precision):
                g = model(indiv, x)
                s = sync_loss(expert, mel, g)
                l1 = F.l1_loss(g.float(), gt)
                vals = {"eval_sync": float(s), "eval_l1": float(l1)}
                if disc is not None:
                    vals["eval_disc_real"] = float(bce(disc(gt), torch.ones(gt.size(0) * gt.size(2), 1, device=device)))
                    vals["eval_disc_fake"] = float(bce(disc(g), torch.zeros(g.size(0) * g.size(2), 1, device=device)))
                    vals["eval_perceptual"] = float(disc.perceptual_loss(g)) if settings.disc_wt > 0 else 0.0
            perc = vals.get("eval_perceptual", 0.0)
            vals["eval_loss"] = (syncnet_wt * vals["eval_sync"] + settings.disc_wt * perc
                                 + (1.0 - syncnet_wt - settings.disc_wt) * vals["eval_l1"])
            for k, v in vals.items():
                rows.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in rows.items()}


def train_generator(train: Sequence[ClipData], held_out: Sequence[ClipData], expert_path: Path,
                    settings: GeneratorSettings, folder: Path, device: str = "cpu", precision: Precision = "fp32",
                    seed: int = 0, deadline: float | None = None, progress: "Progress | None" = None,
                    on_eval: Callable[[dict[str, float]], None] | None = None) -> StageResult:
    """Train (or resume) the generator (and the quality discriminator when settings.gan) in `folder`."""
    import torch
    import torch.nn.functional as F

    from methods.wav2lip.models import Wav2Lip, Wav2Lip_disc_qual, bce

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + 1)
    model = Wav2Lip().to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr, betas=settings.betas)
    disc = disc_opt = None
    if settings.gan:
        disc = Wav2Lip_disc_qual().to(device)
        disc_opt = torch.optim.Adam([p for p in disc.parameters() if p.requires_grad], lr=settings.disc_lr,
                                    betas=settings.disc_betas)
    step, state = _resume(folder, model, opt, device)
    if disc is not None and step > 0:
        d_step, _ = _resume(folder, disc, disc_opt, device, prefix="disc_")
        if d_step != step:
            raise RuntimeError(f"{folder}: generator checkpoint at step {step} but discriminator at {d_step}")
    res = StageResult(latest_checkpoint(folder), step, float(state.get("seconds", 0.0)),
                      state.get("curve", []), state.get("eval_curve", []), syncnet_wt=float(state.get("syncnet_wt", 0.0)))
    if step >= settings.steps:
        res.stopped = "done-before"
        return res
    expert = load_expert(expert_path, device)
    expert.train(settings.expert_bn == "train")
    g_scaler, d_scaler = _scaler(device, precision), _scaler(device, precision)
    log = _Logger(settings.log_every, res.curve)
    parts = [("", model, opt)] + ([("disc_", disc, disc_opt)] if disc is not None else [])
    t0 = time.monotonic()
    task = progress.task("wav2lip: train generator (stage 2)", total=settings.steps) if progress else None
    if task:
        task.advance(step)

    def run_eval() -> None:
        ev = evaluate_generator(model, disc, expert, held_out, settings, device, precision, seed, res.syncnet_wt,
                                progress)
        if ev["eval_sync"] < SYNC_SWITCH_THRESHOLD:
            res.syncnet_wt = settings.sync_wt_after_switch
        res.eval_curve.append({"step": float(step), **ev, "syncnet_wt": res.syncnet_wt})
        if on_eval:
            on_eval(ev)

    try:
        while step < settings.steps:
            if deadline is not None and time.monotonic() >= deadline:
                res.stopped = "deadline"
                break
            model.train()
            if disc is not None:
                disc.train()
            x, indiv, mel, gt = _tensors(batch(generator_sample, train, _rng(seed, 2, step), settings.batch_size), device)
            opt.zero_grad()
            if disc_opt is not None:
                disc_opt.zero_grad()
            wt = res.syncnet_wt
            with autocast(device, precision):
                g = model(indiv, x)
                s = sync_loss(expert, mel, g) if wt > 0 else torch.zeros((), device=device)
                perc = (disc.perceptual_loss(g) if disc is not None and settings.disc_wt > 0
                        else torch.zeros((), device=device))
            l1 = F.l1_loss(g.float(), gt)
            loss = wt * s + settings.disc_wt * perc + (1.0 - wt - settings.disc_wt) * l1
            _step(loss, opt, g_scaler)
            vals = {"loss": loss.item(), "l1": l1.item(), "sync": s.item(), "syncnet_wt": wt}
            if disc is not None:
                disc_opt.zero_grad()
                with autocast(device, precision):
                    real = bce(disc(gt), torch.ones(gt.size(0) * gt.size(2), 1, device=device))
                    fake = bce(disc(g.detach()), torch.zeros(g.size(0) * g.size(2), 1, device=device))
                if d_scaler is None:
                    real.backward()
                    fake.backward()
                    disc_opt.step()
                else:
                    d_scaler.scale(real).backward()
                    d_scaler.scale(fake).backward()
                    d_scaler.step(disc_opt)
                    d_scaler.update()
                vals.update(perceptual=perc.item(), disc_real=real.item(), disc_fake=fake.item())
            step += 1
            log.add(step, vals, force=step == settings.steps)
            if task:
                task.advance(loss=vals["loss"], l1=vals["l1"])
            last = step >= settings.steps or (deadline is not None and time.monotonic() >= deadline)
            if (settings.eval_at_first_step and step == 1) or step % settings.eval_interval == 0 or last:
                run_eval()
            if step % settings.checkpoint_interval == 0 or last:
                log.flush(step)
                res.seconds += time.monotonic() - t0
                t0 = time.monotonic()
                res.checkpoint = _save(folder, step, _epoch(step, len(train), settings.batch_size), parts, res,
                                       settings.keep)
    finally:
        if task:
            task.__exit__(None, None, None)
    return _finish(folder, step, t0, len(train), settings, parts, res, log)


def settings_dict(settings: StageSettings) -> dict[str, Any]:
    return asdict(settings)
