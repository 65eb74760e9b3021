"""Wav2Lip data-parallel training on 2 CPU processes (torchrun, gloo on 127.0.0.1).

One torchrun job (this module run with -m, see `_worker`) trains the expert (stage 1) for one step
at an effective batch of 4 (2 per process), then continues it to 2 steps, and dumps each rank's
weights, gradients and results. The tests then check, in this process:
(a) both ranks hold identical weights, BatchNorm statistics and gradients, and both resumed;
(b) the 2-process steps equal a single-process loop on the same 4 samples whose loss is the mean of
    the two halves' losses, each half normalised by its own BatchNorm statistics (what W processes
    of batch B compute), with running statistics averaged; the logged loss and the held-out
    evaluation equal that single process's;
(c) only rank 0 wrote into the fit folder (an audit hook records every write), and the exported
    checkpoint loads strictly with the official key names (no `module.` prefix).
A second job (marked slow) trains one step of stage 2 (generator + quality discriminator) the same
way and checks (a), (b) on both networks' gradients and the generator's BatchNorm buffers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.wav2lip.data import ClipData

SEED = 0
EFFECTIVE_BATCH = 4   # 2 per process
REPO = Path(__file__).resolve().parents[2]


def _clips() -> list[ClipData]:
    """One synthetic 40-frame clip: seeded random crops and mel (the samplers only need shapes)."""
    rng = np.random.default_rng(7)
    n = 40
    crops = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    mel = rng.standard_normal((1 + n * 640 // 200, 80)).astype(np.float32)
    return [ClipData("synthetic", crops, np.ones(n, bool), mel)]


def _settings(steps: int):
    from methods.wav2lip.train import StageSettings

    return StageSettings(steps=steps, batch_size=EFFECTIVE_BATCH, checkpoint_interval=1000, eval_interval=1,
                         eval_batches=2, keep=1, checkpoint_seconds=None)


# ---------------------------------------------------------------------------------------- pure parts


def test_place_read_from_torchrun_environment():
    from bench.distributed import DistInfo, backend_for, from_env, init_from_env

    assert from_env({}) == DistInfo(0, 1, 0, None)
    assert from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == DistInfo(3, 4, 1, None)
    with pytest.raises(ValueError, match="RANK"):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert backend_for("cuda:1") == "nccl" and backend_for("cpu") == "gloo"
    info, device = init_from_env("cuda", env={})     # one process: no process group, device unchanged
    assert info == DistInfo() and device == "cuda" and not torch.distributed.is_initialized()


def test_each_rank_takes_its_slice_of_the_single_process_batch():
    from bench.distributed import DistInfo, per_rank_batch
    from methods.wav2lip.data import batch, expert_sample
    from methods.wav2lip.train import ExpertTask, _draw, _rng

    clips = _clips()
    full = batch(expert_sample, clips, _rng(SEED, 1, 5), 6)
    for r in range(3):
        part = _draw(expert_sample, clips, _rng(SEED, 1, 5), 6, DistInfo(r, 3, r, "gloo"))
        assert all(np.array_equal(p, f[2 * r:2 * r + 2]) for p, f in zip(part, full))
    assert per_rank_batch(16, DistInfo(0, 4, 0, "gloo")) == 4
    with pytest.raises(ValueError, match="multiple of 4"):
        per_rank_batch(6, DistInfo(0, 4, 0, "gloo"))
    with pytest.raises(ValueError, match="8 or more"):
        per_rank_batch(4, DistInfo(0, 4, 0, "gloo"), minimum=2)
    from bench.precision import choose

    with pytest.raises(ValueError, match="1 per process"):   # refused before any network is built
        ExpertTask(clips, clips, _settings(1), "cpu", choose("cpu", "fp32", faithful=False), SEED, None, DistInfo(0, 4, 0, "gloo"))


# ---------------------------------------------------------------------------------------- the job


def _writes_into(folder: Path, record: list[str]):
    """An audit hook recording every write, rename, delete or mkdir of a path inside `folder`."""
    root = str(folder)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else isinstance(flags, int) and bool(flags & write_flags))
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            path, writing = args[0], True
        else:
            return
        if writing and isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(root):
            record.append(f"{event} {os.path.relpath(os.fspath(path), root)}")

    return hook


def _generator_settings():
    from methods.wav2lip.train import official_generator_settings

    return official_generator_settings(1, True, batch_size=EFFECTIVE_BATCH, checkpoint_interval=1000,
                                       eval_interval=1, eval_batches=2, keep=1, checkpoint_seconds=None)


def _generator_worker(out: Path, info, device: str) -> None:
    """One rank: one generator + discriminator step (hq) against the expert file in out/."""
    from bench.precision import choose
    from methods.wav2lip.train import GeneratorTask, run_stage

    clips = _clips()
    task = GeneratorTask(clips, clips, out / "expert.pth", _generator_settings(), device, choose(device, "fp32", faithful=False),
                         SEED, None, None, info)
    r = run_stage(task, out / "generator", "generator")
    torch.save({"state": task.model.state_dict(), "disc": task.disc.state_dict(),
                "grads": {n: p.grad for n, p in task.model.named_parameters()},
                "disc_grads": {n: p.grad for n, p in task.disc.named_parameters()},
                "step": r.step, "syncnet_wt": r.syncnet_wt, "curve": r.curve, "checkpoint": str(r.checkpoint)},
               out / f"rank{info.rank}_generator.pt")


def _worker(out: Path, mode: str) -> None:
    """One rank of the torchrun job: expert 1 step, then continued to 2, in out/expert (or the generator)."""
    from bench.distributed import init_from_env, shutdown
    from bench.precision import choose
    from methods.wav2lip.train import ExpertTask, run_stage

    torch.set_num_threads(1)
    info, device = init_from_env("cpu")
    assert info.world_size == 2 and info.backend == "gloo", info
    if mode == "generator":
        _generator_worker(out, info, device)
        shutdown(info)
        return
    folder = out / "expert"
    writes: list[str] = []
    sys.addaudithook(_writes_into(folder, writes))
    clips = _clips()
    for steps in (1, 2):
        task = ExpertTask(clips, clips, _settings(steps), device, choose(device, "fp32", faithful=False), SEED, None, info)
        r = run_stage(task, folder, "expert")
        torch.save({"state": task.model.state_dict(),
                    "grads": {n: p.grad for n, p in task.model.named_parameters()},
                    "step": r.step, "resumed_from": r.resumed_from, "stopped": r.stopped,
                    "curve": r.curve, "eval": r.eval_curve, "checkpoint": str(r.checkpoint)},
                   out / f"rank{info.rank}_steps{steps}.pt")
    (out / f"rank{info.rank}_writes.json").write_text(json.dumps(writes))
    shutdown(info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, mode: str) -> Path:
    """2 CPU processes on 127.0.0.1 running `_worker(out, mode)`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "tests.methods.test_wav2lip_ddp", str(out), mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    return _torchrun(tmp_path_factory.mktemp("ddp"), "expert")


def _dump(out: Path, rank: int, steps: int) -> dict:
    return torch.load(out / f"rank{rank}_steps{steps}.pt", weights_only=True)


# ---------------------------------------------------------------------------------------- reference


def _contiguous(arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


@contextlib.contextmanager
def _one_thread():
    """The workers' thread count: with 2 samples per BatchNorm batch (1 x 1 maps at the end of both
    networks) these random networks are so ill-conditioned that another summation order (2 threads)
    moved one slice's loss from 0.647 to 0.665; with the same kernels the results agree to float noise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fresh_buffers(model: torch.nn.Module, values: dict) -> None:
    """Give `model` new buffer tensors holding `values` (not in place: autograd still needs the old
    ones of a forward already taken)."""
    for name, value in values.items():
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = value.clone()


def _reference(steps: int):
    """A single process on the same 4 samples per step: loss = mean of the two halves' BCE, each half
    through BatchNorm on its own, running statistics = the mean of the two halves' updates."""
    from methods.wav2lip.data import batch, expert_sample
    from methods.wav2lip.models import SyncNet_color, cosine_bce

    clips = _clips()
    torch.manual_seed(SEED)
    model = SyncNet_color()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    first_grads, half_grads, losses = {}, {}, []
    for step in range(steps):
        model.train()
        x, mel, y = _contiguous(batch(expert_sample, clips, np.random.default_rng([SEED, 1, step]), EFFECTIVE_BATCH))
        opt.zero_grad()
        start = {k: b.clone() for k, b in model.named_buffers()}
        halves, updated = [], []
        for sl in (slice(0, 2), slice(2, 4)):
            _fresh_buffers(model, start)
            a, v = model(mel[sl], x[sl])
            halves.append(cosine_bce(a, v, y[sl]))
            updated.append(dict(model.named_buffers()))
        _fresh_buffers(model, {k: (b + updated[1][k]) / 2 if b.is_floating_point() else updated[1][k]
                               for k, b in updated[0].items()})
        if step == 0:   # one rank's gradient alone: the control that averaging is what the test sees
            halves[0].backward(retain_graph=True)
            half_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.zero_grad()
        loss = (halves[0] + halves[1]) / 2
        loss.backward()
        if step == 0:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        losses.append(loss.item())
    return model, first_grads, half_grads, losses


# ---------------------------------------------------------------------------------------- tests


def test_ranks_hold_identical_state_and_both_resume(ddp_run):
    for steps in (1, 2):
        r0, r1 = _dump(ddp_run, 0, steps), _dump(ddp_run, 1, steps)
        assert r0["step"] == r1["step"] == steps
        assert r0["resumed_from"] == r1["resumed_from"] == steps - 1   # the follower loaded rank 0's checkpoint
        assert r0["stopped"] == r1["stopped"] == "steps"
        assert r0["state"].keys() == r1["state"].keys()
        for k, v in r0["state"].items():           # parameters and BatchNorm buffers, bit for bit
            assert torch.equal(v, r1["state"][k]), (steps, k)
        for k, g in r0["grads"].items():
            assert g is not None and torch.equal(g, r1["grads"][k]), (steps, k)
        assert r0["checkpoint"] == r1["checkpoint"]


def test_two_processes_equal_one_process_on_the_same_samples(ddp_run):
    from methods.wav2lip.models import SyncNet_color
    from methods.wav2lip.train import evaluate_expert

    with _one_thread():
        model, grads, half, losses = _reference(2)
    one = _dump(ddp_run, 0, 1)
    # (bit-identical on this machine: halving a loss scales its backward by an exact power of two;
    # the tolerances leave room for other kernels)
    for k, g in grads.items():                     # the averaged gradient of step 0
        assert torch.allclose(one["grads"][k], g, rtol=1e-5, atol=1e-9), k
    # and not one rank's own: a rank that skipped the averaging would fail above
    assert not all(torch.allclose(one["grads"][k], g, rtol=1e-2, atol=1e-6) for k, g in half.items())
    two = _dump(ddp_run, 0, 2)
    ref = model.state_dict()
    for k, v in two["state"].items():
        assert torch.allclose(v.double(), ref[k].double(), rtol=1e-5, atol=1e-7), k
    assert [row["loss"] for row in two["curve"]] == pytest.approx(losses, rel=1e-5)
    # the held-out number: batches split over the ranks and summed = one process evaluating them all
    trained = SyncNet_color()
    trained.load_state_dict(two["state"])
    from bench.precision import choose

    with _one_thread():
        alone = evaluate_expert(trained, _clips(), _settings(2), "cpu", choose("cpu", "fp32", faithful=False), SEED)
    assert two["eval"][-1]["eval_loss"] == pytest.approx(alone, rel=1e-5)


def test_only_rank_zero_writes_and_the_export_has_official_keys(ddp_run):
    from methods.wav2lip.checkpoint import load_into, read_checkpoint
    from methods.wav2lip.models import SyncNet_color

    rank0 = json.loads((ddp_run / "rank0_writes.json").read_text())
    rank1 = json.loads((ddp_run / "rank1_writes.json").read_text())
    assert rank1 == []
    assert any("trainer.pt" in w for w in rank0) and any("checkpoint_step000000002.pth" in w for w in rank0)
    folder = ddp_run / "expert"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_step000000002.pth", "curves.json", "trainer.pt"]
    raw = torch.load(folder / "checkpoint_step000000002.pth", weights_only=True)
    assert set(raw) == {"state_dict", "optimizer", "global_step", "global_epoch"} and raw["global_step"] == 2
    assert not any(k.startswith("module.") for k in raw["state_dict"])
    model = SyncNet_color()
    load_into(model, read_checkpoint(folder / "checkpoint_step000000002.pth"))   # strict: official names
    for k, v in _dump(ddp_run, 1, 2)["state"].items():
        assert torch.equal(model.state_dict()[k], v), k


# ---------------------------------------------------------------------------------------- stage 2


def _generator_reference(expert_path: Path):
    """One hq generator + discriminator step in one process on the same 4 samples: the generator's
    loss is the mean of the halves' losses, each half through the generator's BatchNorm on its own
    (running statistics averaged); the discriminator's (no BatchNorm) the mean of the halves'."""
    import torch.nn.functional as F

    from methods.wav2lip.data import batch, generator_sample
    from methods.wav2lip.models import Wav2Lip, Wav2Lip_disc_qual, bce

    s = _generator_settings()
    torch.manual_seed(SEED + 1)
    model, disc = Wav2Lip(), Wav2Lip_disc_qual()
    model.train()
    disc.train()
    x, indiv, mel, gt = _contiguous(batch(generator_sample, _clips(), np.random.default_rng([SEED, 2, 0]),
                                          EFFECTIVE_BATCH))
    start = {k: b.clone() for k, b in model.named_buffers()}
    halves = (slice(0, 2), slice(2, 4))
    generated, losses, updated = [], [], []
    for sl in halves:
        _fresh_buffers(model, start)
        g = model(indiv[sl], x[sl])
        generated.append(g)
        losses.append(s.disc_wt * disc.perceptual_loss(g) + (1.0 - s.disc_wt) * F.l1_loss(g, gt[sl]))
        updated.append(dict(model.named_buffers()))
    _fresh_buffers(model, {k: (b + updated[1][k]) / 2 if b.is_floating_point() else updated[1][k]
                           for k, b in updated[0].items()})
    ((losses[0] + losses[1]) / 2).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    disc.zero_grad(set_to_none=True)
    d = [bce(disc(gt[sl]), torch.ones(10, 1)) + bce(disc(g.detach()), torch.zeros(10, 1))
         for sl, g in zip(halves, generated)]
    ((d[0] + d[1]) / 2).backward()
    disc_grads = {n: p.grad.clone() for n, p in disc.named_parameters()}
    return grads, disc_grads, dict(model.named_buffers()), ((losses[0] + losses[1]) / 2).item()


@pytest.mark.slow
def test_generator_stage_on_two_processes(tmp_path):
    from methods.wav2lip.checkpoint import load_into, read_checkpoint, save_checkpoint
    from methods.wav2lip.models import SyncNet_color, Wav2Lip, Wav2Lip_disc_qual

    torch.manual_seed(1)
    save_checkpoint(tmp_path, SyncNet_color(), None, 0, 0).rename(tmp_path / "expert.pth")
    _torchrun(tmp_path, "generator")
    r0, r1 = (torch.load(tmp_path / f"rank{r}_generator.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] == 1 and r0["syncnet_wt"] == r1["syncnet_wt"]
    for part in ("state", "disc", "grads", "disc_grads"):
        for k, v in r0[part].items():
            assert torch.equal(v, r1[part][k]), (part, k)
    with _one_thread():
        grads, disc_grads, buffers, loss = _generator_reference(tmp_path / "expert.pth")
    for k, g in grads.items():
        assert torch.allclose(r0["grads"][k], g, rtol=1e-3, atol=1e-7), k
    for k, g in disc_grads.items():
        assert torch.allclose(r0["disc_grads"][k], g, rtol=1e-3, atol=1e-7), k
    for k, b in buffers.items():
        assert torch.allclose(r0["state"][k].double(), b.double(), rtol=1e-4, atol=1e-6), k
    assert r0["curve"][0]["loss"] == pytest.approx(loss, rel=1e-5)
    folder = tmp_path / "generator"
    assert {p.name for p in folder.iterdir()} == {"trainer.pt", "curves.json", "checkpoint_step000000001.pth",
                                                  "disc_checkpoint_step000000001.pth"}
    load_into(Wav2Lip(), read_checkpoint(folder / "checkpoint_step000000001.pth"))
    load_into(Wav2Lip_disc_qual(), read_checkpoint(folder / "disc_checkpoint_step000000001.pth"))


if __name__ == "__main__":   # a rank of the torchrun job started by `_torchrun`
    _worker(Path(sys.argv[1]), sys.argv[2])
