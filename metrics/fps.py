"""Speed: the timing protocol methods follow, and the fps metric computed from its timings.

Protocol: file IO is outside every timed stage; each stage is timed with a monotonic clock after a
CUDA synchronisation on entry and exit (so asynchronous kernels are charged to the stage that queued
them); warm-up runs happen before the first timed request (see `warm_up`). fps = frames / sum of
stage seconds. The hardware fingerprint goes into the run manifest next to the figure.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class StageTimer:
    """Accumulates seconds per named stage: `with timer("model"): ...`."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def warm_up(fn: Callable[[], object], runs: int = 2) -> None:
    """Run `fn` a few times untimed (allocator, kernel selection, torch.compile, caches)."""
    for _ in range(runs):
        fn()


@dataclass(frozen=True)
class FPSConfig:
    pass


class FPS(Metric):
    spec = MetricSpec(
        name="fps",
        description="generated frames per second of method compute (sum of timed stages; file IO excluded)",
        values=(ValueSpec("fps", "higher", "frames/s", "frames / seconds of timed stages"),),
        config=FPSConfig,
    )

    def score(self, sample: Sample) -> dict[str, Score]:
        total = float(sum(sample.timings.values()))
        n = len(sample.generated)
        if not sample.timings:
            return {"fps": Score.missing("not_applicable", "method reported no timings")}
        if total <= 0:
            return {"fps": Score.missing("not_applicable", "no measurable compute (returns stored frames)")}
        return {"fps": Score.ok(n / total, stages={k: float(v) for k, v in sample.timings.items()}, frames=n)}
