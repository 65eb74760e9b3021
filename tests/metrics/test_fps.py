"""The timing protocol: stage accounting, CUDA synchronisation only on CUDA devices, warm-up, fps."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cache import Cache
from bench.progress import Progress
from metrics import fps as fps_mod
from metrics.base import MetricContext, Sample
from metrics.fps import FPS, FPSConfig, StageTimer, WarmTimer, stage_breakdown


class FakeClock:
    """perf_counter stand-in: time moves only when the fake work says so (no sleeps, exact numbers)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(fps_mod.time, "perf_counter", c)
    return c


@pytest.fixture()
def syncs(monkeypatch):
    import torch

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(str(device)))
    return calls


class FakeMethod:
    """Does known amounts of 'work' per stage per frame; counts how often it ran."""

    def __init__(self, clock: FakeClock, device: str = "cpu"):
        self.clock, self.runs = clock, 0
        self.timer = WarmTimer(device, warmup_runs=2)

    def generate(self, n: int) -> tuple[np.ndarray, dict[str, float]]:
        def work(timer: StageTimer) -> np.ndarray:
            self.runs += 1
            with timer("features"):
                self.clock.work(0.001 * n)
            self.clock.work(5.0)               # file IO between stages: not timed
            for _ in range(2):                 # a stage entered twice accumulates
                with timer("model"):
                    self.clock.work(0.01 * n)
            return np.zeros((n, 4, 4, 3), np.uint8)

        return self.timer.run(work)


def test_stages_accumulate_and_untimed_work_is_excluded(clock, syncs):
    m = FakeMethod(clock)
    frames, timings = m.generate(50)
    assert timings == pytest.approx({"features": 0.05, "model": 1.0})
    assert m.runs == 3                         # two warm-up runs, then the timed one
    frames, timings = m.generate(10)
    assert m.runs == 4                         # warmed once per instance
    assert timings == pytest.approx({"features": 0.01, "model": 0.2})
    assert syncs == []                         # CPU: never synchronises CUDA


def test_cuda_synchronises_on_entry_and_exit_of_every_stage(clock, syncs):
    timer = StageTimer("cuda:0")
    with timer("model"):
        clock.work(0.5)
        assert syncs == ["cuda:0"]
    with timer("paste_back"):
        clock.work(0.25)
    assert syncs == ["cuda:0"] * 4
    assert timer.total == pytest.approx(0.75)


def test_a_failing_stage_is_still_charged(clock, syncs):
    timer = StageTimer("cpu")
    with pytest.raises(RuntimeError):
        with timer("model"):
            clock.work(0.3)
            raise RuntimeError("boom")
    assert timer.seconds == pytest.approx({"model": 0.3})


def _sample(n: int, timings) -> Sample:
    return Sample("r", "self", np.zeros((n, 4, 4, 3), np.uint8), None, np.zeros(n * 640, np.float32), None,  # type: ignore[arg-type]
                  timings=timings)


def test_fps_metric_divides_frames_by_stage_seconds(tmp_path, clock):
    m = FakeMethod(clock)
    frames, timings = m.generate(50)
    metric = FPS(FPSConfig(), MetricContext(tmp_path, Cache(tmp_path / "c"), Progress.off()))
    s = metric.score(_sample(len(frames), timings))["fps"]
    assert s.status == "ok" and s.value == pytest.approx(50 / 1.05)
    br = s.extra["breakdown"]
    assert br["model"]["share"] == pytest.approx(1.0 / 1.05) and br["features"]["fps"] == pytest.approx(1000.0)
    assert metric.score(_sample(5, {}))["fps"].status == "not_applicable"
    assert metric.score(_sample(5, {"model": 0.0}))["fps"].status == "not_applicable"
    assert metric.score(_sample(5, {"model": float("nan")}))["fps"].status == "failed"


def test_breakdown_shares_sum_to_one():
    br = stage_breakdown({"a": 1.0, "b": 3.0}, 8)
    assert sum(v["share"] for v in br.values()) == pytest.approx(1.0)
    assert br["b"]["fps"] == pytest.approx(8 / 3)


def test_fps_rows_carry_the_load_measured_around_generate_and_warn_when_busy(tmp_path, monkeypatch):
    from bench import hardware
    from metrics.fps import attach_load, machine_load

    monkeypatch.setattr(hardware, "cores", lambda: 2)
    metric = FPS(FPSConfig(), MetricContext(tmp_path, Cache(tmp_path / "c"), Progress.off()))
    quiet = _sample(10, {"model": 1.0})
    attach_load(quiet, {"load1_before": 0.4, "load1_after": 1.9, "cores": 2, "measured": "around generate"})
    load = metric.score(quiet)["fps"].extra["load"]
    assert load["busy"] is False and "warning" not in load and load["load1_after"] == 1.9
    assert load["measured"] == "around generate"
    busy = _sample(10, {"model": 1.0})
    attach_load(busy, {"load1_before": 7.9, "load1_after": 8.2, "cores": 2})
    load = metric.score(busy)["fps"].extra["load"]
    assert load["busy"] is True and "load average 8.20 on 2 cores" in load["warning"]
    # without a measurement from the runner: the load now, said to be read at scoring time
    monkeypatch.setattr(fps_mod.os, "getloadavg", lambda: (3.0, 1.0, 1.0))
    load = metric.score(_sample(10, {"model": 1.0}))["fps"].extra["load"]
    assert load["measured"] == "at scoring time" and load["busy"] is True and load["load1_before"] == 3.0
    assert machine_load(None, None, 2)["busy"] is None
    # the threshold is the metric's setting
    assert machine_load(2.4, None, 2, busy_per_core=1.25)["busy"] is False
    assert machine_load(2.6, None, 2, busy_per_core=1.25)["busy"] is True
