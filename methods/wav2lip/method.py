"""The Wav2Lip method adapter: load official or suite-trained weights, or train within a budget; generate.

Cheap to import: torch and the networks are imported inside functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from bench.availability import Availability
from bench.method import (Budget, FitReport, GenerateRequest, GenerateResult, Method, MethodSpec, PartSpec,
                          WeightUse)
from data_recipes.crops.wav2lip import OFFICIAL_PADS

if TYPE_CHECKING:
    from bench.precision import Precision
    from data_recipes.recipe import PreparedClip
    from methods.wav2lip.data import ClipData
    from methods.wav2lip.train import GeneratorSettings, StageSettings

PrecisionChoice = Literal["context", "auto", "fp32", "bf16", "amp"]


@dataclass(frozen=True)
class Wav2LipConfig:
    """Options of the Wav2Lip method (all settable with --set wav2lip.<name>=<value>).

    Weights: `checkpoint` (a generator file in the official format, official or suite-trained) is
    loaded as is; `pretrained` loads the official wav2lip_gan.pth (gan) or wav2lip.pth from the
    weights folder; with neither, `fit` trains expert then generator on the dataset's training clips.
    `gan` also picks the training script: hq_wav2lip_train.py (quality discriminator) or wav2lip_train.py.
    `expert_checkpoint` / `pretrained_expert` (official lipsync_expert.pth) skip training the expert.

    Inference (official defaults): pads (top, bottom, left, right), nosmooth, box (y1, y2, x1, x2:
    one fixed box instead of detections), batch_size 128, precision ("context" = the run's
    --precision; "auto" here means fp32 on every device: the published model's pixels).
    Improvements, off by default (faithful mode): blend="feather", paste_resize="lanczos",
    round_prediction. mel_padding: the STFT padding of the driving mel, "reflect" (librosa 0.7, which
    the original pins and its checkpoints and published outputs were made with) or "constant" (the
    zero padding of librosa >= 0.10, i.e. the official script run with a current librosa); only the
    first and last two mel frames differ.

    Training: train_precision ("context" = the run's; "auto" = bf16 where the device does it
    natively, fp32 elsewhere, see bench.precision), step and batch overrides of the budget's schedule, train_crops
    ("detector" boxes without pads like the official preprocess.py, or the padded "inference" boxes),
    jpeg_crops (the preprocessing's JPEG round trip), expert_bn ("train": the original never puts the
    frozen expert in eval mode), keep_checkpoints (newest kept per stage).
    """

    checkpoint: Path | None = None
    pretrained: bool = False
    gan: bool = True
    expert_checkpoint: Path | None = None
    pretrained_expert: bool = False
    pads: tuple[int, int, int, int] = OFFICIAL_PADS
    nosmooth: bool = False
    box: tuple[int, int, int, int] | None = None
    batch_size: int = 128
    precision: PrecisionChoice = "context"
    blend: Literal["hard", "feather"] = "hard"
    paste_resize: Literal["linear", "lanczos"] = "linear"
    round_prediction: bool = False
    mel_padding: Literal["reflect", "constant"] = "reflect"
    train_precision: PrecisionChoice = "context"
    expert_steps: int | None = None
    generator_steps: int | None = None
    expert_batch_size: int | None = None
    generator_batch_size: int | None = None
    train_crops: Literal["detector", "inference"] = "detector"
    jpeg_crops: bool = True
    expert_bn: Literal["train", "eval"] = "train"
    keep_checkpoints: int = 2


@dataclass(frozen=True)
class Schedule:
    """Steps, batch sizes and intervals of both stages for one budget preset."""

    expert_steps: int
    generator_steps: int
    expert_batch: int
    generator_batch: int
    expert_eval_interval: int
    generator_eval_interval: int
    expert_eval_batches: int
    generator_eval_batches: int
    checkpoint_interval: int
    expert_time_share: float = 0.4   # part of a wall-clock budget (`minutes`) given to the expert
    generator_lr: float | None = None  # None: the official 1e-4
    bn_recompute_batches: int = 0      # > 0: BatchNorm statistics recomputed after training (batchnorm.py)


# quick: a smoke test of the whole pipeline on 2 CPU cores (about a minute of fit in fp32), not a
# lip-sync model: the expert is barely trained (the sync loss never switches on), the generator
# takes 8 steps at a quick-only lr 1e-3 (10x the official) and its BatchNorm statistics are
# recomputed for its final weights, so it draws a blurry face of the target (found by MediaPipe in
# 97 of 97 demo test frames) instead of the flat grey box the running averages give after so few
# steps; the report says so. standard: about an hour on one GPU. full: official batch sizes,
# intervals and evaluation sizes; the original trains until stopped by hand, so the step counts are
# our choice.
SCHEDULES: dict[str, Schedule] = {
    "quick": Schedule(4, 8, 16, 4, 20, 12, 2, 2, 1000, generator_lr=1e-3, bn_recompute_batches=4),
    "standard": Schedule(5000, 5000, 64, 16, 1000, 1000, 50, 30, 1000),
    "full": Schedule(250_000, 250_000, 64, 16, 10_000, 3000, 1400, 300, 3000),
}


def _schedule_for(budget: Budget) -> Schedule:
    return SCHEDULES[budget.preset]


def stage_settings(config: Wav2LipConfig, budget: Budget) -> tuple["StageSettings", "GeneratorSettings"]:
    """Resolve both stages' settings from the official hparams, the budget and the config overrides."""
    from methods.wav2lip.train import StageSettings, official_generator_settings

    q, s, f = SCHEDULES["quick"], SCHEDULES["standard"], SCHEDULES["full"]
    sch = _schedule_for(budget)
    # Evaluation intervals come from the schedule alone, never from the step target: a target below
    # the interval would otherwise evaluate (and may switch syncnet_wt) at its own last step, and a
    # fit continued from N to 2N would differ from a straight 2N (the trainer evaluates at the end of
    # every run anyway, for the report).
    # `--budget wav2lip.expert=N` / `wav2lip.generator=N` set one network's steps
    e_steps = config.expert_steps or budget.resolve_steps(q.expert_steps, s.expert_steps, f.expert_steps,
                                                          part=("expert", "model"))
    g_steps = config.generator_steps or budget.resolve_steps(q.generator_steps, s.generator_steps, f.generator_steps,
                                                             part=("generator", "model"))
    expert = StageSettings(
        steps=e_steps, batch_size=config.expert_batch_size or sch.expert_batch,
        checkpoint_interval=min(sch.checkpoint_interval, max(1, e_steps)),
        eval_interval=sch.expert_eval_interval, eval_batches=sch.expert_eval_batches,
        log_every=max(1, e_steps // 500), keep=config.keep_checkpoints,
    )
    lr = {} if sch.generator_lr is None else {"lr": sch.generator_lr}
    gen = official_generator_settings(
        g_steps, config.gan, batch_size=config.generator_batch_size or sch.generator_batch, **lr,
        checkpoint_interval=min(sch.checkpoint_interval, max(1, g_steps)),
        eval_interval=sch.generator_eval_interval, eval_batches=sch.generator_eval_batches,
        log_every=max(1, g_steps // 500), keep=config.keep_checkpoints, expert_bn=config.expert_bn,
    )
    return expert, gen


def resolve_precision(choice: PrecisionChoice, context_precision: str, device: str, *,
                      faithful: bool) -> "Precision":
    """The precision one network use runs at: the config's choice, or the run's ("context"), resolved
    by `bench.precision.choose`. Inference passes faithful=True ("auto" keeps the faithful fp32
    output); training passes False (bf16 autocast where the device does it natively)."""
    from bench.precision import choose

    return choose(device, context_precision if choice == "context" else choice, faithful=faithful)


def training_data(clips: Sequence["PreparedClip"], config: Wav2LipConfig,
                  progress: Any = None) -> tuple[list["ClipData"], list["ClipData"], str]:
    """Training clips, evaluation clips and how the split was made, from the prepared train (then val)
    clips `fit` receives; also used by the data-parallel entry point (methods/wav2lip/train_ddp.py)."""
    from data_recipes.quality import InputUnusable
    from methods.wav2lip.data import no_usable_clip, prepare_clip, split_train_eval, usable

    train_pc = [c for c in clips if c.clip.split != "val"]
    val_pc = [c for c in clips if c.clip.split == "val"]
    if not train_pc:
        raise ValueError("wav2lip: fit needs at least one training clip")
    data = [prepare_clip(c, config.jpeg_crops, config.train_crops, progress) for c in train_pc]
    held = [prepare_clip(c, config.jpeg_crops, config.train_crops, progress) for c in val_pc]
    if not usable(data):  # checked before splitting: a split of nothing has no clip to cut
        raise InputUnusable(no_usable_clip(data))
    train, held_out, split_note = split_train_eval(usable(data), usable(held))
    train = usable(train)
    if not train:
        raise InputUnusable(no_usable_clip(data))
    if not usable(held_out):
        held_out, split_note = train, split_note + " (too short to sample; evaluating on training clips)"
    return train, held_out, split_note


def _record(precision: "Precision", device: str) -> dict[str, Any]:
    return {**precision.to_json(), "device": device}


class Wav2LipMethod(Method):
    """Wav2Lip (Prajwal et al. 2020), faithful to Rudrabha/Wav2Lip @ 5c90fa9; see docs/wav2lip.md."""

    spec = MethodSpec(
        name="wav2lip",
        description="Wav2Lip GAN: 96x96 lower-face inpainting from a mel window, with an expert lip-sync "
                    "discriminator (official checkpoints or trained by the suite)",
        config=Wav2LipConfig,
        stages=("normalise", "faces", "wav2lip_crops", "mel"),
        fit_scope="dataset",
        # one dataset part trained by `fit` (expert, then generator), or loaded from a checkpoint
        parts=(PartSpec("model", "dataset", steps=(8, 5000, 250_000), counters=("expert", "generator"),
                        description="expert SyncNet + generator (+ quality discriminator)"),),
        kind="2d",
        per_subject_data="none (trained once per dataset)",
    )

    def __init__(self, config: Wav2LipConfig, context):
        super().__init__(config, context)
        self._model = None
        self._weights: tuple[WeightUse, ...] = ()
        self._inference: "Precision | None" = None

    # ---------------------------------------------------------------------------------- weights

    @classmethod
    def availability(cls, config: Wav2LipConfig) -> Availability:
        from bench import weights as W
        from bench.availability import all_of, module_available
        from methods.wav2lip.weights import LIPSYNC_EXPERT, generator_spec

        checks = [module_available("cv2", "pip install opencv-python-headless")]
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            checks.append(Availability.no(f"wav2lip.checkpoint {config.checkpoint} does not exist"))
        elif config.checkpoint is None and config.pretrained:
            checks.append(W.availability(generator_spec(config.gan)))
        if config.expert_checkpoint is not None and not Path(config.expert_checkpoint).is_file():
            checks.append(Availability.no(f"wav2lip.expert_checkpoint {config.expert_checkpoint} does not exist"))
        elif config.pretrained_expert and config.checkpoint is None and not config.pretrained:
            checks.append(W.availability(LIPSYNC_EXPERT))
        return all_of(*checks)

    def _generator_path(self) -> tuple[Path, str] | None:
        """The generator file to load and its origin, or None when the suite must train one."""
        from bench import weights as W
        from methods.wav2lip.weights import generator_spec

        if self.config.checkpoint is not None:
            return Path(self.config.checkpoint), "user"
        if self.config.pretrained:
            return W.locate(generator_spec(self.config.gan)), "official"
        return None

    def _load_generator(self, path: Path, origin: str, role_note: str = "") -> WeightUse:
        from bench.weights import sha256_file
        from methods.wav2lip.checkpoint import load_into, read_checkpoint
        from methods.wav2lip.models import Wav2Lip
        from methods.wav2lip.weights import WEIGHTS

        digest = sha256_file(path)
        if origin == "user" and any(s.sha256 == digest for s in WEIGHTS.values()):
            origin = "official"  # the user pointed at an official file directly
        model = Wav2Lip()
        load_into(model, read_checkpoint(path))
        self._model = model.to(self.context.device).eval()
        self._warm_up()
        return WeightUse("generator", str(path), digest, origin, role_note)  # type: ignore[arg-type]

    def _warm_up(self) -> None:
        """Untimed forward passes so the first timed request does not pay for allocation / kernel choice."""
        import numpy as np

        from metrics.fps import warm_up
        from methods.wav2lip.inference import predict

        faces = np.zeros((2, 6, 96, 96), np.float32)
        mels = np.zeros((2, 80, 16), np.float32)
        warm_up(lambda: predict(self._model, faces, mels, self.context.device, self._precision()), runs=1)

    def _precision(self) -> str:
        return self.inference_precision().name

    def inference_precision(self) -> "Precision":
        """The generator's precision at inference (resolved once; warns once where it is slow)."""
        if self._inference is None:
            self._inference = resolve_precision(self.config.precision, self.context.precision, self.context.device,
                                                faithful=True)
            if self._inference.slow:
                self.context.progress.log(f"warning: wav2lip inference at {self._inference.name}: "
                                          f"{self._inference.reason}")
        return self._inference

    # ---------------------------------------------------------------------------------- fit

    def fit(self, clips: Sequence["PreparedClip"], budget: Budget) -> FitReport:
        t0 = time.monotonic()
        found = self._generator_path()
        if found is not None:
            use = self._load_generator(*found)
            return FitReport(weights=(use,), steps=0, seconds=time.monotonic() - t0, budget=budget.describe(),
                             notes=f"loaded {use.origin} weights; no training",
                             precision={"generate": _record(self.inference_precision(), self.context.device)})
        return self._train(clips, budget, t0)

    def _expert_path(self) -> tuple[Path, str] | None:
        from bench import weights as W
        from methods.wav2lip.weights import LIPSYNC_EXPERT

        if self.config.expert_checkpoint is not None:
            return Path(self.config.expert_checkpoint), "user"
        if self.config.pretrained_expert:
            return W.locate(LIPSYNC_EXPERT), "official"
        return None

    def _train(self, clips: Sequence["PreparedClip"], budget: Budget, t0: float) -> FitReport:
        from bench.weights import sha256_file
        from methods.wav2lip.train import train_expert, train_generator

        cfg, ctx = self.config, self.context
        train_precision = resolve_precision(cfg.train_precision, ctx.precision, ctx.device, faithful=False)
        if train_precision.slow:
            ctx.progress.log(f"warning: wav2lip training at {train_precision.name}: {train_precision.reason}")
        precision = train_precision.name
        expert_settings, gen_settings = stage_settings(cfg, budget)
        progress = ctx.progress
        train, held_out, split_note = training_data(clips, cfg, progress)
        start = time.monotonic()
        deadline = budget.deadline(start)
        work = Path(ctx.work_dir)
        notes = [split_note, f"precision {precision}"]
        weights: list[WeightUse] = []
        curves: dict[str, list[dict[str, float]]] = {}
        resumed: dict[str, int] = {}

        given = self._expert_path()
        if given is not None:
            expert_path, origin = given
            weights.append(WeightUse("expert syncnet", str(expert_path), sha256_file(expert_path), origin))  # type: ignore[arg-type]
            expert_steps = 0
        else:
            share = SCHEDULES[budget.preset].expert_time_share
            e_deadline = None if deadline is None else start + share * (deadline - start)
            er = train_expert(train, held_out, expert_settings, work / "expert", ctx.device, precision,  # type: ignore[arg-type]
                              ctx.seed, e_deadline, progress)
            expert_path = er.checkpoint
            expert_steps = er.step
            resumed["expert"] = er.resumed_from
            curves["expert"], curves["expert_eval"] = er.curve, er.eval_curve
            last_eval = er.eval_curve[-1]["eval_loss"] if er.eval_curve else float("nan")
            notes.append(f"expert: {er.step} steps (batch {expert_settings.batch_size}), eval BCE {last_eval:.3f}"
                         + (" - stopped by the time budget" if er.stopped == "deadline" else ""))
            weights.append(WeightUse("expert syncnet", str(expert_path), sha256_file(expert_path),
                                     "trained-by-suite", f"{er.step} steps"))
        gr = train_generator(train, held_out, expert_path, gen_settings, work / "generator", ctx.device,
                             precision, ctx.seed, deadline, progress)  # type: ignore[arg-type]
        curves["generator"], curves["generator_eval"] = gr.curve, gr.eval_curve
        resumed["generator"] = gr.resumed_from
        notes.append(f"generator: {gr.step} steps (batch {gen_settings.batch_size}, "
                     f"{'hq + quality discriminator' if gen_settings.gan else 'plain'}), final syncnet_wt "
                     f"{gr.syncnet_wt}" + (" - stopped by the time budget" if gr.stopped == "deadline" else ""))
        schedule = SCHEDULES[budget.preset]
        generator_file, role_note = gr.checkpoint, f"{gr.step} steps"
        if schedule.bn_recompute_batches > 0:
            from methods.wav2lip.batchnorm import recomputed_checkpoint

            n = schedule.bn_recompute_batches
            generator_file = recomputed_checkpoint(gr.checkpoint, train, n, gen_settings.batch_size, ctx.seed,
                                                   ctx.device)
            role_note += f", BatchNorm statistics recomputed on {n} batches"
            notes.append(f"{budget.preset} budget: a pipeline smoke test, not a lip-sync model (generator lr "
                         f"{gen_settings.lr:g}, BatchNorm statistics recomputed on {n} training batches of "
                         f"{gen_settings.batch_size} for the final weights; see docs/wav2lip.md)")
        use = self._load_generator(generator_file, "trained-by-suite", role_note)
        if gen_settings.gan:
            disc = gr.checkpoint.with_name("disc_" + gr.checkpoint.name)
            if disc.is_file():
                weights.append(WeightUse("quality discriminator", str(disc), sha256_file(disc), "trained-by-suite"))
        return FitReport(
            weights=(use, *weights), steps=expert_steps + gr.step, seconds=time.monotonic() - t0,
            steps_by_part={"expert": expert_steps, "generator": gr.step}, resumed_from=resumed,
            budget=budget.describe(), curves=curves, notes="; ".join(notes),
            precision={"train": _record(train_precision, ctx.device),
                       "generate": _record(self.inference_precision(), ctx.device)},
        )

    # ---------------------------------------------------------------------------------- generate

    def inference_options(self):
        from methods.wav2lip.inference import InferenceOptions

        c = self.config
        return InferenceOptions(pads=tuple(c.pads), smooth=not c.nosmooth, box=c.box, batch_size=c.batch_size,
                                precision=self._precision(), blend=c.blend, paste_resize=c.paste_resize,
                                round_prediction=c.round_prediction)  # type: ignore[arg-type]

    def generate(self, request: GenerateRequest) -> GenerateResult:
        import shutil
        import tempfile

        from data_recipes.audio.mel import inference_windows
        from data_recipes.frames import ClipFrames, FileFrames, cyclic
        from data_recipes.media import VideoWriter
        from methods.wav2lip.inference import lipsync_stream
        from metrics.fps import StageTimer

        if self._model is None:
            raise RuntimeError("wav2lip: call fit() before generate() (it loads or trains the weights)")
        options = self.inference_options()
        mel_stage = request.driving.stage("mel")
        mel = mel_stage.array("mel")
        if mel_stage.json("meta").get("pad_mode") != self.config.mel_padding:
            from data_recipes.audio.mel import wav2lip_mel

            mel = wav2lip_mel(request.driving.audio(), self.config.mel_padding)
        n_out = len(inference_windows(mel))
        target = request.target
        n_used = min(n_out, target.num_frames)
        det = has_face = None
        if options.box is None:
            crops = target.stage("wav2lip_crops")
            det, has_face = crops.array("detector_boxes"), crops.array("has_face")
            if not has_face[:n_used].any():
                from data_recipes.quality import InputUnusable

                raise InputUnusable(f"wav2lip: no face in any of the {n_used} frames of target clip {target.id!r}: "
                                    "nothing to lip-sync (give a fixed box with --set wav2lip.box=y1,y2,x1,x2)")
        timer = StageTimer(self.context.device)
        # Streamed (issue 16): target frames are decoded as the output needs them (looped under longer
        # audio) and every output frame goes straight into a lossless file, so memory holds one batch
        # of frames whatever the clip's length and resolution. Decoding and writing are file IO: not
        # timed. The runner copies the file into its generated-video cache and removes the folder.
        folder = Path(tempfile.mkdtemp(prefix="talkbench-wav2lip-"))
        h, w = target.size
        try:
            path = folder / "frames.mkv"
            with VideoWriter(path, fps=25, lossless=True) as writer:
                out = lipsync_stream(self._model, cyclic(ClipFrames(target, 0, n_used), n_out), n_used, (h, w), mel,
                                     lambda _i, frame: writer.write(frame), det, has_face, options,
                                     self.context.device, timer=timer, progress=self.context.progress)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        info: dict[str, Any] = {"faithful": options.faithful, "num_mel_windows": n_out,
                                "looped": n_out > target.num_frames, "precision": options.precision,
                                "boxes": out.boxes.tolist()}  # x1, y1, x2, y2 pasted per output frame
        frames = FileFrames(path, out.count, h, w, lossless=True, owned=folder)
        return GenerateResult(frames=frames, timings=dict(timer.seconds),
                              frames_without_face=out.frames_without_face, info=info)
