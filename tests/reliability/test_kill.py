"""SIGKILL (no handler runs, nothing is flushed) during training and during prepare, then a rerun:
the results equal an uninterrupted run's bit for bit. (SIGKILL during generation and scoring:
tests/bench/test_runner.py::test_killed_run_resumes_without_redoing_finished_work.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _entries(cache: Path, stage: str) -> list[Path]:
    """Finished entries of a stage (`stages/<stage>/<key[:2]>/<key>`), not temporary folders."""
    return sorted(p for p in (cache / "stages" / stage).glob("*/*") if p.is_dir() and not p.name.startswith("."))


def train_child(folder: str, steps: int) -> None:
    """Subprocess entry: the trainer test's tiny task, a checkpoint every 3 steps, one line per step."""
    from bench.trainer import TrainSettings, train
    from tests.bench.test_trainer import TinyTask

    train(TinyTask(sleep=0.05, announce=True), Path(folder),
          TrainSettings(steps=steps, checkpoint_every=3, checkpoint_seconds=None, label="tiny"))


def test_sigkill_during_training_then_rerun_equals_a_straight_run(tmp_path):
    from bench.trainer import CHECKPOINT, TrainSettings, train
    from tests.bench.test_trainer import TinyTask, _reference, _weights

    code = f"from tests.reliability.test_kill import train_child; train_child({str(tmp_path)!r}, 100000)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step ") and int(line.split()[1]) >= 8:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"]
    assert saved >= 6 and saved % 3 == 0                       # the last checkpoint before the kill
    task = TinyTask()
    out = train(task, tmp_path, TrainSettings(steps=saved + 4, checkpoint_every=3, checkpoint_seconds=None))
    assert out.resumed_from == saved and out.steps_done == saved + 4
    ref, _ = _reference(saved + 4)
    for a, b in zip(_weights(task), ref):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_sigkill_during_prepare_then_rerun_is_bit_identical(tmp_path, reliability_media):
    """`bench prepare` killed once its first clip's faces are cached; the rerun finishes, and every
    stage output equals the one a clean prepare (another cache) writes."""
    args = [sys.executable, "-m", "bench.cli", "prepare", "--dataset", f"video:{reliability_media['face']}",
            "--stages", "faces,mel", "--workers", "1", "--progress", "off"]
    env = {**os.environ, "TALKBENCH_CACHE": str(tmp_path / "cache"), "TALKBENCH_WEIGHTS": str(tmp_path / "w")}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if _entries(tmp_path / "cache", "faces"):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert 1 <= len(_entries(tmp_path / "cache", "faces")) < 3
    assert subprocess.run(args, cwd=REPO, env=env, capture_output=True).returncode == 0
    clean_env = {**env, "TALKBENCH_CACHE": str(tmp_path / "clean")}
    assert subprocess.run(args, cwd=REPO, env=clean_env, capture_output=True).returncode == 0
    for stage in ("normalise", "faces", "mel"):
        a = [f for e in _entries(tmp_path / "cache", stage) for f in sorted(e.glob("*.npy"))]
        b = [f for e in _entries(tmp_path / "clean", stage) for f in sorted(e.glob("*.npy"))]
        assert [p.relative_to(tmp_path / "cache") for p in a] == [p.relative_to(tmp_path / "clean") for p in b]
        assert len(a) >= 3
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.load(x), np.load(y), err_msg=str(x))
