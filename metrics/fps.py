"""Speed: the timing protocol methods follow, and the fps metric computed from its timings.

Protocol: file IO is outside every timed stage; each stage is timed with a monotonic clock after a
CUDA synchronisation on entry and exit (so asynchronous kernels are charged to the stage that queued
them); warm-up runs happen before the first timed request (see `warm_up` and `WarmTimer`).
fps = frames / sum of stage seconds. The hardware fingerprint goes into the run manifest next to
the figure. The fps score's extra carries the per-stage breakdown (seconds, share, frames/s) and the
machine's load while the video was generated (`machine_load`: the 1-minute load average before and
after `generate`, read by the runner and cached with the video), with a warning when the machine was
busy: then other work shared the cores and the figure is lower than the machine can do.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

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


# Where the runner leaves the load measured around `generate` for this metric (Sample.memo key).
LOAD_KEY = "fps.load"
# Busy: more runnable tasks than this many per usable core, on average over the last minute. Our
# own generate accounts for up to one per core (torch's threads), so anything above means other
# work competed for the cores while the video was timed.
BUSY_LOAD_PER_CORE = 1.25


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def machine_load(before: float | None, after: float | None, cores: int,
                 busy_per_core: float = BUSY_LOAD_PER_CORE) -> dict[str, Any]:
    """What an fps row records about the machine's load: the 1-minute load average before and after
    the timed work, the usable cores, and a warning when the larger reading exceeds
    `busy_per_core` x cores."""
    readings = [x for x in (before, after) if x is not None]
    if not readings:
        return {"load1_before": None, "load1_after": None, "cores": cores, "busy": None,
                "warning": "load average unavailable on this platform"}
    peak = max(readings)
    busy = peak > busy_per_core * max(cores, 1)
    out: dict[str, Any] = {"load1_before": before, "load1_after": after, "cores": cores, "busy": busy}
    if busy:
        out["warning"] = (f"machine busy while timed: load average {peak:.2f} on {cores} cores "
                          f"(> {busy_per_core:g} per core); fps is lower than this machine does idle")
    return out


def attach_load(sample: "Sample", load: Mapping[str, Any] | None) -> None:
    """Hand the load measured around `generate` to the fps metric of `sample`."""
    if load:
        sample.memo[LOAD_KEY] = dict(load)


@dataclass(frozen=True)
class FPSConfig:
    """busy_load_per_core: load average per usable core above which an fps row carries a warning."""

    busy_load_per_core: float = BUSY_LOAD_PER_CORE


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
                                seconds=total, breakdown=stage_breakdown(dict(sample.timings), n),
                                load=self._load(sample))}

    def _load(self, sample: Sample) -> dict[str, Any]:
        """The load recorded around `generate`; without one (a caller that did not measure it), the
        load now, marked as read at scoring time."""
        from bench.hardware import cores

        given = sample.memo.get(LOAD_KEY)
        n = cores()
        if isinstance(given, Mapping) and given:
            before, after = given.get("load1_before"), given.get("load1_after")
            out = machine_load(before, after, int(given.get("cores") or n), self.config.busy_load_per_core)
            return {**out, "measured": given.get("measured", "around generate")}
        now = load_average()
        return {**machine_load(now, None, n, self.config.busy_load_per_core), "measured": "at scoring time"}
