"""A tiny trainable method for the runner's concurrency, shard and scale tests.

`tinted` has a dataset part ("shared") and a subject part ("person"), like a person-specific 3D method,
needs only the normalise stage, and trains through `bench.trainer` (checkpoints, SIGINT / SIGTERM
handling, resume) with a one-number-per-channel "model" that moves towards the mean colour of the
train frames. Tests register it with `register(monkeypatch)` in-process, or run it in a `bench`
subprocess through `CLI` (a `python -c` line that registers it and calls `bench.cli.main`).

Hooks for tests, read from the environment of the process that trains:
- TINTED_LOG: a file that gets one line "<pid> <part> <step>" per training step (and "<pid> <part>
  fit" when a fit starts), so a test sees across processes what was trained, once or twice;
- TINTED_GATE: a file the fit waits for before training (it touches "<gate>.waiting" while it
  waits), so a test can hold a fit (and its locks) open while it starts another process.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.method import FitReport, GenerateResult, Method, MethodSpec, PartSpec, WeightUse

CLI = ("import sys, methods; methods.BUILTIN_METHODS['tinted'] = 'tests.bench.tiny_methods:Tinted'; "
       "from bench.cli import main; sys.exit(main(sys.argv[1:]))")


def register(monkeypatch) -> None:
    import methods

    monkeypatch.setitem(methods.BUILTIN_METHODS, "tinted", f"{__name__}:Tinted")


@dataclass(frozen=True)
class TintedConfig:
    rate: float = 0.5          # fraction of the remaining distance one step covers
    step_seconds: float = 0.0  # sleep per step: lets a test signal a fit while it trains


class _Task:
    """The bench.trainer task: state = the tint so far; a step moves it towards the target."""

    def __init__(self, target: np.ndarray, config: TintedConfig, part: str):
        self.target, self.config, self.part = target, config, part
        self.tint = np.zeros(3)

    def state(self) -> dict:
        return {"tint": self.tint.tolist()}

    def load_state(self, state: dict) -> None:
        self.tint = np.array(state["tint"], dtype=np.float64)

    def step(self, i: int, autocast) -> dict:
        log = os.environ.get("TINTED_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {self.part} {i}\n")
        if self.config.step_seconds:
            time.sleep(self.config.step_seconds)
        self.tint = self.tint + self.config.rate * (self.target - self.tint)
        return {"loss": float(np.abs(self.target - self.tint).mean())}


def _wait_for_gate() -> None:
    gate = os.environ.get("TINTED_GATE")
    if not gate:
        return
    Path(gate + ".waiting").touch()
    while not Path(gate).exists():
        time.sleep(0.05)


class Tinted(Method):
    spec = MethodSpec(
        name="tinted",
        description="test method: a dataset tint and a per-subject tint, trained by bench.trainer",
        config=TintedConfig,
        stages=("normalise",),
        kind="2d",
        parts=(PartSpec("shared", "dataset", steps=(2, 4, 8)), PartSpec("person", "subject", steps=(2, 4, 8))),
    )

    def __init__(self, config: TintedConfig, context):
        super().__init__(config, context)
        self.tints: dict[str, np.ndarray] = {}

    @classmethod
    def variant(cls, config: TintedConfig) -> str:
        return "" if config.rate == 0.5 else f"rate {config.rate}"   # a non-default rate is another method

    def fit_part(self, part, clips, budget) -> FitReport:
        from bench.trainer import TrainSettings, train

        log = os.environ.get("TINTED_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {part.name} fit\n")
        _wait_for_gate()
        train_clips = [c for c in clips if c.clip.split == "train"] or list(clips)
        target = np.mean([c.frames(0, 4).reshape(-1, 3).mean(axis=0) for c in train_clips], axis=0)
        task = _Task(target, self.config, part.name)
        result = train(task, Path(self.context.work_dir), TrainSettings(steps=budget.steps_for(part),
                       checkpoint_every=1, checkpoint_seconds=None, label=f"tinted {part.name}"),
                       progress=self.context.progress)
        self.tints[part.name] = task.tint
        digest = hashlib.sha256(json.dumps(task.tint.tolist()).encode()).hexdigest()
        return FitReport(weights=(WeightUse(part.name, str(result.checkpoint), digest, "trained-by-suite"),),
                         steps=result.steps_done, steps_by_part={part.name: result.steps_done},
                         resumed_from={part.name: result.resumed_from}, seconds=result.seconds,
                         budget=budget.describe())

    def generate(self, request) -> GenerateResult:
        target = request.target
        n = request.num_frames
        frames = target.frames(0, min(n, target.num_frames))
        frames = frames[np.arange(n) % len(frames)]
        t0 = time.perf_counter()
        tint = 0.5 * (self.tints["shared"] + self.tints["person"])
        audio = request.driving.audio()[: n * 640].reshape(n, 640)
        loud = np.sqrt((audio.astype(np.float64) ** 2).mean(axis=1))[:, None, None, None]
        out = np.clip(np.round(0.8 * frames + 0.2 * tint + 40 * loud), 0, 255).astype(np.uint8)
        return GenerateResult(frames=out, timings={"model": time.perf_counter() - t0})


def demo_config(runs: "Path", **kw) -> "RunConfig":
    """The small run the shard and executor tests compare: baselines + tinted on the demo."""
    from bench.config import RunConfig

    base = dict(dataset="demo", methods=("reference", "frozen", "tinted"), metrics=("psnr", "ssim", "fps"),
                budget="steps=2", runs_dir=runs, report=False, preview_videos=False)
    base.update(kw)
    return RunConfig(**base)


def comparable(df):
    """Rows sorted, provenance dropped: extra holds timings and the load average, commit may move in a
    shared checkout; fps is a measured time, equal only in status."""
    df = df.copy()
    df.loc[df["metric"] == "fps", "value"] = float("nan")
    return (df.drop(columns=["extra", "commit"]).sort_values(["method", "request_id", "metric"])
            .reset_index(drop=True))
