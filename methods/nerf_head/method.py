"""The `nerf_head` method: GeneFace++-style audio -> 3DMM expression -> landmarks -> NeRF head + torso.

Two parts (see bench/method.py, PartSpec):
- `audio2motion` (scope dataset): the pitch-aware VAE (methods/nerf_head/audio2motion), trained with
  Real3DPortrait's audio2motion task through bench.trainer on the train clips of every subject, or
  loaded from an official GeneFace++ folder (`--set nerf_head.audio2motion_checkpoint=<folder>`);
- `renderer` (scope subject): the head + super-resolution field (HeadTask), then the torso with the head
  frozen (TorsoTask), both through bench.trainer, on one subject's training frames seen through the
  subject-level stages (head_crops frame of reference, segmentation plate + labels, threedmm identity,
  camera and per-frame pose, faces landmarks). Budget counters: `nerf_head.head=N`, `nerf_head.torso=N`.

`generate`: driving audio features (mel or HuBERT + f0: per-request recipe stages, timed by the runner as
"stage:<name>") -> expression (temperature 0.2, mouth amplitude 0.4) -> idexp landmarks with the target
subject's identity -> LLE onto the subject's training landmarks, normalise, clamp -> renderer along the
target clip's smoothed camera path (looped when the audio is longer), eye condition from the training
97 % quantile -> 512x512 head crops -> pasted into the full target frames through the inverse head-crop
transform. Timings: "motion", "render", "paste_back". docs/nerf_head.md, section "Method".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from bench.availability import Availability
from bench.method import (Budget, FitReport, GenerateRequest, GenerateResult, Method, MethodSpec, PartSpec,
                          WeightUse)

if TYPE_CHECKING:
    from bench.precision import Precision
    from data_recipes.recipe import PreparedClip

PrecisionChoice = Literal["context", "auto", "fp32", "bf16", "amp"]
Preset = Literal["auto", "tiny", "quick", "standard", "full"]

# steps per budget preset (quick, standard, full); the renderer's two networks are counters of its part
A2M_STEPS = (150, 20_000, 400_000)
HEAD_STEPS = (120, 12_000, 250_000)
# quick: no torso network (a few CPU steps leave it blank); the head is composited over the target frame's
# own torso and the plate, as the head stage trains it (docs/nerf_head.md "Method")
TORSO_STEPS = (0, 3_000, 250_000)


@dataclass(frozen=True)
class NerfHeadConfig:
    """Options of nerf_head (each settable with --set nerf_head.<name>=<value>).

    audio2motion_checkpoint: an official GeneFace++ audio2motion folder (config.yaml +
        model_ckpt_steps_<N>.ckpt); loaded instead of training (needs the HuBERT front end and BFM fits);
    front_end: audio features of the audio2motion model: auto (HuBERT where its weights are, else the
        suite's mel), hubert, mel;
    temperature / mouth_amp / lle_k / lle_blend / clamp: GeneFace++'s inference settings (0.2 / 0.4 /
        10 / 0.2 / on);
    a2m_size: the trained model's size: auto (small for the quick budget, official otherwise), tiny,
        small (the CPU demo size: feat 32, hidden 64), official; a2m_lr / a2m_warmup / a2m_batch /
        a2m_window / a2m_eval_every: its training (Real3DPortrait: 5e-4, 1000 warm-up steps);
    renderer_preset: auto (the budget's preset), tiny (tests), quick, standard, full
        (methods/nerf_head/renderer/config.py); eval_frames: held-out frames rendered per evaluation;
        eval_every: steps between evaluations (0: a quarter of the steps);
    train_precision: "context" = the run's --precision, resolved by bench.precision (bf16 where native);
    pose_smooth: kernel of the driving camera path's moving average (GeneFace++ smooths it; 1 = off);
    paste_feather: pixels of the pasted crop's soft border; render_batch: frames per batched head render; overlay: also write the predicted-vs-tracked
        landmark video of every request (path in the result's info and the log).
    """

    audio2motion_checkpoint: str | None = None
    front_end: Literal["auto", "hubert", "mel"] = "auto"
    temperature: float = 0.2
    mouth_amp: float = 0.4
    lle_k: int = 10
    lle_blend: float = 0.2
    clamp: bool = True
    a2m_size: Literal["auto", "tiny", "small", "official"] = "auto"
    a2m_lr: float = 1e-3
    a2m_warmup: int = 50
    a2m_batch: int = 8
    a2m_window: int = 64
    a2m_eval_every: int = 0
    renderer_preset: Preset = "auto"
    eval_frames: int = 2
    eval_every: int = 0
    train_precision: PrecisionChoice = "context"
    pose_smooth: int = 7
    paste_feather: int = 16
    render_batch: int = 8
    overlay: bool = False


def _arch(size: str, audio_dim: int, motion_dim: int):
    from methods.nerf_head.audio2motion.model import A2MArch

    if size == "official":
        return A2MArch(audio_dim=audio_dim, motion_dim=motion_dim)
    if size == "small":
        return A2MArch(audio_dim=audio_dim, motion_dim=motion_dim, feat_dim=32, hidden=64, enc_layers=4,
                       dec_layers=2, flow_hidden=16, flow_layers=2)
    if size == "tiny":
        return A2MArch(audio_dim=audio_dim, motion_dim=motion_dim, feat_dim=8, hidden=16, latent=4, enc_layers=2,
                       dec_layers=1, flow_hidden=8, flow_layers=1, flow_count=1)
    raise ValueError(f"unknown a2m_size {size!r}")


def _record(precision: "Precision", device: str) -> dict[str, Any]:
    return {**precision.to_json(), "device": device}


@dataclass
class _Subject:
    """What `generate` needs of the fitted subject (one at a time, as the runner drives it)."""

    subject: str
    model: Any                     # HeadModel or TorsoModel, eval mode
    size: int                      # side S the renderer data was built at
    background: np.ndarray         # (S, S, 3) uint8 plate
    train_idexp: np.ndarray        # (N, 68, 3) training idexp landmarks (LLE database)
    stats: Any                     # ConditionStats of the training frames
    eye: float                     # eye condition for driven frames
    preset: str


class _CurrentHead:
    """A TorsoTask for bench.trainer whose resumed checkpoint keeps its torso networks and optimiser but
    takes the frozen head from the head just fitted: when a larger budget trains the head further, the
    torso continues on top of the new head instead of the one it was first trained with."""

    def __init__(self, task, head_state):
        from methods.nerf_head.renderer.tasks import torso_head_keys

        self.task = task
        self.head = {k: v for k, v in head_state.items() if k in torso_head_keys(task.model)}

    def state(self):
        return self.task.state()

    def load_state(self, state) -> None:
        self.task.load_state(state)
        missing = set(self.task.model.load_state_dict(self.head, strict=False).unexpected_keys)
        if missing:
            raise ValueError(f"head keys not in the torso model: {sorted(missing)[:5]}")
        self.task.model.refresh_bitfield(repack=False)

    def step(self, step, autocast):
        return self.task.step(step, autocast)

    def evaluate(self, step):
        return self.task.evaluate(step)

    def preview(self, step):
        return self.task.preview(step)


class NerfHeadMethod(Method):
    spec = MethodSpec(
        name="nerf_head",
        description="GeneFace++-style NeRF head: audio (mel or HuBERT) + f0 -> 3DMM expression -> landmarks "
                    "(LLE) -> head + torso radiance fields -> SR -> pasted into the frame",
        config=NerfHeadConfig,
        # mel: the front end every machine can compute; with HuBERT weights present the hubert stage is
        # read too (and its seconds added by generate), see docs/nerf_head.md "Method"
        stages=("normalise", "faces", "head_crops", "segmentation", "mel", "f0", "threedmm"),
        fit_scope="subject",
        kind="3d",
        per_subject_data="3-5 min video of the person (GeneFace++ recipe)",
        # bump when outputs change for the same inputs: 2 = face hull mask drawn by OpenCV (was Pillow)
        version="2",
        parts=(
            PartSpec("audio2motion", "dataset", steps=A2M_STEPS,
                     description="pitch-aware VAE audio -> 3DMM expression (trained, or an official folder)"),
            PartSpec("renderer", "subject", steps=HEAD_STEPS, counters=("head", "torso"),
                     description="head + SR radiance field, then the torso field (head frozen)"),
        ),
    )

    def __init__(self, config: NerfHeadConfig, context):
        super().__init__(config, context)
        self._a2m = None
        self._space = None
        self._front_end: str | None = None
        self._a2m_origin = ""
        self._subject: _Subject | None = None
        self._bfm = None

    # ---------------------------------------------------------------------------------- availability

    @classmethod
    def availability(cls, config: NerfHeadConfig) -> Availability:
        from bench.availability import all_of, module_available
        from data_recipes.threedmm.stage import threedmm_availability

        checks = [module_available("cv2", "pip install opencv-python-headless"),
                  module_available("scipy", "pip install scipy")]
        a = threedmm_availability()
        if not a.ok:
            checks.append(Availability.no(f"needs the threedmm stage (identity, camera, per-frame pose): {a.reason}"))
        if config.audio2motion_checkpoint is not None:
            folder = Path(config.audio2motion_checkpoint).expanduser()
            if not folder.exists():
                checks.append(Availability.no(f"nerf_head.audio2motion_checkpoint {folder} does not exist"))
            elif folder.is_dir() and not any(folder.glob("model_ckpt_steps_*.ckpt")):
                checks.append(Availability.no(f"nerf_head.audio2motion_checkpoint {folder} has no "
                                              "model_ckpt_steps_<N>.ckpt"))
            else:
                checks.append(cls._hubert(config, "an official audio2motion checkpoint reads HuBERT features"))
        elif config.front_end == "hubert":
            checks.append(cls._hubert(config, "front_end=hubert"))
        return all_of(*checks)

    @classmethod
    def variant(cls, config: NerfHeadConfig) -> str:
        # the audio front end decides which audio2motion model drives the renderer: never pooled
        try:
            return f"front end: {cls._front_end_of(config)}"
        except ValueError:    # hubert asked for without its weights: the method is unavailable anyway
            return f"front end: {config.front_end}"

    @staticmethod
    def _front_end_of(config: NerfHeadConfig) -> str:
        from data_recipes.audio.hubert import hubert_availability
        from methods.nerf_head.audio2motion.data import resolve_front_end

        if config.audio2motion_checkpoint is not None:
            return "hubert"       # an official audio2motion reads HuBERT features
        return resolve_front_end(config.front_end, hubert_availability().ok)

    @staticmethod
    def _hubert(config: NerfHeadConfig, why: str) -> Availability:
        from data_recipes.audio.hubert import hubert_availability

        a = hubert_availability()
        return a if a.ok else Availability.no(f"{why}, but the hubert stage is unavailable: {a.reason}")

    # ---------------------------------------------------------------------------------- helpers

    def _precision(self, *, faithful: bool) -> "Precision":
        from bench.precision import choose

        c = self.config.train_precision
        return choose(self.context.device, self.context.precision if c == "context" else c, faithful=faithful)

    def _bfm_model(self, clips: Sequence["PreparedClip"]):
        """The BFM model when the clips were fitted with it (its bases are not copied per clip)."""
        if self._bfm is not None:
            return self._bfm
        name = str(clips[0].stage("threedmm").json("meta")["model"]["name"])
        if not name.startswith("bfm"):
            return None
        from data_recipes.threedmm.bfm import load_bfm

        cfg = clips[0].recipe.config("threedmm")
        self._bfm = load_bfm(Path(cfg.bfm_dir).expanduser() if cfg.bfm_dir else None, cfg.keypoint_mode)
        return self._bfm

    def _resolve_front_end(self) -> str:
        return self._front_end_of(self.config)

    def _renderer_preset(self, budget: Budget):
        from methods.nerf_head.renderer.config import preset

        name = budget.preset if self.config.renderer_preset == "auto" else self.config.renderer_preset
        return preset(name)

    # ---------------------------------------------------------------------------------- fit

    def fit_part(self, part: PartSpec, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        if part.name == "audio2motion":
            return self._fit_audio2motion(part, clips, budget)
        if part.name == "renderer":
            return self._fit_renderer(part, clips, budget)
        raise ValueError(f"nerf_head has no part {part.name!r}")

    def _fit_audio2motion(self, part: PartSpec, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        from methods.nerf_head.audio2motion.data import build_motion_clips

        t0 = time.monotonic()
        train = [c for c in clips if c.clip.split != "val"]
        val = [c for c in clips if c.clip.split == "val"]
        if not train:
            raise ValueError("nerf_head audio2motion: no training clips")
        self._front_end = fe = self._resolve_front_end()
        bfm = self._bfm_model(train)
        if self.config.audio2motion_checkpoint is not None:
            return self._load_audio2motion(train, bfm, budget, t0)
        from bench.trainer import TrainSettings, train as run_train
        from methods.nerf_head.audio2motion.train import Audio2MotionTask, TrainConfig

        train_mc, space = build_motion_clips(train, fe, bfm=bfm)  # type: ignore[arg-type]
        val_mc = build_motion_clips(val, fe, space, bfm=bfm)[0] if val else []  # type: ignore[arg-type]
        size = self.config.a2m_size
        if size == "auto":
            size = "small" if budget.preset == "quick" else "official"
        arch = _arch(size, train_mc[0].audio.shape[1], space.dim)
        cfg = self.config
        steps = budget.steps_for(part)
        tc = TrainConfig(batch=cfg.a2m_batch, window=cfg.a2m_window, lr=cfg.a2m_lr, warmup=cfg.a2m_warmup,
                         seed=self.context.seed)
        task = Audio2MotionTask(train_mc, val_mc, space, arch, tc, device=self.context.device)
        precision = self._precision(faithful=False)
        every = cfg.a2m_eval_every or max(1, steps // 4)
        result = run_train(task, Path(self.context.work_dir) / f"a2m-{fe}-{size}",
                           TrainSettings(steps=steps, eval_every=every, checkpoint_every=max(1, min(1000, steps)),
                                         label="nerf_head audio2motion"),
                           device=self.context.device, precision=precision, deadline=budget.deadline(),
                           progress=self.context.progress)
        self._a2m, self._space, self._a2m_origin = task.model.eval(), space, "trained-by-suite"
        from bench.weights import sha256_file

        ckpt = result.checkpoint
        weights = (WeightUse("audio2motion", str(ckpt), sha256_file(ckpt) if ckpt else "", "trained-by-suite",
                             f"{result.steps_done} steps, {size} size, front end {fe}"),)
        ev = result.last_eval
        note = (f"front end: {fe}; expression space {space.name} ({space.dim} dims); {size} model; "
                f"{result.steps_done} steps" + (f" (continued from {result.resumed_from})" if result.resumed_from else "")
                + (f"; held-out loss {ev['val_loss']:.3f}" if "val_loss" in ev else "")
                + ("; stopped by the time budget" if result.stopped == "deadline" else "")
                + ("; sync loss left out (no pretrained landmark SyncNet)"))
        return FitReport(weights=weights, steps=result.steps_done, steps_by_part={"audio2motion": result.steps_done},
                         resumed_from={"audio2motion": result.resumed_from}, seconds=time.monotonic() - t0,
                         budget=budget.describe(), curves={"audio2motion": result.curves["train"],
                                                           "audio2motion_eval": result.curves["eval"]},
                         notes=note, precision={"train": _record(result.precision, self.context.device),
                                                "generate": _record(self._precision(faithful=True), self.context.device)})

    def _load_audio2motion(self, train: Sequence["PreparedClip"], bfm, budget: Budget, t0: float) -> FitReport:
        from bench.weights import sha256_file
        from methods.nerf_head.audio2motion import load_official
        from methods.nerf_head.audio2motion.checkpoint import latest_checkpoint
        from methods.nerf_head.audio2motion.data import clip_geometry, expression_space

        folder = Path(self.config.audio2motion_checkpoint).expanduser()  # type: ignore[arg-type]
        geoms = [clip_geometry(c.stage("threedmm"), bfm) for c in train]
        space = expression_space(geoms)
        if space.name != "bfm2009":
            raise ValueError("an official audio2motion model outputs BFM 2009 expression coefficients: the threedmm "
                             "stage must fit BFM 2009 (--set threedmm.model=bfm), not the open model")
        self._a2m = load_official(folder).to(self.context.device)
        self._space, self._a2m_origin = space, "user"
        ckpt = latest_checkpoint(folder)
        return FitReport(weights=(WeightUse("audio2motion", str(ckpt), sha256_file(ckpt), "user",
                                            "official GeneFace++ audio2motion folder"),),
                         steps=0, seconds=time.monotonic() - t0, budget=budget.describe(),
                         notes="front end: hubert; loaded an official audio2motion folder; no training",
                         precision={"generate": _record(self._precision(faithful=True), self.context.device)})

    # ---- renderer

    def _subject_space(self, clips: Sequence["PreparedClip"]):
        """The expression space of the audio-to-motion part; a subject part fitted alone (tests) builds
        it from the clips."""
        if self._space is None:
            from methods.nerf_head.audio2motion.data import clip_geometry, expression_space

            train = [c for c in clips if c.clip.split != "val"]
            self._space = expression_space([clip_geometry(c.stage("threedmm"), self._bfm_model(train)) for c in train])
        return self._space

    def build_renderer_data(self, clips: Sequence["PreparedClip"], size: int, eval_frames: int):
        """(RendererData, train idexp (N, 68, 3), ConditionStats) of one subject at side `size`."""
        from methods.nerf_head import subject as S
        from methods.nerf_head.motion import condition_stats
        from methods.nerf_head.renderer.data import RendererData

        train = [c for c in clips if c.clip.split != "val"]
        val = [c for c in clips if c.clip.split == "val"]
        if not train:
            raise ValueError("nerf_head renderer: the subject has no training clip")
        space = self._subject_space(clips)
        bfm = self._bfm_model(train)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("frames", "c2w", "k", "idexp", "eye", "lm", "labels")}
        n_train = 0
        picks: list[tuple["PreparedClip", np.ndarray | None]] = [(c, None) for c in train]
        if val and eval_frames > 0:   # only the held-out frames evaluate() renders are decoded
            n = val[0].num_frames
            picks.append((val[0], np.unique(np.linspace(0, n - 1, min(eval_frames, n)).round().astype(int))))
        for clip, idx in picks:
            geo = S.crop_geometry(clip, size)
            sel = np.arange(clip.num_frames) if idx is None else idx
            lm = S.tracked_lm68(clip, geo.transforms)
            idexp, _ = S.clip_idexp(clip, space, bfm)
            t = min(len(idexp), clip.num_frames, len(geo.c2w))
            sel = sel[sel < t]
            parts["frames"].append(S.crops_at(clip, geo.transforms, size, sel))
            parts["labels"].append(S.read_labels_at(clip, size, sel))
            parts["c2w"].append(geo.c2w[sel])
            parts["k"].append(geo.intrinsics[sel])
            parts["idexp"].append(idexp[sel])
            parts["eye"].append(S.eye_area(lm[sel]))
            parts["lm"].append(lm[sel])
            if idx is None:
                n_train += len(sel)
        idexp = np.concatenate(parts["idexp"])
        train_idexp = idexp[:n_train]
        stats = condition_stats(train_idexp)
        mid = train[0]
        geo0 = S.crop_geometry(mid, size)
        background = S.plate_at(mid, geo0.transforms[len(geo0.transforms) // 2], size)
        total = len(idexp)
        data = RendererData(frames=np.concatenate(parts["frames"]), background=background,
                            c2w=np.concatenate(parts["c2w"]), intrinsics=np.concatenate(parts["k"]),
                            conds=S.subject_conditions(idexp, stats), eye_area=np.concatenate(parts["eye"]),
                            lm68=np.concatenate(parts["lm"]), train_idx=np.arange(n_train),
                            val_idx=np.arange(n_train, total), labels=np.concatenate(parts["labels"]))
        return data, train_idexp, stats

    def _fit_renderer(self, part: PartSpec, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        from bench.trainer import TrainSettings, train as run_train
        from bench.weights import sha256_file
        from methods.nerf_head.renderer.config import with_steps
        from methods.nerf_head.renderer.data import eye_area_for_inference
        from methods.nerf_head.renderer.tasks import HeadTask, TorsoTask

        t0 = time.monotonic()
        cfg = self._renderer_preset(budget)
        head_steps = budget.resolve_steps(*HEAD_STEPS, part=("head", part.name))
        torso_steps = budget.resolve_steps(*TORSO_STEPS, part=("torso", part.name)) if cfg.train_torso else 0
        cfg = with_steps(cfg, head_steps, torso_steps)
        cfg = replace(cfg, head_train=replace(cfg.head_train, eval_frames=self.config.eval_frames, seed=self.context.seed),
                      torso_train=replace(cfg.torso_train, eval_frames=self.config.eval_frames, seed=self.context.seed))
        size = min(512, 2 * cfg.head.render_size) if cfg.head.sr else cfg.head.render_size
        data, train_idexp, stats = self.build_renderer_data(clips, size, self.config.eval_frames)
        subject = clips[0].clip.subject
        device = self.context.device
        precision = self._precision(faithful=False)
        deadline = budget.deadline()
        head_deadline = None if deadline is None else time.monotonic() + 0.8 * (deadline - time.monotonic())
        work = Path(self.context.work_dir) / f"renderer-{cfg.name}"
        head = HeadTask(data, cfg, device)

        def settings(steps: int, label: str) -> TrainSettings:
            every = self.config.eval_every or max(1, steps // 4)
            return TrainSettings(steps=steps, eval_every=every, checkpoint_every=max(1, min(1000, steps)), label=label)

        hr = run_train(head, work / "head", settings(head_steps, f"nerf_head head ({subject})"), device=device,
                       precision=precision, deadline=head_deadline, progress=self.context.progress)
        model, notes = head.model, [f"renderer preset {cfg.name}: {cfg.note}", f"trained at {size} px crops",
                                    f"head+SR {hr.steps_done} steps", head.notes]
        curves = {"head": hr.curves["train"], "head_eval": hr.curves["eval"]}
        previews = list(hr.previews[-1:])
        weights = [WeightUse("renderer head", str(hr.checkpoint), sha256_file(hr.checkpoint), "trained-by-suite",
                             f"{hr.steps_done} steps, preset {cfg.name}")] if hr.checkpoint else []
        steps_by = {"head": hr.steps_done}
        resumed = {"head": hr.resumed_from}
        stopped = hr.stopped == "deadline"
        if torso_steps > 0 and hr.steps_done > 0:
            torso = TorsoTask(data, cfg, head.model.state_dict(), device)
            tr = run_train(_CurrentHead(torso, head.model.state_dict()), work / "torso", settings(torso_steps, f"nerf_head torso ({subject})"), device=device,
                           precision=precision, deadline=deadline, progress=self.context.progress)
            model = torso.model
            notes.append(f"torso {tr.steps_done} steps")
            curves.update({"torso": tr.curves["train"], "torso_eval": tr.curves["eval"]})
            previews += tr.previews[-1:]
            steps_by["torso"], resumed["torso"] = tr.steps_done, tr.resumed_from
            stopped = stopped or tr.stopped == "deadline"
            if tr.checkpoint:
                weights.append(WeightUse("renderer torso", str(tr.checkpoint), sha256_file(tr.checkpoint),
                                         "trained-by-suite", f"{tr.steps_done} steps"))
        last = (curves.get("torso_eval") or curves["head_eval"] or [{}])[-1]
        if "val_psnr" in last:
            notes.append(f"held-out PSNR {last['val_psnr']:.2f} dB" +
                         (f" (SR {last['val_psnr_sr']:.2f} dB)" if "val_psnr_sr" in last else ""))
        if stopped:
            notes.append("stopped by the time budget")
        if previews:
            notes.append("previews: " + ", ".join(str(p) for p in previews))
        notes.append(f"front end: {self._front_end or self._resolve_front_end()}")
        model.eval()
        self._subject = _Subject(subject=subject, model=model, size=size, background=data.background,
                                 train_idexp=train_idexp, stats=stats,
                                 eye=eye_area_for_inference(data.eye_area[data.train_idx]), preset=cfg.name)
        return FitReport(weights=tuple(weights), steps=sum(steps_by.values()), steps_by_part=steps_by,
                         resumed_from=resumed, seconds=time.monotonic() - t0, budget=budget.describe(),
                         curves=curves, notes="; ".join(n for n in notes if n),
                         precision={"train": _record(precision, device),
                                    "generate": _record(self._precision(faithful=True), device)})

    # ---------------------------------------------------------------------------------- generate

    def generate(self, request: GenerateRequest) -> GenerateResult:
        import shutil
        import tempfile

        from data_recipes.crops.head import paste_frame
        from data_recipes.frames import ClipFrames, FileFrames, cyclic
        from data_recipes.media import VideoWriter
        from metrics.fps import StageTimer
        from methods.nerf_head import subject as S
        from methods.nerf_head.audio2motion.data import audio_features, clip_f0
        from methods.nerf_head.audio2motion.inference import predict_motion
        from methods.nerf_head.motion import idexp_lm68, renderer_condition
        from methods.nerf_head.renderer.batched import render_head_frames
        from methods.nerf_head.renderer.data import torso_over_plate
        from methods.nerf_head.renderer.inference import render_frames
        from methods.nerf_head.renderer.model import TorsoModel

        sub = self._subject
        if self._a2m is None or self._space is None or sub is None:
            raise RuntimeError("nerf_head: fit both parts (audio2motion, renderer) before generate()")
        if request.target.clip.subject != sub.subject:
            raise ValueError(f"nerf_head holds the renderer of {sub.subject!r}, not of {request.target.clip.subject!r}")
        cfg, fe = self.config, self._front_end or self._resolve_front_end()
        target, driving = request.target, request.driving
        n = request.num_frames
        t_frames = target.num_frames
        idx = np.arange(n) % t_frames                      # the target video is looped under longer audio
        # reading cached stage outputs and decoding is file IO: not timed
        feats, f0 = audio_features(driving, fe), clip_f0(driving)  # type: ignore[arg-type]
        geo = S.crop_geometry(target, sub.size, smooth=cfg.pose_smooth)
        crop_size = int(target.stage("head_crops").json("meta")["size"])
        transforms = S.scale_transforms(target.stage("head_crops").array("transforms"), crop_size, crop_size)
        lm_target = S.tracked_lm68(target, geo.transforms)
        from methods.nerf_head.audio2motion.data import clip_geometry

        id_offset = clip_geometry(target.stage("threedmm"), self._bfm_model([target])).id_offset
        frames = ClipFrames(target)   # lazy (issue 16): decoded where read, never held whole
        timer = StageTimer(self.context.device)
        with timer("motion"):
            exp = predict_motion(self._a2m, feats, f0, n, temperature=cfg.temperature, mouth_amp=cfg.mouth_amp,
                                 seed=request.seed)
            lm = idexp_lm68(self._space, id_offset, exp)
            conds = renderer_condition(lm, sub.train_idexp, blend=cfg.lle_blend, k=cfg.lle_k, stats=sub.stats,
                                       clamp=cfg.clamp)
        with timer("render"):
            if isinstance(sub.model, TorsoModel):
                crops = render_frames(sub.model, geo.c2w[idx], geo.intrinsics[idx], conds, sub.eye, sub.background,
                                      lm68=lm_target[idx], output_size=crop_size, seed=request.seed,
                                      progress=self.context.progress)
            else:   # head only: over the target frame's own torso and the plate (the head stage's composition)
                own = S.crops_of(frames, geo.transforms, sub.size)
                labels = S.read_labels_at(target, sub.size)
                bgs = torso_over_plate(own, labels[: len(own)], sub.background)
                crops = render_head_frames(sub.model, geo.c2w[idx], geo.intrinsics[idx], conds, sub.eye, bgs[idx],
                                           output_size=crop_size, seed=request.seed, batch=cfg.render_batch,
                                           progress=self.context.progress)
        with timer("paste_back"):
            mask = S.feather_mask(crop_size, cfg.paste_feather)
        # pasted frame by frame into a lossless file (decoding and writing are file IO: not timed); the
        # runner copies it into its generated-video cache and removes the folder
        folder = Path(tempfile.mkdtemp(prefix="talkbench-nerf_head-"))
        try:
            with VideoWriter(folder / "frames.mkv", fps=25, lossless=True) as writer:
                for i, frame in enumerate(cyclic(frames, n)):
                    with timer("paste_back"):
                        pasted = paste_frame(frame, crops[i], transforms[idx[i]], mask)
                    writer.write(pasted)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        out = FileFrames(folder / "frames.mkv", n, *target.size, lossless=True, owned=folder)
        info: dict[str, Any] = {"front_end": fe, "audio2motion": self._a2m_origin, "expression_space": self._space.name,
                                "renderer_preset": sub.preset, "render_side": sub.size, "looped": n > t_frames}
        if fe == "hubert" and "hubert" not in self.spec.stages:
            # the runner times the stages the spec declares; HuBERT is read only with its weights present
            seconds = driving.recipe.request_seconds(driving.clip, "hubert")
            if seconds and "seconds" in seconds:
                timings_extra = {"stage:hubert": float(seconds["seconds"])}
            else:
                timings_extra = {}
        else:
            timings_extra = {}
        if cfg.overlay:
            info["overlay"] = str(self._write_overlay(request, exp, id_offset))
        return GenerateResult(frames=out, timings={**timer.timings(), **timings_extra}, info=info)

    def _write_overlay(self, request: GenerateRequest, exp: np.ndarray, id_offset: np.ndarray) -> Path:
        """Predicted (red) vs tracked (green) landmarks on the target frames, with the driving audio."""
        from methods.nerf_head.audio2motion.overlay import write_overlay_video

        n = min(len(exp), request.target.num_frames)
        folder = Path(self.context.work_dir) / "overlays"
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in request.id)
        path = write_overlay_video(folder / f"{safe}.mp4", request.target, self._space, id_offset, exp[:n],
                                   audio=request.driving.audio()[: n * 640], label=f"nerf_head {request.kind}")
        self.context.progress.log(f"nerf_head: landmark overlay for {request.id!r}: {path}")
        return path
