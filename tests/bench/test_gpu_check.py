"""scripts/gpu_check.py: stops with a clear message without CUDA; its table reads a run folder right."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_runs_nothing(gpu_check, monkeypatch, capsys):
    import subprocess

    monkeypatch.setattr(gpu_check, "cuda_device", lambda: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing may run without CUDA"))
    assert gpu_check.main([]) == gpu_check.NO_CUDA_EXIT == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "torch.cuda.is_available() is False" in err


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "gpu-check-x"
    run.mkdir()
    fp32 = {"name": "fp32", "requested": "auto", "reason": "fp32 for a faithful result", "slow": False}
    bf16 = {"name": "bf16", "requested": "auto", "reason": "native bf16 (NVIDIA H200)", "slow": False}
    manifest = {
        "status": "complete", "device": "cuda",
        "last_invocation": {"phases": {"prepare": 12.25, "fit": 61.0, "generate": 3.5}, "wall_seconds": 80.0},
        "precision": {"requested": "auto", "auto": bf16, "stages": {"hubert": [{**fp32, "device": "cuda"}]}},
        "methods": {"wav2lip": {"available": True, "precision": {"train": bf16, "generate": fp32}},
                    "nerf_head": {"available": False, "reason": "needs weights"}},
        "metrics": {"lpips_alex": {"precision": {"lpips": fp32}}},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    with (run / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["method", "metric", "value", "status"])
        w.writeheader()
        w.writerow({"method": "wav2lip", "metric": "fps", "value": "8000", "status": "ok"})
        w.writerow({"method": "wav2lip", "metric": "fps", "value": "9000", "status": "ok"})
        w.writerow({"method": "wav2lip", "metric": "fps", "value": "nan", "status": "failed"})
        w.writerow({"method": "wav2lip", "metric": "PSNR", "value": "30", "status": "ok"})
        w.writerow({"method": "frozen", "metric": "fps", "value": "100000", "status": "ok"})
    return run


def test_table_from_a_run_folder(gpu_check, tmp_path):
    s = gpu_check.summarise(_run_folder(tmp_path))
    assert s["fps"] == {"frozen": 100000.0, "wav2lip": 8500.0}  # mean of the ok rows only
    assert s["phases"] == {"prepare": 12.25, "fit": 61.0, "generate": 3.5}
    assert ("method wav2lip (train)", "bf16", "native bf16 (NVIDIA H200)") in s["precision"]
    assert ("stage hubert", "fp32", "fp32 for a faithful result") in s["precision"]
    assert ("metric lpips_alex (lpips)", "fp32", "fp32 for a faithful result") in s["precision"]
    assert s["unavailable"] == {"nerf_head": "needs weights"}
    text = gpu_check.report("NVIDIA H200", s, (0, 81.0), (0, "3 passed, 2 skipped in 9.1s", 10.0))
    lines = text.splitlines()
    assert lines[0] == "GPU check on NVIDIA H200"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    assert ["wav2lip", "8,500.0"] in rows and ["prepare", "12.2 s"] in rows and ["fit", "61.0 s"] in rows
    assert ["method wav2lip (generate)", "fp32", "fp32 for a faithful result"] in rows
    assert "exit 0: 3 passed, 2 skipped in 9.1s" in text


def test_pytest_summary_line(gpu_check):
    out = "....s\n=========== 4 passed, 1 skipped in 3.20s ===========\n"
    assert gpu_check.test_summary(out) == "4 passed, 1 skipped in 3.20s"
    assert gpu_check.test_summary("garbage") == "no pytest summary"
