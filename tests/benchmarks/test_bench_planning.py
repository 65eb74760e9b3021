"""Planning speed of a CMLR-sized run: requests with their clip lookups (102,076 clips, 20,418 cross
pairs) and the prepare failure report (612k stage rows, 1% failed clips).

Run with `pytest tests/benchmarks/test_bench_planning.py --benchmark-only`; numbers go into
docs/BENCHMARKS.md (with scripts/measure_planning.py, which also hashes a 204k-file tree).
"""

from __future__ import annotations

from pathlib import Path


def _dataset():
    from scripts.measure_planning import dataset

    return dataset(102_076, Path("/nonexistent"))


def test_bench_build_requests_cmlr_scale(benchmark):
    from bench.runner import build_requests

    ds = _dataset()
    reqs = benchmark(build_requests, ds, "test", True)
    assert len(reqs) == 2 * len(ds.split("test"))


def test_bench_failure_report_cmlr_scale(benchmark):
    from data_recipes.prepare import PrepareReport, StageResult

    rows = []
    for i in range(102_076):
        bad = i % 100 == 0
        rows += [StageResult(f"c{i}", "normalise", "cached"),
                 StageResult(f"c{i}", "faces", "failed" if bad else "cached", 0.0, "ValueError: no face\ntb" if bad else "")]
        rows += [StageResult(f"c{i}", s, "skipped" if bad else "cached", 0.0, "faces failed" if bad else "")
                 for s in ("wav2lip_crops", "mel", "head_frame", "head_crops")]

    def read_all():
        report = PrepareReport(list(rows))
        errors: dict[str, str] = {}
        errors.update(report)
        return errors

    assert len(benchmark(read_all)) == 1021
