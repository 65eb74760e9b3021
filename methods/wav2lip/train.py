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
come from the budget (`Schedule`). Both stages are tasks of the suite's one training loop
(bench/trainer.py): it checkpoints the complete state (networks, optimisers, scalers, syncnet_wt,
curves) every interval, every few wall minutes, on Ctrl-C / SIGTERM and at the end, resumes from it,
and continues a finished stage when asked for more steps. When a stage stops, its final state is
exported as official checkpoints (`checkpoint_step{:09d}.pth`, `disc_` for the discriminator; the
newest `keep` are kept), which the method and the official scripts load. Batches are drawn from
(seed, stage, step), so a run continued from step N equals a straight run.

Data-parallel (torchrun, `dist` = a bench.distributed.DistInfo with W > 1; docs/wav2lip.md,
"Data-parallel training"): `batch_size` stays the effective batch; every rank draws the same batch
from (seed, stage, step) and takes its own slice of batch_size / W, gradients are averaged over the
ranks (all_reduce sum / W) before each optimiser step and BatchNorm running statistics after it, so
every rank holds the same state; evaluations split their batches over the ranks and sum. Rank 0
runs bench.trainer and alone writes the trainer checkpoint, curves and official exports; the other
ranks follow it (bench.distributed.follow) and meet it at a barrier when the stage ends.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from methods.wav2lip.checkpoint import checkpoint_name, load_into, read_checkpoint, save_checkpoint
from methods.wav2lip.data import ClipData, batch, expert_sample, generator_sample

if TYPE_CHECKING:
    import torch

    from bench.distributed import DistInfo
    from bench.precision import Precision as PrecisionRule
    from bench.progress import Progress
    from bench.trainer import TrainResult, TrainSettings

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
    checkpoint_seconds: float | None = 180.0   # also checkpoint after this much wall time (None: off)


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
    """What a stage left behind: the final checkpoint (official format), its step, curves and the
    last evaluation."""

    checkpoint: Path | None
    step: int
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "steps"          # "steps", "deadline", or "done-before" (nothing left to do)
    syncnet_wt: float = 0.0
    resumed_from: int = 0
    precision: str = "fp32"


def _precision(device: str, precision: "PrecisionRule | str") -> "PrecisionRule":
    from bench.trainer import resolve_precision

    return resolve_precision(precision, device)


def _step(loss: "torch.Tensor", optimizer, scaler, sync: Callable[[], None] | None = None) -> None:
    """backward, `sync` (data-parallel: average the gradients over the ranks), optimizer step."""
    if scaler is None:
        loss.backward()
        if sync is not None:
            sync()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if sync is not None:
            sync()   # scaled gradients: every rank has the same scale, and an inf anywhere is an inf everywhere
        scaler.step(optimizer)
        scaler.update()


def _parallel(dist: "DistInfo | None") -> bool:
    return dist is not None and dist.world_size > 1


# BatchNorm in training mode needs more than one value per channel; both networks end at 1 x 1
MIN_RANK_BATCH = 2


def _draw(sample_fn, clips: Sequence[ClipData], rng: np.random.Generator, size: int,
          dist: "DistInfo | None") -> tuple[np.ndarray, ...]:
    """The batch of `size` a single process draws from `rng`, or on rank r of W its slice
    [r * size / W, (r + 1) * size / W) (drawn up to the slice's end: the samples follow one another)."""
    if not _parallel(dist):
        return batch(sample_fn, clips, rng, size)
    from bench.distributed import per_rank_batch

    share = per_rank_batch(size, dist, MIN_RANK_BATCH)
    arrays = batch(sample_fn, clips, rng, share * (dist.rank + 1))  # type: ignore[union-attr]
    return tuple(a[share * dist.rank:] for a in arrays)  # type: ignore[union-attr]


def _sync_grads(model, dist: "DistInfo | None") -> Callable[[], None] | None:
    if not _parallel(dist):
        return None
    from bench.distributed import average_gradients

    return lambda: average_gradients(model.parameters(), dist)


def _after_step(modules, values: dict[str, float], dist: "DistInfo | None") -> dict[str, float]:
    """Data-parallel: BatchNorm running statistics and the logged scalars averaged over the ranks."""
    if not _parallel(dist):
        return values
    from bench.distributed import average_buffers, mean_scalars

    for m in modules:
        if m is not None:
            average_buffers(m, dist)
    return mean_scalars(values, dist)


def _rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


def _tensors(arrays: Sequence[np.ndarray], device: str) -> list["torch.Tensor"]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def _epoch(step: int, n_clips: int, batch_size: int) -> int:
    """The original counts epochs as passes over its loader of one item per video."""
    return step // max(1, math.ceil(n_clips / batch_size))


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    """`build()` under torch.manual_seed(seed), without changing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _batches(n: int, progress: "Progress | None", label: str, dist: "DistInfo | None" = None):
    """Evaluation batch indices (at least one); data-parallel: rank r takes those = r mod W."""
    rounds: Sequence[int] = range(max(1, n))
    if _parallel(dist):
        rounds = [b for b in rounds if b % dist.world_size == dist.rank]  # type: ignore[union-attr]
    return progress.track(rounds, label, total=len(rounds)) if progress is not None else rounds


def _trainer_settings(settings: StageSettings, label: str, eval_first: bool = False) -> "TrainSettings":
    from bench.trainer import TrainSettings

    return TrainSettings(steps=settings.steps, checkpoint_every=settings.checkpoint_interval,
                         checkpoint_seconds=settings.checkpoint_seconds, eval_every=settings.eval_interval,
                         eval_first=eval_first, log_every=settings.log_every, label=label)


def _export(folder: Path, step: int, n_clips: int, settings: StageSettings, parts) -> Path:
    """The official-format files of the final state (`checkpoint_step{step:09d}.pth`, `disc_` for the
    discriminator), which official scripts and the method load; older exports beyond `keep` go."""
    path = folder / checkpoint_name(step)
    if not all((folder / checkpoint_name(step, prefix)).is_file() for prefix, _, _ in parts):
        for prefix, model, opt in parts:
            save_checkpoint(folder, model, opt, step, _epoch(step, n_clips, settings.batch_size), prefix)
    _prune(folder, settings.keep, [prefix for prefix, _, _ in parts])
    return path


def _prune(folder: Path, keep: int, prefixes: Sequence[str]) -> None:
    """Delete all but the newest `keep` exported checkpoints (keep <= 0: keep all)."""
    steps = sorted({int(p.name[-13:-4]) for p in folder.glob("checkpoint_step*.pth")})
    for s in steps[:-keep] if keep > 0 else []:
        for prefix in prefixes:
            (folder / checkpoint_name(s, prefix)).unlink(missing_ok=True)


def _result(out: "TrainResult", checkpoint: Path, syncnet_wt: float = 0.0) -> StageResult:
    return StageResult(checkpoint, out.steps_done, out.seconds, out.curves["train"], out.curves["eval"],
                       out.stopped, syncnet_wt, out.resumed_from, out.precision.name)


def run_stage(task: "ExpertTask | GeneratorTask", folder: Path, label: str, eval_first: bool = False,
              deadline: float | None = None, progress: "Progress | None" = None) -> StageResult:
    """Train `task` in `folder` with bench.trainer and export its final state in the official format.

    Data-parallel (task.dist with W > 1): rank 0 trains (its trainer decides the steps, deadline and
    interruptions and alone writes files), the other ranks follow it, and all meet at a barrier once
    rank 0 has exported, so every rank returns with the files on disk. A follower's result has the
    step, stop reason and checkpoint; rank 0's also has the curves and timings."""
    from bench.trainer import train as run

    settings, dist = task.settings, task.dist
    trainer_settings = _trainer_settings(settings, label, eval_first)
    syncnet_wt = lambda: float(getattr(task, "syncnet_wt", 0.0))  # noqa: E731 - read after training
    if not _parallel(dist):
        out = run(task, folder, trainer_settings, device=task.device, precision=task.precision, deadline=deadline,
                  progress=progress)
        return _result(out, _export(folder, out.steps_done, len(task.train_clips), settings, task.parts()),
                       syncnet_wt())
    from bench.distributed import barrier, follow, lead
    from bench.trainer import Autocast

    if dist.leader:  # type: ignore[union-attr]
        out = lead(task, dist, lambda t: run(t, folder, trainer_settings, device=task.device,  # type: ignore[arg-type]
                                             precision=task.precision, deadline=deadline, progress=progress))
        path = _export(folder, out.steps_done, len(task.train_clips), settings, task.parts())
        barrier(dist)  # type: ignore[arg-type]
        return _result(out, path, syncnet_wt())
    done = follow(task, dist, folder, Autocast(task.precision, task.device))  # type: ignore[arg-type]
    barrier(dist)  # type: ignore[arg-type]
    return StageResult(folder / checkpoint_name(done.steps_done), done.steps_done, done.seconds, stopped=done.stopped,
                       syncnet_wt=syncnet_wt(), resumed_from=done.resumed_from, precision=task.precision.name)


# ----------------------------------------------------------------------------------------- stage 1


def evaluate_expert(model, clips: Sequence[ClipData], settings: StageSettings, device: str,
                    precision: "PrecisionRule | str", seed: int, progress: "Progress | None" = None,
                    dist: "DistInfo | None" = None) -> float:
    """Mean BCE over `eval_batches` batches in eval mode (the same batches every time: seeded).
    Data-parallel: each rank evaluates whole batches (b = rank mod W), the sums are added up."""
    import torch

    from methods.wav2lip.models import cosine_bce

    prec = _precision(device, precision)
    model.eval()
    losses = []
    with torch.no_grad():
        for b in _batches(settings.eval_batches, progress, "wav2lip: evaluate expert", dist):
            x, mel, y = _tensors(batch(expert_sample, clips, _rng(seed, 11, b), settings.batch_size), device)
            with prec.autocast(device):
                a, v = model(mel, x)
            losses.append(float(cosine_bce(a, v, y)))
    if _parallel(dist):
        from bench.distributed import all_sum

        total, count = all_sum([sum(losses), len(losses)], dist)
        return total / count
    return float(np.mean(losses))


class ExpertTask:
    """Stage 1 as a bench.trainer task: SyncNet_color, Adam, BCE on the cosine similarity. Batches
    come from (seed, 1, step), so a continued run draws what a straight one would."""

    def __init__(self, train: Sequence[ClipData], held_out: Sequence[ClipData], settings: StageSettings,
                 device: str, precision: "PrecisionRule", seed: int, progress: "Progress | None" = None,
                 dist: "DistInfo | None" = None):
        import torch

        from bench.trainer import grad_scaler
        from methods.wav2lip.models import SyncNet_color

        self.train_clips, self.held_out, self.settings = train, held_out, settings
        self.device, self.precision, self.seed, self.progress, self.dist = device, precision, seed, progress, dist
        if _parallel(dist):
            from bench.distributed import per_rank_batch

            per_rank_batch(settings.batch_size, dist, MIN_RANK_BATCH)  # refuse a bad split before any work
        self.model = _seeded(seed, SyncNet_color).to(device)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=settings.lr,
                                    betas=settings.betas)
        self.scaler = grad_scaler(precision, device)

    def parts(self):
        return [("", self.model, self.opt)]

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def begin(self, step: int) -> None:
        """Data-parallel: rank 0's weights on every rank (they start equal already: same seed or checkpoint)."""
        if _parallel(self.dist):
            from bench.distributed import broadcast_module

            broadcast_module(self.model, self.dist)

    def step(self, step: int, autocast) -> dict[str, float]:
        from methods.wav2lip.models import cosine_bce

        self.model.train()
        x, mel, y = _tensors(_draw(expert_sample, self.train_clips, _rng(self.seed, 1, step),
                                   self.settings.batch_size, self.dist), self.device)
        self.opt.zero_grad()
        with autocast:
            a, v = self.model(mel, x)
        loss = cosine_bce(a, v, y)
        _step(loss, self.opt, self.scaler, _sync_grads(self.model, self.dist))
        return _after_step([self.model], {"loss": loss.item()}, self.dist)

    def evaluate(self, step: int) -> dict[str, float]:
        return {"eval_loss": evaluate_expert(self.model, self.held_out, self.settings, self.device, self.precision,
                                             self.seed, self.progress, self.dist)}


def train_expert(train: Sequence[ClipData], held_out: Sequence[ClipData], settings: StageSettings,
                 folder: Path, device: str = "cpu", precision: "PrecisionRule | str" = "fp32", seed: int = 0,
                 deadline: float | None = None, progress: "Progress | None" = None,
                 dist: "DistInfo | None" = None) -> StageResult:
    """Train (or continue) SyncNet_color in `folder` with bench.trainer until `settings.steps` or the
    deadline; the final state is exported as an official checkpoint. `precision`: a bench.precision
    `Precision` or a request ("auto", "fp32", "bf16", "amp") resolved on `device`. `dist`: this
    process's place under torchrun (None or W = 1: one process)."""
    prec = _precision(device, precision)
    task = ExpertTask(train, held_out, settings, device, prec, seed, progress, dist)
    return run_stage(task, folder, "wav2lip: train expert (stage 1)", deadline=deadline, progress=progress)


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
                       device: str, precision: "PrecisionRule | str", seed: int, syncnet_wt: float,
                       progress: "Progress | None" = None, dist: "DistInfo | None" = None) -> dict[str, float]:
    """Mean losses over `eval_batches` seeded batches, models in eval mode (expert as configured).
    Data-parallel: each rank evaluates whole batches (b = rank mod W), the sums are added up."""
    import torch
    import torch.nn.functional as F

    from methods.wav2lip.models import bce

    prec = _precision(device, precision)
    model.eval()
    if disc is not None:
        disc.eval()
    rows: dict[str, list[float]] = {}
    with torch.no_grad():
        for b in _batches(settings.eval_batches, progress, "wav2lip: evaluate generator", dist):
            x, indiv, mel, gt = _tensors(batch(generator_sample, clips, _rng(seed, 12, b), settings.batch_size), device)
            with prec.autocast(device):
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
    if _parallel(dist):
        from bench.distributed import all_sum

        # the names are fixed here, since a rank may hold no batch (eval_batches < W)
        keys = ["eval_sync", "eval_l1", "eval_loss"] + (
            ["eval_disc_real", "eval_disc_fake", "eval_perceptual"] if disc is not None else [])
        *sums, count = all_sum([sum(rows.get(k, [])) for k in keys] + [len(rows.get("eval_loss", []))], dist)
        return {k: s / count for k, s in zip(keys, sums)}
    return {k: float(np.mean(v)) for k, v in rows.items()}


class GeneratorTask:
    """Stage 2 as a bench.trainer task: the generator against the frozen expert, plus the quality
    discriminator when `settings.gan`. `syncnet_wt` is part of the state; the official switch is
    decided on the scheduled evaluations (every eval_interval steps, and after step 1 when
    eval_at_first_step), never on the report-only one at the end of a run, so a run stopped early
    and continued trains as a straight one."""

    def __init__(self, train: Sequence[ClipData], held_out: Sequence[ClipData], expert_path: Path,
                 settings: GeneratorSettings, device: str, precision: "PrecisionRule", seed: int,
                 progress: "Progress | None" = None,
                 on_eval: Callable[[dict[str, float]], None] | None = None, dist: "DistInfo | None" = None):
        import torch

        from bench.trainer import grad_scaler
        from methods.wav2lip.models import Wav2Lip, Wav2Lip_disc_qual

        self.train_clips, self.held_out, self.expert_path, self.settings = train, held_out, expert_path, settings
        self.device, self.precision, self.seed, self.progress, self.on_eval = device, precision, seed, progress, on_eval
        self.dist = dist
        if _parallel(dist):
            from bench.distributed import per_rank_batch

            per_rank_batch(settings.batch_size, dist, MIN_RANK_BATCH)  # refuse a bad split before any work
        # The discriminator is drawn right after the generator from the same seed (as before the move).
        self.model, disc = _seeded(seed + 1, lambda: (Wav2Lip(), Wav2Lip_disc_qual() if settings.gan else None))
        self.model.to(device)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=settings.lr,
                                    betas=settings.betas)
        self.disc = self.disc_opt = None
        if disc is not None:
            self.disc = disc.to(device)
            self.disc_opt = torch.optim.Adam([p for p in self.disc.parameters() if p.requires_grad],
                                             lr=settings.disc_lr, betas=settings.disc_betas)
        self.g_scaler, self.d_scaler = grad_scaler(precision, device), grad_scaler(precision, device)
        self.syncnet_wt = 0.0
        self.expert = None

    def parts(self):
        return [("", self.model, self.opt)] + ([("disc_", self.disc, self.disc_opt)] if self.disc is not None else [])

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                               "syncnet_wt": float(self.syncnet_wt)}
        if self.disc is not None:
            out.update(disc=self.disc.state_dict(), disc_optimizer=self.disc_opt.state_dict())
        for name in ("g_scaler", "d_scaler"):
            scaler = getattr(self, name)
            out[name] = scaler.state_dict() if scaler is not None else {}
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.disc is not None:
            if "disc" not in state:
                raise ValueError("wav2lip: the checkpoint has no quality discriminator (trained with gan=false)")
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_optimizer"])
        for name in ("g_scaler", "d_scaler"):
            scaler = getattr(self, name)
            if scaler is not None and state.get(name):
                scaler.load_state_dict(state[name])
        self.syncnet_wt = float(state.get("syncnet_wt", 0.0))

    def begin(self, step: int) -> None:
        """The frozen expert is loaded only when there is training to do."""
        self.expert = load_expert(self.expert_path, self.device)
        self.expert.train(self.settings.expert_bn == "train")
        if _parallel(self.dist):  # rank 0's weights everywhere (equal already: same seed or checkpoint)
            from bench.distributed import broadcast_module

            for m in (self.model, self.disc):
                if m is not None:
                    broadcast_module(m, self.dist)

    def step(self, step: int, autocast) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        from methods.wav2lip.models import bce

        model, disc, settings, device = self.model, self.disc, self.settings, self.device
        model.train()
        if disc is not None:
            disc.train()
        x, indiv, mel, gt = _tensors(_draw(generator_sample, self.train_clips, _rng(self.seed, 2, step),
                                           settings.batch_size, self.dist), device)
        self.opt.zero_grad()
        if self.disc_opt is not None:
            self.disc_opt.zero_grad()
        wt = self.syncnet_wt
        with autocast:
            g = model(indiv, x)
            s = sync_loss(self.expert, mel, g) if wt > 0 else torch.zeros((), device=device)
            perc = (disc.perceptual_loss(g) if disc is not None and settings.disc_wt > 0
                    else torch.zeros((), device=device))
        l1 = F.l1_loss(g.float(), gt)
        loss = wt * s + settings.disc_wt * perc + (1.0 - wt - settings.disc_wt) * l1
        _step(loss, self.opt, self.g_scaler, _sync_grads(model, self.dist))
        vals = {"loss": loss.item(), "l1": l1.item(), "sync": s.item(), "syncnet_wt": wt}
        if disc is not None:
            self.disc_opt.zero_grad()
            with autocast:
                real = bce(disc(gt), torch.ones(gt.size(0) * gt.size(2), 1, device=device))
                fake = bce(disc(g.detach()), torch.zeros(g.size(0) * g.size(2), 1, device=device))
            sync = _sync_grads(disc, self.dist)
            if self.d_scaler is None:
                real.backward()
                fake.backward()
                if sync is not None:
                    sync()
                self.disc_opt.step()
            else:
                self.d_scaler.scale(real).backward()
                self.d_scaler.scale(fake).backward()
                if sync is not None:
                    sync()
                self.d_scaler.step(self.disc_opt)
                self.d_scaler.update()
            vals.update(perceptual=perc.item(), disc_real=real.item(), disc_fake=fake.item())
        return _after_step([model, disc], vals, self.dist)

    def scheduled(self, step: int) -> bool:
        s = self.settings
        return step % s.eval_interval == 0 or (s.eval_at_first_step and step == 1)

    def evaluate(self, step: int) -> dict[str, float]:
        ev = evaluate_generator(self.model, self.disc, self.expert, self.held_out, self.settings, self.device,
                                self.precision, self.seed, self.syncnet_wt, self.progress, self.dist)
        if self.scheduled(step) and ev["eval_sync"] < SYNC_SWITCH_THRESHOLD:
            self.syncnet_wt = self.settings.sync_wt_after_switch
        if self.on_eval:
            self.on_eval(ev)
        return {**ev, "syncnet_wt": self.syncnet_wt}


def train_generator(train: Sequence[ClipData], held_out: Sequence[ClipData], expert_path: Path,
                    settings: GeneratorSettings, folder: Path, device: str = "cpu",
                    precision: "PrecisionRule | str" = "fp32", seed: int = 0, deadline: float | None = None,
                    progress: "Progress | None" = None,
                    on_eval: Callable[[dict[str, float]], None] | None = None,
                    dist: "DistInfo | None" = None) -> StageResult:
    """Train (or continue) the generator (and the quality discriminator when settings.gan) in `folder`
    with bench.trainer; the final state is exported as official checkpoints (generator + `disc_`).
    `dist`: this process's place under torchrun (None or W = 1: one process)."""
    prec = _precision(device, precision)
    task = GeneratorTask(train, held_out, expert_path, settings, device, prec, seed, progress, on_eval, dist)
    return run_stage(task, folder, "wav2lip: train generator (stage 2)", eval_first=settings.eval_at_first_step,
                     deadline=deadline, progress=progress)


def settings_dict(settings: StageSettings) -> dict[str, Any]:
    return asdict(settings)
