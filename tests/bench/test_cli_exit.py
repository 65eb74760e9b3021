"""`bench run` exit codes: a script or CI job can tell a run with failures from a clean one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import cli
from bench.runner import RunOutcome


def _results(statuses: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "request_id": r, "status": s, "reason": why} for m, r, s, why in statuses])


def test_clean_and_unavailable_cells_are_not_failures():
    results = _results([("wav2lip", "a", "ok", ""), ("wav2lip", "a", "unavailable", "no syncnet_v2.model"),
                        ("frozen", "a", "not_applicable", "cross-driven")])
    assert cli.run_failures(results, {"clip_errors": {}}) == []


def test_failed_rows_and_clips_are_summarised_once_per_reason():
    results = _results([("wav2lip", "a", "failed", "fit failed (dataset): IndexError: x"),
                        ("wav2lip", "b", "failed", "fit failed (dataset): IndexError: x"),
                        ("wav2lip", "b", "ok", ""), ("frozen", "a", "ok", "")])
    lines = cli.run_failures(results, {"clip_errors": {"vid/test": "faces: no face in any frame"}})
    assert lines == ["clip vid/test: faces: no face in any frame",
                     "wav2lip: 2 request(s): fit failed (dataset): IndexError: x"]


def test_bench_run_exits_non_zero_when_a_request_failed(monkeypatch, tmp_path, capsys):
    def fake_run(config, command=None, progress=None):
        return RunOutcome(Path(tmp_path), _results([("wav2lip", "a", "failed", "generate failed: boom")]),
                          {"clip_errors": {}}, done=1)

    monkeypatch.setattr("bench.runner.run", fake_run)
    code = cli.main(["run", "--methods", "wav2lip", "--dataset", "demo", "--no-report", "--progress", "off"])
    assert code == cli.EXIT_RUN_FAILED != 0
    assert "wav2lip: 1 request(s): generate failed: boom" in capsys.readouterr().err

    monkeypatch.setattr("bench.runner.run", lambda config, command=None, progress=None: RunOutcome(
        Path(tmp_path), _results([("wav2lip", "a", "ok", "")]), {"clip_errors": {}}, done=1))
    assert cli.main(["run", "--methods", "wav2lip", "--dataset", "demo", "--no-report", "--progress", "off"]) == 0
