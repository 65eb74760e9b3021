"""Report build speed: the whole report of a small real run, and the tables of a CMLR-sized run.

Run with `pytest tests/benchmarks/test_bench_reports.py --benchmark-only`; numbers go into
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
import pytest

METHODS = ("reference", "frozen", "wav2lip", "nerf_head")
VALUES = (("LSE-D", "lse", "lower"), ("LSE-C", "lse", "higher"), ("AV-offset", "lse", "zero"),
          ("PSNR", "psnr", "higher"), ("SSIM", "ssim", "higher"), ("LPIPS", "lpips_alex", "lower"),
          ("LMD", "lmd", "lower"), ("fps", "fps", "higher"))


def cmlr_sized_results(n_requests: int = 20_418, seed: int = 0):
    """A results frame shaped like a full CMLR test run (20,418 clips x 4 methods x 8 values)."""
    import pandas as pd

    from bench.results import _DTYPES, COLUMNS

    rng = np.random.default_rng(seed)
    per_req = len(METHODS) * len(VALUES)
    n = n_requests * per_req
    ids = np.repeat(np.array([f"s{1 + i % 11}/2015/section_{i}" for i in range(n_requests)], dtype=object), per_req)
    cols = {
        "run_id": "bench", "dataset": "cmlr", "split": "test", "request_id": ids, "kind": "self", "clip_id": ids,
        "audio_clip": ids, "subject": "s1", "method": np.tile(np.repeat(METHODS, len(VALUES)), n_requests),
        "metric": np.tile([v[0] for v in VALUES], n_requests * len(METHODS)),
        "family": np.tile([v[1] for v in VALUES], n_requests * len(METHODS)),
        "value": rng.normal(5.0, 1.0, n), "status": "ok", "reason": "", "unit": "",
        "better": np.tile([v[2] for v in VALUES], n_requests * len(METHODS)), "published": True,
        "n_frames": 50, "hardware": "hw", "extra": "{}", "commit": "", "versions": "{}",
    }
    df = pd.DataFrame(cols)[list(COLUMNS)]
    for c in COLUMNS:
        df[c] = df[c].astype(_DTYPES.get(c, "string"))
    return df


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from tests.reports import fixture_run

    tmp = tmp_path_factory.mktemp("bench-report")
    mp = pytest.MonkeyPatch()
    mp.setenv("TALKBENCH_CACHE", str(tmp / "cache"))
    mp.setenv("TALKBENCH_WEIGHTS", str(tmp / "weights"))
    try:
        return fixture_run.build(tmp / "runs", tmp / "cache"), tmp
    finally:
        mp.undo()


def test_bench_build_report_small_run(benchmark, small_run):
    """Full report (tables, charts, 3 strips with frames + mouths, 3 side-by-side videos) of the fixture run."""
    from reports.build import build_report

    run, tmp = small_run
    path = benchmark.pedantic(build_report, args=([run], tmp / "out"), rounds=3, iterations=1)
    assert path.is_file()


def test_bench_tables_cmlr_scale(benchmark):
    """per_request + main_table + per-clip distributions on 653k result rows."""
    from reports import plots
    from reports.tables import main_table, per_request

    df = cmlr_sized_results()
    main_table(per_request(df.head(1000)))  # imports and scipy warm-up outside the timing

    def tables():
        pr = per_request(df)
        table = main_table(pr)
        return plots.distributions(table, pr)

    charts = benchmark.pedantic(tables, rounds=3, iterations=1)
    assert len(charts) == len(VALUES)
