"""Speed of the lip-sync metrics, LMD and fps on real 512x512 frames (may_5s.mp4, 50 frames = 2 s).

Run: pytest tests/benchmarks/test_bench_sync_metrics.py --benchmark-only
Numbers and the machine go into docs/BENCHMARKS.md. SyncNet runs with seeded random
weights in the published layout (syncnet_v2.model is not available here); the compute is identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.cache import Cache
from bench.progress import Progress
from metrics.base import MetricContext, Sample
from tests.metrics.sync_common import decode_clip, save_like_original, seeded_syncnet

N = 50


@pytest.fixture(scope="module")
def clip(shared_data):
    frames, audio = decode_clip(shared_data / "clips" / "may_5s.mp4", N)
    assert frames.shape == (N, 512, 512, 3)
    return frames, audio


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-sync")
    save_like_original(seeded_syncnet(0), root / "weights" / "syncnet_v2.model")
    return root


@pytest.fixture()
def weights_env(workdir, monkeypatch):
    import dataclasses
    import hashlib

    import metrics.sync.metric as sync_metric

    digest = hashlib.sha256((workdir / "weights" / "syncnet_v2.model").read_bytes()).hexdigest()
    monkeypatch.setattr(sync_metric, "SYNCNET_V2", dataclasses.replace(sync_metric.SYNCNET_V2, sha256=digest))
    monkeypatch.setenv("TALKBENCH_WEIGHTS", str(workdir / "weights"))
    monkeypatch.setenv("TALKBENCH_CACHE", str(workdir / "cache"))
    return workdir


def _ctx(root: Path) -> MetricContext:
    (root / "work").mkdir(parents=True, exist_ok=True)
    return MetricContext(work_dir=root / "work", cache=Cache(root / "cache"), progress=Progress.off())


def _run(benchmark, fn, rounds=3):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("protocol", ["lrs", "tracked"])
def test_lse(benchmark, clip, weights_env, protocol):
    """Whole LSE metric on one 2 s video: JPEG round trip (+ face tracking and crop codecs when
    tracked), MFCC, 45 windows through SyncNet in fp32, the 31-shift reduction."""
    from metrics.sync.metric import LSEConfig, LSEMetric

    frames, audio = clip
    metric = LSEMetric(LSEConfig(), _ctx(weights_env))
    sample = Sample("r", "self", frames, frames, audio, None, protocol)  # type: ignore[arg-type]
    scores = _run(benchmark, lambda: metric.score(sample))
    assert scores["LSE-D"].status == "ok"


def test_lse_network_only(benchmark, clip):
    """SyncNet alone on 45 windows of 224x224 inputs (batch 20, fp32): the floor of the metric."""
    import cv2

    from metrics.sync import inputs, lse

    frames, audio = clip
    small = np.stack([cv2.resize(f, (224, 224)) for f in frames])
    pcm = inputs.pcm16(audio)
    mf = lse.mfcc(pcm)
    model = seeded_syncnet(0)
    _run(benchmark, lambda: lse.embed(model, lambda i, j: small[i:j], len(small), mf, len(pcm)))


def test_sync_suite_score(benchmark, clip, weights_env):
    """The suite scorer on one video (tracked protocol, mouth region), from a saved checkpoint."""
    import torch

    from metrics.sync.suite import CHECKPOINT, SuiteSyncConfig, SuiteSyncMetric

    frames, audio = clip
    ctx = _ctx(weights_env)
    torch.save({"state_dict": seeded_syncnet(1).state_dict(), "step": 0}, ctx.work_dir / CHECKPOINT)
    metric = SuiteSyncMetric(SuiteSyncConfig(), ctx)
    sample = Sample("r", "cross", frames, None, audio, None, "tracked")  # type: ignore[arg-type]
    scores = _run(benchmark, lambda: metric.score(sample))
    assert scores["SyncD-suite"].status == "ok"


def test_sync_suite_train_step(benchmark):
    """One head-training step of the suite scorer (128 windows x 31 shifts, bf16 autocast)."""
    import torch

    from metrics.sync import suite

    model = seeded_syncnet(0).train()
    feats = [suite.ClipFeatures("a", torch.randn(295, 256, 6, 6).to(torch.bfloat16),
                                torch.randn(295, 256, 5, 4).to(torch.bfloat16))]
    cfg = suite.SuiteSyncConfig()
    opt = torch.optim.AdamW(suite._heads(model), lr=cfg.lr)
    drop = torch.nn.Dropout(cfg.dropout)
    rng = np.random.default_rng(0)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = suite.matching_loss(model, feats, rng, cfg, drop)
        opt.zero_grad()
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)


def test_sync_suite_trunk_features(benchmark, clip):
    """Caching the frozen trunk's features for 45 training windows (the per-window cost of fit)."""
    import cv2

    from metrics.sync import inputs, lse, suite

    frames, audio = clip
    crops = np.stack([cv2.resize(f, (224, 224)) for f in frames])
    mf = lse.mfcc(inputs.pcm16(audio))
    model = seeded_syncnet(0)
    _run(benchmark, lambda: suite.trunk_features(model, "a", crops, mf))


@pytest.fixture(scope="module")
def prepared(shared_data, workdir):
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    p = Recipe(Cache(workdir / "lmd-cache")).prepare(
        Clip("may", shared_data / "clips" / "may_5s.mp4", subject="may", split="test", start=0.0, end=N / 25))
    p.stage("faces")
    return p


def test_lmd(benchmark, prepared, workdir):
    """LMD on 50 generated 512x512 frames: face tracking on them + the distance (ground truth cached)."""
    from metrics.lmd import LMDConfig, LMDMetric

    frames = prepared.frames()
    sample = Sample("r", "self", frames, frames, np.zeros(len(frames) * 640, np.float32), prepared)
    metric = LMDMetric(LMDConfig(), _ctx(workdir))
    scores = _run(benchmark, lambda: metric.score(sample))
    assert scores["LMD-mouth"].status == "ok"


def test_fps(benchmark, clip, workdir):
    from metrics.fps import FPS, FPSConfig

    frames, audio = clip
    sample = Sample("r", "self", frames, frames, audio, None, timings={"features": 0.1, "model": 0.9})  # type: ignore[arg-type]
    metric = FPS(FPSConfig(), _ctx(workdir))
    benchmark(lambda: metric.score(sample))
