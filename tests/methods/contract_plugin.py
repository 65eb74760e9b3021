"""A third-party-style method for the contract battery, registered through the `talkbench.methods`
entry-point group (the test fakes the entry point). It is made of two parts, like a person-specific
3D method: a dataset part ("shared", a mean colour over every subject's train frames) and a subject
part ("person", a per-subject colour read in the subject's head-crop frame of reference). Each
"training step" moves the estimate a fixed fraction towards its target and is checkpointed, so a
larger budget continues from the last checkpoint and equals a straight run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.availability import Availability
from bench.method import FitReport, GenerateResult, Method, MethodSpec, PartSpec, WeightUse


@dataclass(frozen=True)
class DummyConfig:
    """weights: optional file the dataset part loads instead of training (missing -> unavailable);
    rate: fraction of the remaining distance each step covers."""

    weights: str | None = None
    rate: float = 0.5


def _step_towards(state: np.ndarray, target: np.ndarray, steps: int, rate: float) -> np.ndarray:
    for _ in range(steps):
        state = state + rate * (target - state)
    return state


class DummyPlugin(Method):
    spec = MethodSpec(
        name="dummy_plugin",
        description="contract-battery plugin: a dataset colour part and a per-subject colour part",
        config=DummyConfig,
        stages=("normalise", "faces", "head_crops"),
        kind="3d",
        parts=(PartSpec("shared", "dataset", steps=(2, 4, 8)), PartSpec("person", "subject", steps=(2, 4, 8))),
    )

    def __init__(self, config: DummyConfig, context):
        super().__init__(config, context)
        self.colour: dict[str, np.ndarray] = {}

    @classmethod
    def availability(cls, config: DummyConfig) -> Availability:
        if config.weights is not None and not Path(config.weights).is_file():
            return Availability.no(f"dummy_plugin.weights {config.weights} does not exist")
        return Availability.yes()

    def fit_part(self, part, clips, budget) -> FitReport:
        t0 = time.monotonic()
        if part.name == "shared" and self.config.weights is not None:
            self.colour["shared"] = np.array(json.loads(Path(self.config.weights).read_text()), np.float64)
            return FitReport(weights=(WeightUse("shared", self.config.weights, "-", "user"),), budget=budget.describe())
        train = [c for c in clips if c.clip.split == "train"]
        if not train:
            raise ValueError(f"dummy_plugin: part {part.name} needs train clips")
        if part.name == "person":  # the subject's frame of reference must be one for all its clips
            frames = {json.dumps(c.stage("head_frame").json()["box"]) for c in clips}
            if len(frames) != 1:
                raise ValueError("clips of one subject disagree on the head-crop frame of reference")
        target = np.mean([c.frames(0, 4).reshape(-1, 3).mean(axis=0) for c in train], axis=0)
        ckpt = Path(self.context.work_dir) / "state.json"
        start, state = 0, np.zeros(3)
        if ckpt.is_file():
            saved = json.loads(ckpt.read_text())
            start, state = int(saved["step"]), np.array(saved["state"])
        want = budget.steps_for(part)
        if want > start:
            state = _step_towards(state, target, want - start, self.config.rate)
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": want, "state": state.tolist()}))
            os.replace(tmp, ckpt)
        self.colour[part.name] = state
        steps = max(want, start)
        return FitReport(weights=(WeightUse(part.name, str(ckpt), json.dumps(state.tolist()), "trained-by-suite"),),
                         steps=steps, steps_by_part={part.name: steps}, resumed_from={part.name: start},
                         seconds=time.monotonic() - t0, budget=budget.describe())

    def generate(self, request) -> GenerateResult:
        if set(self.colour) != {"shared", "person"}:
            raise RuntimeError("dummy_plugin: fit both parts before generate")
        target = request.target
        n = request.num_frames
        frames = target.frames(0, min(n, target.num_frames))
        frames = frames[np.arange(n) % len(frames)]          # loop a short target, as methods do
        t0 = time.perf_counter()
        rng = np.random.default_rng(request.seed)
        tint = 0.5 * (self.colour["shared"] + self.colour["person"])
        audio = request.driving.audio()[: n * 640].reshape(n, 640)
        loud = np.sqrt((audio.astype(np.float64) ** 2).mean(axis=1))[:, None, None, None]
        out = 0.8 * frames + 0.2 * tint + 40 * loud + rng.normal(0, 2, frames.shape)
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
        return GenerateResult(frames=out, timings={"model": time.perf_counter() - t0})
