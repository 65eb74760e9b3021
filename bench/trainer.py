"""The suite's one training loop: a model supplies the step, the trainer does everything around it.

The split is nerfstudio's Trainer / Model: a *task* knows its networks, data, losses and optimisers;
`train()` owns the loop from the resumed step to the target, precision (bench.precision), checkpoints
(every N steps, every M wall seconds, on SIGINT / SIGTERM and at the end; atomic; the last one kept),
resume and continue, the budget's deadline, the progress bar, curves and previews.

A task (duck-typed; only the first three members are required):

    state() -> dict            state dicts of modules / optimizers / schedulers / scalers and counters:
                               tensors and plain types only (loadable with torch.load(weights_only=True))
    load_state(state) -> None
    step(i, autocast) -> dict  the i-th optimisation step (0-based: i steps are done before it), backward
                               and optimizer step included; returns logged scalars, "loss" among them.
                               `autocast` is the precision's autocast region: `with autocast:` or
                               `with autocast():` (both work, and it may be entered several times)
    evaluate(n) -> dict        held-out metrics after n steps (no grad)
    preview(n) -> uint8 (H, W, 3) RGB array or None
    begin(n) -> None           called once before the first step of a run that trains (after any
                               resume): the place for expensive set-up a finished fit never needs

Determinism: a task that draws its randomness from the step index, or keeps its generators' states
in `state()`, trains identically whether it ran N steps and was continued to 2N, or ran 2N at once.
Evaluations must not change what training does, except on the steps the task schedules them for
(`TrainSettings.eval_every`); the extra evaluation at the end of a run is a report only.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Mapping, Protocol, runtime_checkable

from bench.precision import Precision, choose

if TYPE_CHECKING:
    from bench.progress import Progress

CHECKPOINT = "trainer.pt"
CURVES = "curves.json"
PREVIEWS = "previews"
FORMAT = 1


def _now() -> float:
    """The trainer's clock (deadline, checkpoint timing, seconds); tests replace it."""
    return time.monotonic()


@runtime_checkable
class Task(Protocol):
    """What a model supplies to `train` (see the module docstring for the optional members)."""

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def step(self, step: int, autocast: "Autocast") -> Mapping[str, float]: ...


@dataclass(frozen=True)
class TrainSettings:
    """How `train` runs a task.

    steps: the target step count (a checkpoint with fewer continues to it; with as many or more, done);
    checkpoint_every: steps between checkpoints (0: none by count);
    checkpoint_seconds: wall seconds between checkpoints (0: after every step; None: none by time);
    eval_every: steps between `evaluate` calls (0: none by count); eval_first: also after step 1;
    eval_at_end: also evaluate when a run stops (steps or deadline) on a step not yet evaluated;
    log_every: curve rows average this many steps' scalars (a partial row closes each run);
    preview_every: steps between `preview` images (0: only at the end of a run, when the task has one);
    label: the progress bar's text; raise_on_interrupt: after SIGINT / SIGTERM and the checkpoint,
    raise `Interrupted` (a KeyboardInterrupt, so the runner records "interrupted"), else return.
    """

    steps: int
    checkpoint_every: int = 1000
    checkpoint_seconds: float | None = 180.0
    eval_every: int = 0
    eval_first: bool = False
    eval_at_end: bool = True
    log_every: int = 1
    preview_every: int = 0
    label: str = "train"
    raise_on_interrupt: bool = True


@dataclass
class TrainResult:
    """What a call to `train` did.

    steps_done: the step count reached (= the last checkpoint's); resumed_from: the step this run
    started at (0: fresh); seconds: training wall time over every run of this folder; stopped:
    "steps" | "deadline" | "interrupted" | "done-before" (nothing left to train); curves:
    {"train": rows of {"step", scalars...}, "eval": rows of {"step", metrics...}}; last_eval: the
    latest evaluation ({} if none); checkpoint: the trainer's state file; previews: image files.
    """

    steps_done: int
    resumed_from: int
    seconds: float
    stopped: str
    curves: dict[str, list[dict[str, float]]]
    last_eval: dict[str, float]
    checkpoint: Path | None
    precision: Precision
    previews: list[Path] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"

    @property
    def steps_this_run(self) -> int:
        return self.steps_done - self.resumed_from


class Interrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped training after a checkpoint; `result` says where."""

    def __init__(self, result: TrainResult, signum: int):
        super().__init__(f"training interrupted by signal {signum} at step {result.steps_done} (checkpointed)")
        self.result = result
        self.signum = signum


class Autocast:
    """The autocast region of a precision on a device. Use as `with autocast:` or `with autocast():`;
    each entry opens a fresh region, so it can be entered several times per step and nested."""

    def __init__(self, precision: Precision, device: str):
        self.precision = precision
        self.device = device
        self._open: list[ContextManager] = []

    @property
    def enabled(self) -> bool:
        return self.precision.name != "fp32"

    def __call__(self) -> ContextManager:
        return self.precision.autocast(self.device)

    def __enter__(self) -> Any:
        ctx = self()
        self._open.append(ctx)
        return ctx.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._open.pop().__exit__(*exc)


def grad_scaler(precision: Precision, device: str):
    """A GradScaler where the precision needs one (fp16 AMP on CUDA), else None (bf16 needs none).
    The task owns it and keeps its state_dict in `state()`."""
    if precision.name == "amp" and str(device).startswith("cuda"):
        import torch

        return torch.amp.GradScaler("cuda")
    return None


def resolve_precision(precision: Precision | str, device: str) -> Precision:
    """A chosen `Precision` as is; a request ("auto", "fp32", "bf16", "amp") through the hardware rule."""
    return precision if isinstance(precision, Precision) else choose(device, precision, faithful=False)


# ------------------------------------------------------------------------------ checkpoint files


def checkpoint_path(folder: Path) -> Path:
    return Path(folder) / CHECKPOINT


def read_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The trainer checkpoint in `folder` ({"format", "step", "task", "trainer"}), or None.
    Read with weights_only=True (bench.safe_load): a checkpoint holds tensors and plain types only."""
    from bench.safe_load import load_weights

    path = checkpoint_path(folder)
    if not path.is_file():
        return None
    return load_weights(path, what="trainer checkpoint")


def checkpoint_step(folder: Path) -> int:
    """The step of the checkpoint in `folder` (0 when there is none)."""
    ckpt = read_checkpoint(folder)
    return int(ckpt["step"]) if ckpt else 0


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through bench.cache.atomic_write_with: never a partial checkpoint on disk."""
    import torch

    from bench.cache import atomic_write_with

    atomic_write_with(path, lambda f: torch.save(obj, f))


def _write_json(path: Path, data: Any) -> None:
    from bench.cache import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1))


# ------------------------------------------------------------------------------ signals


class StopSignals:
    """SIGINT / SIGTERM ask the loop to stop after the current step (then it checkpoints); a second
    signal raises KeyboardInterrupt at once (with `again`, formatted with the signal number).
    Installed only in the main thread (Python allows no other) and restored on exit, so nothing
    outlives the call. bench.distributed's followers use it to leave the decision to the leader."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self, again: str = "signal {signum} again: stopping without a checkpoint") -> None:
        self.received: int | None = None
        self.again = again
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(self.again.format(signum=signum))
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            # getsignal gives None for a handler not set from Python; the default is the safe restore.
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


# ------------------------------------------------------------------------------ curves


class _Curves:
    """Train rows average `every` steps of every scalar; the running sums live in the checkpoint so
    a resumed run averages exactly as a straight one would."""

    def __init__(self, every: int, saved: Mapping[str, Any] | None):
        saved = saved or {}
        self.every = max(1, int(every))
        self.train: list[dict[str, float]] = [dict(r) for r in saved.get("train", [])]
        self.eval: list[dict[str, float]] = [dict(r) for r in saved.get("eval", [])]
        self.sums: dict[str, float] = {k: float(v) for k, v in saved.get("sums", {}).items()}
        self.count = int(saved.get("count", 0))

    def add(self, step: int, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        if step % self.every == 0:
            self.flush(step)

    def flush(self, step: int) -> None:
        if self.count:
            self.train.append({"step": float(step), **{k: v / self.count for k, v in self.sums.items()}})
            self.sums, self.count = {}, 0

    def state(self) -> dict[str, Any]:
        return {"train": self.train, "eval": self.eval, "sums": dict(self.sums), "count": self.count}

    def export(self) -> dict[str, list[dict[str, float]]]:
        return {"train": list(self.train), "eval": list(self.eval)}


def _scalars(values: Mapping[str, Any], where: str) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{where} returned {k}={v!r}: logged values must be numbers") from e
    return out


# ------------------------------------------------------------------------------ the loop


def train(task: Task, folder: Path, settings: TrainSettings, *, device: str = "cpu",
          precision: Precision | str = "fp32", deadline: float | None = None,
          progress: "Progress | None" = None) -> TrainResult:
    """Train `task` in `folder` up to `settings.steps`, resuming from the checkpoint there.

    `precision`: a `Precision` from bench.precision.choose, or a request resolved with it on `device`.
    `deadline`: a time.monotonic() value; the loop stops before a step that would start after it.
    SIGINT / SIGTERM (main thread): finish the step, checkpoint, then raise `Interrupted` (see
    TrainSettings.raise_on_interrupt). The task is left holding the newest state in every case
    (resumed or trained), so the caller can export or use its weights.
    """
    if settings.steps < 0:
        raise ValueError(f"steps must be >= 0, got {settings.steps}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prec = resolve_precision(precision, device)
    ckpt = read_checkpoint(folder)
    step = 0
    saved: dict[str, Any] = {}
    if ckpt is not None:
        if int(ckpt.get("format", 0)) != FORMAT:
            raise ValueError(f"{checkpoint_path(folder)}: trainer checkpoint format {ckpt.get('format')}, "
                             f"expected {FORMAT}; delete the folder to train again")
        task.load_state(ckpt["task"])
        step = int(ckpt["step"])
        saved = dict(ckpt.get("trainer", {}))
    del ckpt  # may hold a large state: free it before training
    resumed_from = step
    curves = _Curves(settings.log_every, saved.get("curves"))
    seconds_before = float(saved.get("seconds", 0.0))
    last_eval: dict[str, float] = dict(saved.get("last_eval", {}))
    eval_step = int(saved.get("eval_step", -1))
    previews: list[Path] = sorted((folder / PREVIEWS).glob("step*.png")) if (folder / PREVIEWS).is_dir() else []

    def result(stopped: str, seconds: float) -> TrainResult:
        path = checkpoint_path(folder)
        return TrainResult(step, resumed_from, seconds, stopped, curves.export(), dict(last_eval),
                           path if path.is_file() else None, prec, list(previews))

    if step >= settings.steps:
        return result("done-before", seconds_before)

    begin = getattr(task, "begin", None)
    if callable(begin):
        begin(step)
    evaluate: Callable[[int], Mapping[str, float]] | None = getattr(task, "evaluate", None)
    preview: Callable[[int], Any] | None = getattr(task, "preview", None)
    autocast = Autocast(prec, device)
    t_start = _now()
    last_save = t_start
    dirty = False   # anything the checkpoint on disk does not hold yet

    def save() -> None:
        nonlocal dirty, last_save
        seconds = seconds_before + (_now() - t_start)
        trainer_state = {"curves": curves.state(), "seconds": seconds, "last_eval": dict(last_eval),
                         "eval_step": eval_step, "precision": prec.name}
        _atomic_torch_save({"format": FORMAT, "step": step, "task": task.state(), "trainer": trainer_state},
                           checkpoint_path(folder))
        _write_json(folder / CURVES, {"step": step, **curves.export()})
        dirty, last_save = False, _now()

    def run_eval() -> None:
        nonlocal last_eval, eval_step
        if evaluate is None:
            return
        last_eval = _scalars(evaluate(step), "evaluate")
        eval_step = step
        curves.eval.append({"step": float(step), **last_eval})

    def run_preview() -> None:
        if preview is None:
            return
        image = preview(step)
        if image is not None:
            previews.append(_write_preview(folder, step, image))

    stopped = "steps"
    signals = StopSignals()
    bar = progress.task(settings.label, total=settings.steps) if progress is not None else None
    try:
        with signals:
            if bar is not None and step:
                bar.advance(step)
            while step < settings.steps:
                if signals.received is not None:
                    stopped = "interrupted"
                    break
                if deadline is not None and _now() >= deadline:
                    stopped = "deadline"
                    break
                values = _scalars(task.step(step, autocast), "step")
                if "loss" not in values:
                    raise KeyError("a task's step must return a 'loss' value")
                step += 1
                dirty = True
                curves.add(step, values)
                if bar is not None:
                    bar.advance(1, loss=values["loss"])
                if evaluate is not None and ((settings.eval_every and step % settings.eval_every == 0)
                                             or (settings.eval_first and step == 1)):
                    run_eval()
                if settings.preview_every and step % settings.preview_every == 0:
                    run_preview()
                if (settings.checkpoint_every and step % settings.checkpoint_every == 0) or (
                        settings.checkpoint_seconds is not None
                        and _now() - last_save >= settings.checkpoint_seconds):
                    save()
            if stopped == "steps" and signals.received is not None:
                stopped = "interrupted"   # the signal came during the last step
            if curves.count:
                curves.flush(step)
                dirty = True
            if step > resumed_from and stopped != "interrupted":
                if evaluate is not None and settings.eval_at_end and eval_step != step:
                    run_eval()
                    dirty = True
                if preview is not None and (not previews or previews[-1].name != _preview_name(step)):
                    run_preview()
            if dirty or not checkpoint_path(folder).is_file():
                save()
            if signals.received is not None:
                stopped = "interrupted"   # a signal during the final evaluation or save is still honoured
    except BaseException as e:
        if bar is not None:
            bar.__exit__(type(e), e, None)   # "interrupted" for a KeyboardInterrupt, else "failed"
            bar = None
        raise
    finally:
        if bar is not None:
            bar.status = {"steps": "done", "deadline": "stopped at the deadline",
                          "interrupted": "interrupted"}[stopped]
            bar.__exit__(None, None, None)
    out = result(stopped, seconds_before + (_now() - t_start))
    if stopped == "interrupted" and settings.raise_on_interrupt:
        raise Interrupted(out, signals.received or signal.SIGINT)
    return out


def _preview_name(step: int) -> str:
    return f"step{step:09d}.png"


def _write_preview(folder: Path, step: int, image: Any) -> Path:
    import cv2
    import numpy as np

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"preview must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    path = folder / PREVIEWS / _preview_name(step)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(arr[..., ::-1]))
    if not ok:
        raise ValueError(f"could not encode the preview of step {step}")
    from bench.cache import atomic_write_bytes

    atomic_write_bytes(path, data.tobytes())
    return path
