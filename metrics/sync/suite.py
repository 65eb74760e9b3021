"""`sync_suite`: a SyncNet the suite trains itself on the run's training clips (never called LSE).

Used where the published `syncnet_v2.model` is absent. Its numbers are SyncD-suite / SyncC-suite /
AV-offset-suite: the same reductions as LSE-D / LSE-C / AV offset (the same scoring code: vshift
15, zero-padded shifts, mean curve, min / median - min / 15 - argmin), from weights trained on this
run's dataset, so they compare methods within a run, never with papers.

Architecture: syncnet_python's `S` (not Wav2Lip's SyncNet_color). Wav2Lip is trained to satisfy
SyncNet_color, so scoring it with that network trained on the same data would grade the method by
its own training loss; the syncnet_python network is the one LSE uses and reads the same inputs
(face-tracked crops after the official JPEG round trip, int16 MFCC), so the suite scorer differs
from LSE only in its weights and in the part of the crop it looks at. The checkpoint holds a
complete state dict in syncnet_python's layout.

Training (our recipe; syncnet_python ships no training code), shaped by what 2 CPU cores can do:
- input region: the mouth area of the run_pipeline crop (rows 72-184, columns 56-168 of the
  224x224 crop, enlarged back to 224x224). A network trained from scratch on minutes of video
  finds the mouth far sooner when the mouth fills the picture;
- a random-feature trunk: both towers' layers up to their last conv block keep their seeded random
  initialisation, with BatchNorm statistics calibrated on training windows; only the last conv
  block and the FC head of each tower are trained. Trunk features are computed once per training
  window and cached, so a training step costs milliseconds instead of seconds;
- loss: for each video window v, a softmax cross-entropy over the negative distances
  ||lip_v - aud_{v+s} + 1e-6|| for s in [-15, 15] with s = 0 as the class (the multi-way matching
  objective of Chung et al. 2019, "Perfect match"); audio outside the clip is the zero vector, as in
  the scoring's zero padding. This trains exactly the argmin over shifts that the offset and the
  confidence read. Dropout on the cached trunk features and weight decay fight over-fitting on
  small training sets.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence

import numpy as np

from bench.availability import Availability, module_available
from metrics.base import Metric, MetricSpec, Sample, Score
from metrics.sync.metric import score_with, sync_values

if TYPE_CHECKING:
    import torch

    from bench.method import Budget
    from bench.progress import Progress
    from data_recipes.recipe import PreparedClip
    from metrics.sync.model import SyncNetModel

CHECKPOINT = "sync_suite.pt"
TRAIN_FOLDER = "train"               # bench.trainer's folder inside the metric's work folder
PROTOCOL = "tracked"
MOUTH_REGION = (72, 184, 56, 168)   # rows, columns of the 224x224 run_pipeline crop around the mouth
LIP_TRUNK = 18                      # netcnnlip[:18]: everything before the last conv block (frozen)
AUD_TRUNK = 18                      # netcnnaud[:18]: likewise for the audio tower


@dataclass(frozen=True)
class SuiteSyncConfig:
    """Training and scoring options of the suite's sync scorer.

    steps_quick / steps_standard / steps_full: optimiser steps per budget preset;
    frames_quick / frames_standard / frames_full: training frames used per preset (clips are taken
        in a seeded random order until the cap; more data is what improves this scorer);
    batch_windows, blocks: video windows per step, drawn as `blocks` runs of consecutive windows;
    max_shift: audio shifts +-max_shift frames are the candidates of the matching loss (= vshift);
    lr, weight_decay, dropout: AdamW and feature dropout of the head training;
    precision: of the head training, by bench.precision's rule: "auto" is bf16 autocast only where
        the CPU does bf16 natively (AVX-512-BF16 / AMX; about 1.5x faster there), fp32 elsewhere
        (emulated bf16 ran ~35x slower on an AVX2-only CPU); "fp32" / "bf16" force it; scoring is fp32;
    calibration_windows: training windows whose batch statistics calibrate the trunk's BatchNorms;
    checkpoint_every, checkpoint_seconds: steps / wall seconds between checkpoints (bench.trainer;
        also on Ctrl-C and at the end; training resumes from the last one);
    batch_size, emulate_codecs: scoring options, as for `lse`.
    """

    steps_quick: int = 300
    steps_standard: int = 2000
    steps_full: int = 10000
    frames_quick: int = 2000
    frames_standard: int = 20000
    frames_full: int = 60000
    batch_windows: int = 128
    blocks: int = 8
    max_shift: int = 15
    lr: float = 3e-4
    weight_decay: float = 1e-4
    dropout: float = 0.5
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    calibration_windows: int = 128
    checkpoint_every: int = 100
    checkpoint_seconds: float = 180.0
    batch_size: int = 20
    emulate_codecs: bool = True


@dataclass
class ClipFeatures:
    """Cached trunk features of one training clip: lip (W, 256, 6, 6), audio (W, 256, 5, 4), bfloat16."""

    id: str
    lip: "torch.Tensor"
    aud: "torch.Tensor"

    @property
    def windows(self) -> int:
        return int(self.lip.shape[0])


# ------------------------------------------------------------------------------------- data


def mouth_crops(clip: "PreparedClip", emulate_codecs: bool = True) -> np.ndarray:
    """(T, 224, 224, 3) uint8 BGR network inputs of a prepared clip: tracked crop -> JPEG round trip
    -> mouth region, exactly what the scorer reads at scoring time."""
    from data_recipes.faces import FaceTrack
    from metrics.sync import pipeline, tracked

    boxes = FaceTrack.load(clip.stage("faces").folder).boxes
    return pipeline.cut_region(tracked.crops_in_memory(clip.iter_frames(), boxes, emulate_codecs), MOUTH_REGION)


def clip_mfcc(clip: "PreparedClip") -> np.ndarray:
    from metrics.sync import inputs, lse

    return lse.mfcc(inputs.pcm16(clip.audio()))


def _lip_input(crops: np.ndarray, start: int, stop: int) -> "torch.Tensor":
    """Frames [start, stop + 4) as (1, 3, n + 4, 224, 224) float: windows start .. stop - 1."""
    from metrics.sync import lse

    return lse.frames_to_tensor(crops[start:stop + lse.LIP_FRAMES - 1])


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for i in range(0, n, size):
        yield i, min(n, i + size)


def calibrate_trunk(model: "SyncNetModel", data: Sequence[tuple[np.ndarray, np.ndarray]], windows: int,
                    seed: int, chunk: int = 32) -> int:
    """Set the trunk BatchNorms' running statistics to the average batch statistics of up to
    `windows` training windows (cumulative average, momentum None). Returns the windows used."""
    import torch

    from metrics.sync import lse

    pool = [(ci, v) for ci, (crops, _) in enumerate(data)
            for v in range(lse.num_windows(len(crops), len(crops) * lse.SAMPLES_PER_FRAME))]
    rng = np.random.default_rng([seed, 17])
    picked = sorted(rng.choice(len(pool), size=min(windows, len(pool)), replace=False).tolist())
    norms = [m for m in (*model.netcnnlip[:LIP_TRUNK], *model.netcnnaud[:AUD_TRUNK])
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for a, b in _chunks(len(picked), chunk):
            sel = [pool[i] for i in picked[a:b]]
            lips = torch.cat([_lip_input(data[ci][0], v, v + 1) for ci, v in sel])
            model.netcnnlip[:LIP_TRUNK](lips)
            auds = np.concatenate([lse.audio_windows(data[ci][1], [v]) for ci, v in sel])
            model.netcnnaud[:AUD_TRUNK](torch.from_numpy(auds))
    for m in norms:
        m.momentum = 0.1
    model.eval()
    return len(picked)


def trunk_features(model: "SyncNetModel", clip_id: str, crops: np.ndarray, mfcc: np.ndarray,
                   chunk: int = 32) -> ClipFeatures:
    """Eval-mode trunk outputs of every window of a clip (the heads' inputs), stored as bfloat16."""
    import torch

    from metrics.sync import lse

    w = lse.num_windows(len(crops), len(crops) * lse.SAMPLES_PER_FRAME)
    lips, auds = [], []
    model.eval()
    with torch.no_grad():   # not inference_mode: these tensors feed autograd later, as inputs
        for a, b in _chunks(w, chunk):
            lip = model.netcnnlip[:LIP_TRUNK](_lip_input(crops, a, b))      # (1, 256, n, 6, 6)
            lips.append(lip[0].transpose(0, 1).to(torch.bfloat16))
            aud = model.netcnnaud[:AUD_TRUNK](torch.from_numpy(lse.audio_windows(mfcc, range(a, b))))
            auds.append(aud.to(torch.bfloat16))
    return ClipFeatures(clip_id, torch.cat(lips), torch.cat(auds))


# ------------------------------------------------------------------------------------ training


def _heads(model: "SyncNetModel") -> list["torch.nn.Parameter"]:
    return [*model.netcnnlip[LIP_TRUNK:].parameters(), *model.netfclip.parameters(),
            *model.netcnnaud[AUD_TRUNK:].parameters(), *model.netfcaud.parameters()]


def lip_head(model: "SyncNetModel", feats: "torch.Tensor") -> "torch.Tensor":
    """(N, 256, 6, 6) trunk features -> (N, 1024) lip embeddings."""
    return model.netfclip(model.netcnnlip[LIP_TRUNK:](feats[:, :, None]).flatten(1))


def aud_head(model: "SyncNetModel", feats: "torch.Tensor") -> "torch.Tensor":
    """(N, 256, 5, 4) trunk features -> (N, 1024) audio embeddings."""
    return model.netfcaud(model.netcnnaud[AUD_TRUNK:](feats).flatten(1))


def matching_loss(model: "SyncNetModel", clips: Sequence[ClipFeatures], rng: np.random.Generator,
                  config: SuiteSyncConfig, dropout: "torch.nn.Module") -> tuple["torch.Tensor", float]:
    """One batch: `blocks` runs of consecutive windows, each window scored against shifts -K..K.

    All blocks go through each head in one call, so BatchNorm sees the whole batch."""
    import torch

    from metrics.sync import lse

    k, length = config.max_shift, max(1, config.batch_windows // config.blocks)
    sizes = np.array([max(c.windows - length + 1, 0) for c in clips], dtype=np.float64)
    picks = rng.choice(len(clips), size=config.blocks, p=sizes / sizes.sum())
    lip_in, aud_in, cand_rows, inside_rows = [], [], [], []
    shifts = np.arange(-k, k + 1)
    base = 0
    for ci in picks:
        c = clips[int(ci)]
        v0 = int(rng.integers(0, c.windows - length + 1))
        lo, hi = max(0, v0 - k), min(c.windows, v0 + length + k)
        lip_in.append(c.lip[v0:v0 + length])
        aud_in.append(c.aud[lo:hi])
        cand = np.arange(v0, v0 + length)[:, None] + shifts[None]           # (L, 2K + 1) audio windows
        inside = (cand >= lo) & (cand < hi)
        cand_rows.append(base + np.clip(cand - lo, 0, hi - lo - 1))
        inside_rows.append(inside)
        base += hi - lo
    lip = lip_head(model, dropout(torch.cat(lip_in).float()))                  # (B, 1024)
    aud = aud_head(model, dropout(torch.cat(aud_in).float()))                  # (sum of ranges, 1024)
    cand_t = torch.from_numpy(np.concatenate(cand_rows))
    inside_t = torch.from_numpy(np.concatenate(inside_rows))
    a = aud[cand_t] * inside_t[..., None]                                       # zero outside the clip
    logits = -torch.linalg.vector_norm(lip.float()[:, None] - a.float() + lse.DIST_EPS, dim=-1)
    target = torch.full((len(logits),), k, dtype=torch.long)
    acc = float((logits.argmax(1) == k).float().mean())
    return torch.nn.functional.cross_entropy(logits, target), acc


def _torch_rng_state(seed: int) -> "torch.Tensor":
    """The CPU generator state right after torch.manual_seed(seed), without touching the caller's."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()


class HeadsTask:
    """The head training as a bench.trainer task. Its random streams (numpy for batches, torch for
    dropout) live in its state, so a resumed run draws exactly what a straight run would.

    `prepare(calibrated)` returns the training clips' cached trunk features and their summary; it
    runs in `begin`, after any resume, so a finished fit never computes features and a resumed one
    keeps the trunk calibration it saved."""

    def __init__(self, model: "SyncNetModel", config: SuiteSyncConfig, seed: int,
                 prepare: Callable[[bool], tuple[list[ClipFeatures], dict[str, Any]]]):
        import torch

        self.model, self.config, self.prepare = model, config, prepare
        self.opt = torch.optim.AdamW(_heads(model), lr=config.lr, weight_decay=config.weight_decay)
        self.rng = np.random.default_rng([seed, 0])
        self.torch_rng = _torch_rng_state(seed)      # dropout masks
        self.dropout = torch.nn.Dropout(config.dropout)
        self.clips: list[ClipFeatures] = []
        self.info: dict[str, Any] = {}
        self.resumed = False

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "rng": self.rng.bit_generator.state, "torch_rng": self.torch_rng, "info": json.dumps(self.info)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])   # trunk, calibration and heads as saved
        self.opt.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng = state["torch_rng"]
        self.info = json.loads(state["info"])
        self.resumed = True

    def begin(self, step: int) -> None:
        self.clips, self.info = self.prepare(self.resumed)
        if not self.clips:
            raise ValueError("no training clip")
        self.model.train()

    def step(self, step: int, autocast) -> dict[str, float]:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch_rng)
            with autocast:
                loss, acc = matching_loss(self.model, self.clips, self.rng, self.config, self.dropout)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.torch_rng = torch.get_rng_state()
        return {"loss": float(loss.detach()), "acc": acc}


def _save(path: Path, payload: dict[str, Any]) -> None:
    import io

    import torch

    from bench.cache import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    from bench.safe_load import load_weights

    return load_weights(path, what="sync_suite checkpoint")


# -------------------------------------------------------------------------------------- metric


class SuiteSyncMetric(Metric):
    spec = MetricSpec(
        name="sync_suite",
        description="lip-sync distance / confidence / AV offset from a SyncNet (syncnet_python architecture) "
                    "trained BY THE SUITE on this run's training clips and scored like LSE on face-tracked "
                    "crops; comparable only within a run/dataset, never with published LSE-D / LSE-C",
        values=sync_values("suite", "suite-trained SyncNet"),
        config=SuiteSyncConfig,
        needs_audio=True,
        stages=("faces",),
        fit_scope="dataset",
        published=False,
    )

    NAMES = ("SyncD-suite", "SyncC-suite", "AV-offset-suite")

    def __init__(self, config: SuiteSyncConfig, context: Any):
        super().__init__(config, context)
        self._model: "SyncNetModel | None" = None
        self._train_precision: dict[str, Any] | None = None

    def precision_used(self) -> dict[str, dict[str, Any]]:
        """What the scorer's network ran at, for the manifest: its head training (when `fit` ran)
        and scoring (always fp32, like LSE)."""
        out: dict[str, dict[str, Any]] = {
            "scoring": {"name": "fp32", "requested": "fp32", "reason": "scored in fp32 like LSE",
                        "slow": False, "device": str(self.context.device)}}
        if self._train_precision is not None:
            out["training"] = self._train_precision
        return out

    @classmethod
    def availability(cls, config: Any) -> Availability:
        return module_available("python_speech_features", "pip install python_speech_features")

    @property
    def checkpoint(self) -> Path:
        return Path(self.context.work_dir) / CHECKPOINT

    @property
    def work_folder(self) -> Path:
        """The trainer's folder (its resumable state and curves); CHECKPOINT is the exported scorer."""
        return Path(self.context.work_dir) / TRAIN_FOLDER

    def fit(self, clips: Sequence["PreparedClip"], budget: "Budget") -> dict[str, Any]:
        import torch

        from bench.precision import choose
        from bench.trainer import TrainSettings, train
        from bench.weights import sha256_file
        from metrics.sync.model import SyncNetModel

        cfg = self.config
        t0 = time.monotonic()
        # The runner passes val clips after train ones for methods' held-out evaluation; the scorer
        # trains on train clips only, so val audio (the demo's cross-driving source) stays unseen.
        clips = [c for c in clips if c.clip.split == "train"]
        if not clips:
            raise ValueError("no clips of the train split to train the suite scorer on")
        steps = budget.resolve_steps(quick=cfg.steps_quick, standard=cfg.steps_standard, full=cfg.steps_full)
        max_frames = {"quick": cfg.frames_quick, "standard": cfg.frames_standard, "full": cfg.frames_full}[budget.preset]
        prec = choose("cpu", cfg.precision, faithful=False)   # the heads train on the CPU (cached features live there)
        self._train_precision = {**prec.to_json(), "device": "cpu"}
        if prec.slow:
            self.context.progress.log(f"warning: sync_suite trains at {prec.name}: {prec.reason}")
        with torch.random.fork_rng(devices=[]):   # seeded without disturbing the caller's RNG
            torch.manual_seed(self.context.seed)   # the random trunk is part of the scorer
            model = SyncNetModel()
        task = HeadsTask(model, cfg, self.context.seed,
                         lambda calibrated: self._features(model, clips, max_frames, calibrated))
        settings = TrainSettings(steps=steps, checkpoint_every=cfg.checkpoint_every,
                                 checkpoint_seconds=cfg.checkpoint_seconds, log_every=10, label="sync_suite: train")
        out = train(task, self.work_folder, settings, device="cpu", precision=prec,
                    deadline=budget.deadline(t0), progress=self.context.progress)
        if out.steps_this_run or not self.checkpoint.is_file():
            _save(self.checkpoint, {"state_dict": model.state_dict(), "step": out.steps_done,
                                    "curve": out.curves["train"], "config": dataclasses.asdict(cfg),
                                    "meta": task.info, "precision": prec.name})
        self._model = model.eval().to(self.context.device)
        curve = out.curves["train"]
        return {
            "checkpoint": str(self.checkpoint), "sha256": sha256_file(self.checkpoint),
            "steps": out.steps_done, "target_steps": steps, "resumed_from": out.resumed_from,
            "stopped": "already trained" if out.stopped == "done-before" else out.stopped,
            "seconds": time.monotonic() - t0, "train_seconds": out.seconds, "budget": budget.describe(),
            "precision": prec.name, "precision_reason": prec.reason, **task.info,
            "final": curve[-1] if curve else {}, "curve": curve,
        }

    def _features(self, model: "SyncNetModel", clips: Sequence["PreparedClip"], max_frames: int,
                  calibrated: bool) -> tuple[list[ClipFeatures], dict[str, Any]]:
        """Trunk features of the training clips (seeded random order, up to `max_frames` frames).

        Clips are cropped one at a time and only their features are kept; the first clips' crops wait
        until the trunk's BatchNorms are calibrated on them (skipped when resuming)."""
        from metrics.sync import lse

        cfg, progress = self.config, self.context.progress
        order = np.random.default_rng(self.context.seed).permutation(len(clips))
        need = cfg.batch_windows // cfg.blocks + lse.VIDEO_WINDOW
        pending: list[tuple[str, np.ndarray, np.ndarray]] = []
        feats: list[ClipFeatures] = []
        skipped: dict[str, str] = {}
        frames, calib = 0, 0
        pending_windows = 0

        def flush() -> None:
            nonlocal calib
            if not calibrated and calib == 0:
                calib = calibrate_trunk(model, [(c, m) for _, c, m in pending], cfg.calibration_windows,
                                        self.context.seed)
            for cid, crops, mf in pending:
                feats.append(trunk_features(model, cid, crops, mf))
            pending.clear()

        for i in progress.track(list(order), "sync_suite: training clips"):
            if frames >= max_frames:
                break
            clip = clips[int(i)]
            try:
                n = clip.num_frames
                if n < need:
                    skipped[clip.id] = f"{n} frames (< {need})"
                    continue
                crops = mouth_crops(clip, cfg.emulate_codecs)[: max(need, max_frames - frames)]
                mf = clip_mfcc(clip)
            except Exception as e:  # one bad clip must not stop training on the others
                skipped[clip.id] = f"{type(e).__name__}: {e}"
                continue
            frames += len(crops)
            pending.append((clip.id, crops, mf))
            pending_windows += len(crops) - lse.VIDEO_WINDOW
            if calibrated or calib or pending_windows >= cfg.calibration_windows:
                flush()
        if pending:
            flush()
        if not feats:
            raise ValueError(f"no usable training clip ({len(clips)} given; skipped: {skipped})")
        info = {"clips": len(feats), "frames": frames, "windows": int(sum(f.windows for f in feats)),
                "calibration_windows": calib, "skipped_clips": skipped}
        return feats, info

    def _get_model(self) -> "SyncNetModel | None":
        if self._model is None and self.checkpoint.is_file():
            from metrics.sync.model import SyncNetModel

            model = SyncNetModel()
            model.load_state_dict(load_checkpoint(self.checkpoint)["state_dict"])
            self._model = model.eval().to(self.context.device)
        return self._model

    def weights_used(self) -> list[dict[str, str]]:
        if not self.checkpoint.is_file():
            return []
        from bench.weights import sha256_file

        return [{"role": "suite-trained sync scorer", "path": str(self.checkpoint),
                 "sha256": sha256_file(self.checkpoint), "origin": "trained-by-suite"}]

    def score(self, sample: Sample) -> dict[str, Score]:
        model = self._get_model()
        if model is None:
            return {n: Score.missing("unavailable", "the suite sync scorer is not trained (fit() did not run)")
                    for n in self.NAMES}
        return score_with(model, sample, self.NAMES, self.config.batch_size, self.config.emulate_codecs,
                          self.context.device, PROTOCOL, self.context.progress, region=MOUTH_REGION)


def shift_audio(audio: np.ndarray, frames: int, samples_per_frame: int = 640) -> np.ndarray:
    """The same audio moved by `frames` video frames, length kept: positive = the audio runs early
    (content at t comes from t + frames), which the sync scorers report as AV offset +frames."""
    n = int(frames) * samples_per_frame
    a = np.asarray(audio, dtype=np.float32)
    if n == 0:
        return a.copy()
    if abs(n) >= len(a):
        return np.zeros_like(a)
    if n > 0:
        return np.concatenate([a[n:], np.zeros(n, np.float32)])
    return np.concatenate([np.zeros(-n, np.float32), a[:n]])
