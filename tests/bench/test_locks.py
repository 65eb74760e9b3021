"""Concurrency and robustness: run-folder and fit locks with real processes on one cache, SIGTERM handled
as Ctrl-C (trainer checkpoint included), phase times and fits accumulated over resumes, and the
leftovers of a killed cache writer cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cache import Cache
from bench.locks import FileLock, LockBusy, describe_holder, is_locked, read_holder
from tests.bench.tiny_methods import CLI

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ FileLock


def _hold(path: Path, what: str = "test holder") -> subprocess.Popen:
    """A process that takes the lock, prints "held" and sleeps until killed."""
    code = ("import sys, time; from bench.locks import FileLock; FileLock(sys.argv[1], sys.argv[2]).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), what], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_waits_and_is_freed_when_its_holder_dies(tmp_path):
    path = tmp_path / "x.lock"
    holder = _hold(path)
    try:
        assert is_locked(path)
        info = read_holder(path)
        assert info["pid"] == holder.pid and info["what"] == "test holder"
        with pytest.raises(LockBusy, match=f"pid {holder.pid}"):
            FileLock(path, wait=False).acquire()
        seen = []
        with pytest.raises(LockBusy):
            FileLock(path, wait=True, timeout=0.5, on_wait=seen.append).acquire()
        assert seen and seen[0]["pid"] == holder.pid, "the waiter was told whom it waits for"
    finally:
        holder.send_signal(signal.SIGKILL)   # no release, no cleanup: the kernel frees the lock
        holder.wait()
    assert not is_locked(path)
    with FileLock(path, "me", wait=False) as lock:
        assert lock.locked and read_holder(path)["pid"] == os.getpid()
    assert not path.exists(), "the holder removes its lock file on release"


def test_describe_holder_without_information():
    assert describe_holder({}) == "another process"


# -------------------------------------------------------------------------------- stale cache writers


def test_sweep_removes_a_killed_writers_folder_and_keeps_a_live_one(tmp_path):
    code = ("import sys, time; from pathlib import Path; from bench.cache import Cache; "
            "c = Cache(Path(sys.argv[1])); w = c.write('stages/x', sys.argv[2]); tmp = w.__enter__(); "
            "(tmp / 'half.npy').write_bytes(b'0' * 100); print('writing', flush=True); time.sleep(600)")
    procs = []
    for key in ("a" * 64, "b" * 64):
        p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), key], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "writing"
        procs.append(p)
    try:
        procs[0].send_signal(signal.SIGKILL)   # killed during a stage: its .tmp-* folder stays behind
        procs[0].wait()
        cache = Cache(tmp_path)
        tmps = sorted((tmp_path / "stages" / "x").glob("*/.tmp-*"))
        assert len(tmps) == 2
        young = cache.sweep(min_age_s=3600)
        assert young.removed == [], "a young leftover is kept (min_age)"
        swept = cache.sweep(min_age_s=0)
        assert [p.name[:17] for p in swept.removed] == [".tmp-" + "a" * 12]
        assert sorted(p.name[:17] for p in (tmp_path / "stages" / "x").glob("*/.tmp-*")) == [".tmp-" + "b" * 12]
        assert cache.sweep(min_age_s=0, throttle_s=3600).skipped
    finally:
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()


def test_cache_write_publishes_without_its_writer_lock(tmp_path):
    cache = Cache(tmp_path)
    with cache.write("stages/x", "c" * 64) as tmp:
        (tmp / "v.txt").write_text("1")
    entry = cache.entry("stages/x", "c" * 64)
    assert sorted(p.name for p in entry.iterdir()) == ["v.txt"]


# ------------------------------------------------------------------------------- two `bench run`s


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TALKBENCH_CACHE": str(tmp_path / "cache"), "TALKBENCH_WEIGHTS": str(tmp_path / "w"),
            "TINTED_LOG": str(tmp_path / "train.log"), **extra}


def _bench(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log is not None else subprocess.PIPE   # a file: readable while it runs
    return subprocess.Popen([sys.executable, "-c", CLI, *args], env=env, cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT, text=True)


def _args(runs: Path, *more: str) -> list[str]:
    return ["run", "--methods", "tinted", "--metrics", "fps", "--dataset", "demo", "--no-cross", "--budget", "steps=2",
            "--runs-dir", str(runs), "--no-report", "--no-previews", "--progress", "log", *more]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {path.name}: {proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def _trained(log: Path) -> list[tuple[int, str, str]]:
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(int(pid), part, step) for pid, part, step in rows]


def test_second_run_of_a_folder_is_refused_and_a_shared_fit_is_trained_once(tmp_path):
    """A holds a fit open; B (same run folder) is refused at once with who holds it; C (another run id,
    same cache) waits on the fit lock, then reuses A's checkpoints: every step is trained once."""
    gate = tmp_path / "gate"
    env = _env(tmp_path, TINTED_GATE=str(gate))
    runs = tmp_path / "runs"
    a = _bench(_args(runs, "--run-id", "first"), env)
    _wait_for(Path(str(gate) + ".waiting"), a)          # A is inside the shared fit, holding its lock
    b = _bench(_args(runs, "--run-id", "first"), env)
    out_b, _ = b.communicate(timeout=600)
    assert b.returncode == 75, out_b
    assert "in use by another `bench run`" in out_b and f"pid {a.pid}" in out_b

    c_log = tmp_path / "c.log"
    c = _bench(_args(runs, "--run-id", "second"), env, log=c_log)
    # C reaches the same fit folder and waits for A (it says so), without training
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and c.poll() is None and "waiting: fit of tinted" not in c_log.read_text():
        time.sleep(0.1)
    out_c = c_log.read_text()
    assert f"waiting: fit of tinted (dataset, part shared) is in progress in pid {a.pid}" in out_c, out_c
    assert [r for r in _trained(tmp_path / "train.log") if r[0] == c.pid] == []
    gate.touch()
    out_a, _ = a.communicate(timeout=900)
    c.wait(timeout=900)
    assert a.returncode == 0, out_a
    assert c.returncode == 0, c_log.read_text()
    steps = [(pid, part, step) for pid, part, step in _trained(tmp_path / "train.log") if step != "fit"]
    assert sorted((part, step) for _, part, step in steps) == [("person", "0"), ("person", "1"),
                                                               ("shared", "0"), ("shared", "1")]
    assert {pid for pid, _, _ in steps} == {a.pid}, "only the first run trained; the second reused its checkpoints"
    fits = json.loads((runs / "second" / "manifest.json").read_text())["methods"]["tinted"]["fits"]
    assert {f["part"]: f["resumed_from"] for f in fits} == {"shared": {"shared": 2}, "person": {"person": 2}}


def test_sigterm_during_training_checkpoints_marks_interrupted_and_the_resume_accumulates(tmp_path):
    env = _env(tmp_path)
    runs = tmp_path / "runs"
    args = _args(runs, "--run-id", "t", "--budget", "steps=40", "--set", "tinted.step_seconds=0.1")
    proc = _bench(args, env)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if len([r for r in _trained(tmp_path / "train.log") if r[2] != "fit"]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, out
    m = json.loads((runs / "t" / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["history"][-1]["status"] == "interrupted"
    first_fit = m["phases"]["fit"]
    assert first_fit > 0 and m["history"][-1]["phases"]["fit"] == pytest.approx(first_fit, abs=0.01)
    done = len([r for r in _trained(tmp_path / "train.log") if r[2] != "fit"])
    assert 3 <= done < 40, "stopped after the step in flight"
    assert list((tmp_path / "cache" / "fits" / "tinted").glob("*/*.work/trainer.pt")), "checkpointed on SIGTERM"

    again = _bench(args, env)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    m = json.loads((runs / "t" / "manifest.json").read_text())
    assert m["status"] == "complete" and m["invocations"] == 2
    assert [h["status"] for h in m["history"]] == ["interrupted", "complete"]
    # phase times over both invocations: the first one's fit time is kept, not replaced
    assert m["phases"]["fit"] == pytest.approx(first_fit + m["history"][-1]["phases"]["fit"], abs=0.01)
    shared = next(f for f in m["methods"]["tinted"]["fits"] if f["part"] == "shared")
    assert shared["steps"] == 40 and 0 < shared["resumed_from"]["shared"] < 40
    assert [h["invocation"] for h in shared["history"]] == [2]   # the first was stopped inside this fit
    steps = [int(r[2]) for r in _trained(tmp_path / "train.log") if r[1] == "shared" and r[2] != "fit"]
    assert sorted(steps) == list(range(40)), "each step once: the resume continued where the checkpoint was"


def test_sigterm_outside_training_marks_the_run_interrupted(tmp_path):
    gate = tmp_path / "gate"   # never opened: the fit waits in plain Python code, not in the trainer
    env = _env(tmp_path, TINTED_GATE=str(gate))
    proc = _bench(_args(tmp_path / "runs", "--run-id", "g"), env)
    _wait_for(Path(str(gate) + ".waiting"), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, out
    m = json.loads((tmp_path / "runs" / "g" / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["phases"].get("prepare", 0) > 0
    assert not (tmp_path / "runs" / "g" / ".lock").exists(), "the run lock went with the run"
