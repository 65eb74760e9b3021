"""Fixtures of the report tests: a small fixture run, a real `bench run` of the baselines, reports.

Both runs use the same temporary cache (their clips are the same segments of the demo video, so the
recipe stages are computed once) and never touch ~/.cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def report_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


def _isolated(tmp: Path) -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    mp.setenv("TALKBENCH_CACHE", str(tmp / "cache"))
    mp.setenv("TALKBENCH_WEIGHTS", str(tmp / "weights"))
    return mp


@pytest.fixture(scope="session")
def fixture_run(report_tmp) -> Path:
    """The run folder of tests/reports/fixture_run.py (real frames, the fixture's own numbers)."""
    from tests.reports import fixture_run as fr

    mp = _isolated(report_tmp)
    try:
        return fr.build(report_tmp / "runs", report_tmp / "cache")
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def fixture_report(fixture_run, report_tmp) -> Path:
    """report.html of `fixture_run`, written into its own folder."""
    from reports.build import build_report

    return build_report([fixture_run], report_tmp / "fixture-report")


@pytest.fixture(scope="session")
def real_run(report_tmp) -> Path:
    """A real `bench run` (bench.runner.run) of the baselines on two demo clips, one named
    `<script>alert(1)</script>`, with PSNR, LSE (unavailable here: no SyncNet weights) and fps."""
    from bench.cache import Cache
    from bench.config import RunConfig
    from bench.progress import Progress
    from bench.runner import run
    from data_recipes import datasets
    from tests.reports import xss_dataset

    mp = _isolated(report_tmp)
    mp.setitem(datasets.DATASETS, xss_dataset.NAME, xss_dataset.spec())
    try:
        config = RunConfig(dataset=xss_dataset.NAME, methods=("reference", "frozen"), metrics=("psnr", "lse", "fps"),
                           runs_dir=report_tmp / "runs", report=False, preview_videos=True)
        outcome = run(config, command=["bench", "run", "--dataset", xss_dataset.NAME], progress=Progress.off(),
                      cache=Cache(report_tmp / "cache"))
    finally:
        mp.undo()
    return outcome.run_dir


@pytest.fixture(scope="session")
def real_report(real_run, report_tmp) -> Path:
    from reports.build import build_report

    return build_report([real_run], report_tmp / "real-report")
