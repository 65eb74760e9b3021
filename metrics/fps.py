"""Speed: the timing protocol methods follow, and the fps metric computed from its timings.

Protocol: file IO is outside every timed stage; each stage is timed with a monotonic clock after a
CUDA synchronisation on entry and exit (so asynchronous kernels are charged to the stage that queued
them); warm-up runs happen before the first timed request (see `warm_up` and `WarmTimer`).
fps = frames / sum of stage seconds. The hardware fingerprint goes into the run manifest next to
the figure. The fps score's extra carries the per-stage breakdown (seconds, share, frames/s).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from metrics.base import Metric, MetricSpec, Sample, Score, ValueSpec

T = TypeVar("T")


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

    def timings(self) -> dict[str, float]:
        """A copy of the per-stage seconds, for `GenerateResult.timings`."""
        return dict(self.seconds)


def warm_up(fn: Callable[[], object], runs: int = 2) -> None:
    """Run `fn` a few times untimed (allocator, kernel selection, torch.compile, caches)."""
    for _ in range(runs):
        fn()


class WarmTimer:
    """Times a method's generate work, warming up before the first timed call only.

    A method keeps one per instance and calls `run(work)` in `generate`, where `work(timer)` does
    the compute under `with timer(stage): ...` blocks. The first call runs `work` `warmup_runs`
    times with a throwaway timer (on the same input: the simplest warm-up that hits the same kernel
    shapes), then once timed; later calls are timed directly. Returns (result, per-stage seconds).
    """

    def __init__(self, device: str = "cpu", warmup_runs: int = 1):
        self.device = device
        self.warmup_runs = warmup_runs
        self.warmed = False

    def run(self, work: Callable[[StageTimer], T]) -> tuple[T, dict[str, float]]:
        if not self.warmed:
            warm_up(lambda: work(StageTimer(self.device)), self.warmup_runs)
            self.warmed = True
        timer = StageTimer(self.device)
        result = work(timer)
        return result, timer.timings()


def stage_breakdown(timings: dict[str, float], frames: int) -> dict[str, dict[str, float]]:
    """Per stage: seconds, share of the total, and frames/s if that stage alone were the cost."""
    total = sum(timings.values())
    return {k: {"seconds": float(v), "share": float(v / total) if total > 0 else math.nan,
                "fps": float(frames / v) if v > 0 else math.inf}
            for k, v in timings.items()}


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
        n = len(sample.generated)
        if not sample.timings:
            return {"fps": Score.missing("not_applicable", "method reported no timings")}
        bad = {k: v for k, v in sample.timings.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
        if bad:
            return {"fps": Score.missing("failed", f"invalid stage timings {bad}")}
        total = float(sum(sample.timings.values()))
        if total <= 0:
            return {"fps": Score.missing("not_applicable", "no measurable compute (returns stored frames)")}
        return {"fps": Score.ok(n / total, stages={k: float(v) for k, v in sample.timings.items()}, frames=n,
                                seconds=total, breakdown=stage_breakdown(dict(sample.timings), n))}
