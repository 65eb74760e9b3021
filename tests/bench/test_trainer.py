"""The shared trainer: resume after a signal, continue N -> 2N == straight 2N, deadline, bar text,
curves, checkpoints by count / time / end, precision from the hardware rule, signal handlers restored."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.precision import Capability, choose
from bench.progress import Progress
from bench.trainer import (CHECKPOINT, CURVES, Autocast, Interrupted, TrainSettings, checkpoint_step,
                           read_checkpoint, train)

REPO = Path(__file__).resolve().parents[2]


class TinyTask:
    """Least squares y = x w* with a small MLP; batches drawn from (seed, step), dropout from a torch
    generator state kept in state(): both kinds of determinism the suite's tasks use."""

    def __init__(self, seed: int = 0, sleep: float = 0.0, announce: bool = False, init: int | None = None):
        g = torch.Generator().manual_seed(seed if init is None else init)
        self.seed, self.sleep, self.announce = seed, sleep, announce
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                         torch.nn.Linear(8, 1))
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.w = torch.randn(4, 1, generator=torch.Generator().manual_seed(seed + 100))
        self.dropout_rng = torch.Generator().manual_seed(seed + 1).get_state()
        self.begun: list[int] = []
        self.states_taken = 0

    def _batch(self, step: int):
        rng = np.random.default_rng([self.seed, step])
        x = torch.from_numpy(rng.standard_normal((16, 4)).astype(np.float32))
        return x, x @ self.w

    def state(self) -> dict:
        self.states_taken += 1
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "dropout_rng": self.dropout_rng}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.dropout_rng = state["dropout_rng"]

    def begin(self, step: int) -> None:
        self.begun.append(step)

    def step(self, step: int, autocast) -> dict[str, float]:
        x, y = self._batch(step)
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.dropout_rng)
            with autocast:
                pred = self.model(x)
            loss = torch.nn.functional.mse_loss(pred.float(), y)
            self.dropout_rng = torch.get_rng_state()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if self.sleep:
            time.sleep(self.sleep)
        if self.announce:
            print(f"step {step + 1}", flush=True)
        return {"loss": loss.item(), "half": 0.5 * loss.item()}

    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        x, y = self._batch(10_000)
        with torch.no_grad():
            return {"eval_loss": float(torch.nn.functional.mse_loss(self.model(x), y))}


def _weights(task: TinyTask) -> list[torch.Tensor]:
    return [p.detach().clone() for p in task.model.parameters()]


def _reference(steps: int, seed: int = 0) -> tuple[list[torch.Tensor], list[float]]:
    """The same training written as a plain loop, without the trainer."""
    task = TinyTask(seed)
    losses = [task.step(i, Autocast(choose("cpu", "fp32", faithful=False), "cpu"))["loss"] for i in range(steps)]
    return _weights(task), losses


SETTINGS = TrainSettings(steps=6, checkpoint_every=0, checkpoint_seconds=None)


def test_matches_a_plain_loop_and_saves_curves(tmp_path):
    task = TinyTask()
    out = train(task, tmp_path, TrainSettings(steps=6, checkpoint_every=4, eval_every=3, log_every=2))
    ref_w, ref_losses = _reference(6)
    for a, b in zip(_weights(task), ref_w):
        assert torch.equal(a, b)
    assert out.steps_done == 6 and out.resumed_from == 0 and out.stopped == "steps" and not out.interrupted
    # rows average log_every steps of every scalar
    assert [r["step"] for r in out.curves["train"]] == [2.0, 4.0, 6.0]
    assert out.curves["train"][0]["loss"] == pytest.approx((ref_losses[0] + ref_losses[1]) / 2)
    assert out.curves["train"][2]["half"] == pytest.approx((ref_losses[4] + ref_losses[5]) / 4)
    assert [r["step"] for r in out.curves["eval"]] == [3.0, 6.0]   # step 6 is both scheduled and the end
    assert out.last_eval == {"eval_loss": out.curves["eval"][-1]["eval_loss"]}
    saved = json.loads((tmp_path / CURVES).read_text())
    assert saved["step"] == 6 and saved["train"] == out.curves["train"] and saved["eval"] == out.curves["eval"]
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["step"] == 6 and ckpt["trainer"]["curves"]["train"] == out.curves["train"]


def test_continue_n_to_2n_equals_straight_2n(tmp_path):
    straight = TinyTask()
    s = train(straight, tmp_path / "straight", SETTINGS)
    first = TinyTask()
    a = train(first, tmp_path / "cont", TrainSettings(steps=3, checkpoint_every=0, checkpoint_seconds=None))
    assert a.steps_done == 3 and checkpoint_step(tmp_path / "cont") == 3
    second = TinyTask(init=5)       # a different initialisation: everything must come from the checkpoint
    b = train(second, tmp_path / "cont", SETTINGS)
    assert b.resumed_from == 3 and b.steps_done == 6 and second.begun == [3]
    for x, y in zip(_weights(second), _weights(straight)):
        assert torch.equal(x, y)
    assert [r["loss"] for r in b.curves["train"]] == [r["loss"] for r in s.curves["train"]]
    # asking for as many (or fewer) steps: done without training, the task holds the trained state
    third = TinyTask(init=7)
    c = train(third, tmp_path / "cont", TrainSettings(steps=4))
    assert c.stopped == "done-before" and c.steps_done == 6 and third.begun == []
    for x, y in zip(_weights(third), _weights(straight)):
        assert torch.equal(x, y)


def test_deadline_stops_and_checkpoints(tmp_path, monkeypatch):
    import bench.trainer as trainer_module

    task = TinyTask()
    out = train(task, tmp_path, TrainSettings(steps=1000), deadline=time.monotonic() - 1.0)
    assert out.stopped == "deadline" and out.steps_done == 0 and out.curves["eval"] == []
    assert read_checkpoint(tmp_path)["step"] == 0

    class Clock:   # a deadline that passes after three steps, without depending on speed
        def __init__(self):
            self.task = TinyTask()
            self.calls = 0

        def __getattr__(self, name):
            return getattr(self.task, name)

        def step(self, step, autocast):
            self.calls += 1
            return self.task.step(step, autocast)

    clock = Clock()
    deadline = 1000.0
    # the trainer's clock passes the deadline once three steps are done, whatever the machine's speed
    monkeypatch.setattr(trainer_module, "_now", lambda: deadline + (1.0 if clock.calls >= 3 else -1.0))
    out = train(clock, tmp_path / "b", TrainSettings(steps=1000, checkpoint_seconds=None), deadline=deadline)
    assert out.stopped == "deadline" and out.steps_done == 3
    assert read_checkpoint(tmp_path / "b")["step"] == 3 and out.curves["eval"][-1]["step"] == 3.0


def test_checkpoints_by_count_time_and_end(tmp_path):
    task = TinyTask()
    train(task, tmp_path / "count", TrainSettings(steps=7, checkpoint_every=3, checkpoint_seconds=None))
    assert task.states_taken == 3      # steps 3, 6 and the end (7)
    task = TinyTask()
    train(task, tmp_path / "end", TrainSettings(steps=6, checkpoint_every=3, checkpoint_seconds=None,
                                                eval_at_end=False))
    assert task.states_taken == 2      # the end coincides with step 6: not written twice
    task = TinyTask()
    train(task, tmp_path / "time", TrainSettings(steps=5, checkpoint_every=0, checkpoint_seconds=0.0,
                                                 eval_at_end=False))
    assert task.states_taken == 5      # checkpoint_seconds=0: after every step
    # the file is replaced atomically: no temporary file is left behind
    assert sorted(p.name for p in (tmp_path / "time").iterdir()) == sorted([CHECKPOINT, CURVES])


def test_precision_follows_the_hardware_rule(tmp_path, monkeypatch):
    import bench.precision as P

    seen = []

    class Probe(TinyTask):
        def step(self, step, autocast):
            with autocast:
                seen.append(torch.is_autocast_enabled('cpu'))
            return super().step(step, autocast)

    monkeypatch.setattr(P, "capability", lambda device: Capability("cpu", False, "CPU without avx512_bf16"))
    out = train(Probe(), tmp_path / "a", TrainSettings(steps=1), precision="auto")
    assert out.precision.name == "fp32" and seen == [False]
    monkeypatch.setattr(P, "capability", lambda device: Capability("cpu", True, "CPU avx512_bf16"))
    out = train(Probe(), tmp_path / "b", TrainSettings(steps=1), precision="auto")
    assert out.precision.name == "bf16" and seen[-1] is True
    assert read_checkpoint(tmp_path / "b")["trainer"]["precision"] == "bf16"


def test_interrupted_bar_and_signal_handlers_restored(tmp_path):
    """A signal during training: checkpoint at the step reached, bar 'interrupted', handlers restored."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    class SelfSignalling(TinyTask):
        def step(self, step, autocast):
            out = super().step(step, autocast)
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)   # handled by the trainer: no process exit
            return out

    stream = io.StringIO()
    with Progress(mode="log", stream=stream) as progress:
        with pytest.raises(Interrupted) as info:
            train(SelfSignalling(), tmp_path, TrainSettings(steps=50, label="tiny"), progress=progress)
    assert isinstance(info.value, KeyboardInterrupt) and info.value.signum == signal.SIGTERM
    assert info.value.result.steps_done == 3 and info.value.result.interrupted
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == 3
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("interrupted tiny: 3/50"), lines
    assert not any(line.startswith("done") for line in lines)
    assert {s: signal.getsignal(s) for s in before} == before
    # raise_on_interrupt=False returns instead
    out = train(SelfSignalling(), tmp_path / "r", TrainSettings(steps=50, raise_on_interrupt=False))
    assert out.stopped == "interrupted" and out.steps_done == 3


def test_a_worker_thread_leaves_signals_alone(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", train(TinyTask(), tmp_path, SETTINGS)))
    t.start()
    t.join()
    assert box["out"].steps_done == 6 and signal.getsignal(signal.SIGINT) is before


def test_bar_reads_done_normally(tmp_path):
    stream = io.StringIO()
    with Progress(mode="log", stream=stream) as progress:
        train(TinyTask(), tmp_path, TrainSettings(steps=2, label="tiny"), progress=progress)
    assert stream.getvalue().splitlines()[-1].startswith("done tiny: 2/2")


def test_a_step_without_loss_is_refused(tmp_path):
    class NoLoss(TinyTask):
        def step(self, step, autocast):
            return {"l1": super().step(step, autocast)["loss"]}

    with pytest.raises(KeyError, match="loss"):
        train(NoLoss(), tmp_path, TrainSettings(steps=1))


def test_previews_are_written(tmp_path):
    class WithPreview(TinyTask):
        def preview(self, step):
            return np.full((4, 5, 3), step, np.uint8)

    out = train(WithPreview(), tmp_path, TrainSettings(steps=5, preview_every=2))
    assert [p.name for p in out.previews] == ["step000000002.png", "step000000004.png", "step000000005.png"]
    import cv2

    assert cv2.imread(str(out.previews[-1]))[0, 0].tolist() == [5, 5, 5]


# ------------------------------------------------------------------- a real SIGINT from outside


def run_child(folder: str, steps: int) -> None:
    """Entry point of the subprocess below: trains slowly, prints each step, exits 130 on SIGINT."""
    try:
        with Progress(mode="log", log_every_s=3600) as progress:
            train(TinyTask(sleep=0.05, announce=True), Path(folder), TrainSettings(steps=steps, label="tiny"),
                  progress=progress)
    except KeyboardInterrupt:
        sys.exit(130)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_resume_after_a_signal_from_another_process(tmp_path, sig):
    code = f"from tests.bench.test_trainer import run_child; run_child({str(tmp_path)!r}, 100000)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = 0
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                seen = int(line.split()[1])
                if seen >= 5:
                    break
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted tiny: ") and "done" not in last, err
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    k = ckpt["step"]
    assert k >= seen >= 5
    task = TinyTask()
    out = train(task, tmp_path, TrainSettings(steps=k + 3))
    assert out.resumed_from == k and out.steps_done == k + 3 and task.begun == [k]
    ref, _ = _reference(k + 3)
    for a, b in zip(_weights(task), ref):
        assert torch.equal(a, b)
