"""Data-parallel training under torchrun: who this process is, the process group, and the few
collectives the suite's training needs.

torchrun starts W copies of a program and tells each its place through the environment: RANK (0..W-1
over all machines), WORLD_SIZE (W), LOCAL_RANK (its GPU on this machine), MASTER_ADDR / MASTER_PORT
(where rank 0 listens). `init_from_env` reads them and joins the process group (gloo on CPU, nccl on
CUDA) only when W > 1, so the same program also runs as one plain process without torchrun.

With bench.trainer (which stays a single-process loop): rank 0, the leader, runs `trainer.train` as
one process would, with its task wrapped by `lead`, which tells the other ranks (followers) what the
trainer asks of the task - begin, step i, evaluate after n steps, stop - just before doing it.
Every follower runs `follow`: it loads the leader's checkpoint from the same folder (the fit folder
must be on a filesystem every rank sees) and repeats those calls on its own copy of the task. So
only rank 0 writes checkpoints, curves and previews, only rank 0 decides when to stop (target,
deadline, SIGINT / SIGTERM; followers hold their signals and let the leader checkpoint), and every
collective a task's step or evaluation makes is entered by all ranks in the same order.

A task that trains data-parallel averages its gradients with `average_gradients` between backward
and the optimiser step (all_reduce sum / W: what DistributedDataParallel computes) and keeps its
ranks identical with `broadcast_module` at `begin`. Nothing here keeps state of its own beyond
torch's process group; nothing happens at import time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    import torch

    from bench.trainer import Autocast, TrainResult

STOP, BEGIN, STEP, EVALUATE = 0, 1, 2, 3
STOPPED = ("steps", "deadline", "done-before", "interrupted")


@dataclass(frozen=True)
class DistInfo:
    """This process's place: rank (0..world_size-1 over all machines), world_size, local_rank (its
    device index on this machine), backend ("gloo" | "nccl" once the process group is joined; None
    for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> str:
        """Where the tensors of the process group's collectives live (nccl: this rank's GPU)."""
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"


SINGLE = DistInfo()


def is_parallel(info: DistInfo | None) -> bool:
    return info is not None and info.parallel


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "")
    try:
        return int(text) if text.strip() else default
    except ValueError:
        raise ValueError(f"{name}={text!r}: torchrun sets it to an integer") from None


def from_env(env: Mapping[str, str] | None = None) -> DistInfo:
    """RANK, WORLD_SIZE, LOCAL_RANK as torchrun sets them (absent: one process, rank 0)."""
    env = os.environ if env is None else env
    world = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    local = _int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: need 0 <= RANK < WORLD_SIZE")
    return DistInfo(rank, world, local)


def backend_for(device: str) -> str:
    """gloo for CPU tensors, nccl for CUDA ones."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_from_env(device: str = "cpu", env: Mapping[str, str] | None = None) -> tuple[DistInfo, str]:
    """Join torchrun's process group when WORLD_SIZE > 1; returns this process's DistInfo and the device
    it trains on ("cuda" becomes "cuda:<LOCAL_RANK>", one GPU per process)."""
    info = from_env(env)
    if not info.parallel:
        return info, device
    import torch
    import torch.distributed as dist

    backend = backend_for(device)
    if backend == "nccl":
        if not torch.cuda.is_available() or info.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {info.rank}: LOCAL_RANK {info.local_rank} has no CUDA device "
                               f"({torch.cuda.device_count() if torch.cuda.is_available() else 0} visible)")
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    return replace(info, backend=backend), device


def shutdown(info: DistInfo) -> None:
    """Leave the process group (callers meet at a barrier first, as `run_stage` does after each stage)."""
    if not info.parallel:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, info: DistInfo | None, minimum: int = 1) -> int:
    """Each rank's share of an effective batch (the batch a single process would draw)."""
    world = info.world_size if info is not None else 1
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} does not split over {world} processes: use a multiple of {world}")
    share = batch_size // world
    if share < minimum:
        raise ValueError(f"batch size {batch_size} over {world} processes leaves {share} per process; "
                         f"at least {minimum} are needed: raise the batch size to {minimum * world} or more")
    return share


# ------------------------------------------------------------------------------ collectives


def barrier(info: DistInfo) -> None:
    if not info.parallel:
        return
    import torch.distributed as dist

    if info.backend == "nccl":
        dist.barrier(device_ids=[info.local_rank])
    else:
        dist.barrier()


def _flat_groups(tensors: Sequence["torch.Tensor"]) -> list[list["torch.Tensor"]]:
    """Tensors grouped by (dtype, device) in their order, so each group travels as one flat buffer."""
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return list(groups.values())


def _all_reduce_mean(tensors: Sequence["torch.Tensor"], info: DistInfo) -> None:
    """In place: every tensor becomes the mean of its value over the ranks (sum, then / W)."""
    import torch
    import torch.distributed as dist

    for group in _flat_groups(tensors):
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat.div_(info.world_size)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def average_gradients(params: Iterable["torch.nn.Parameter"], info: DistInfo | None) -> None:
    """Average the gradients over the ranks (what DistributedDataParallel does in its backward).
    Parameters without a gradient are skipped: every rank runs the same graph, so they match."""
    if not is_parallel(info):
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        _all_reduce_mean(grads, info)  # type: ignore[arg-type]


def average_buffers(module: "torch.nn.Module", info: DistInfo | None) -> None:
    """Average the floating buffers (BatchNorm running mean / variance) over the ranks, so every rank
    holds the same state after a step; integer buffers (batches tracked) are equal already."""
    if not is_parallel(info):
        return
    floats = [b for b in module.buffers() if b.is_floating_point()]
    if floats:
        _all_reduce_mean(floats, info)  # type: ignore[arg-type]


def broadcast_module(module: "torch.nn.Module", info: DistInfo | None) -> None:
    """Rank 0's parameters and buffers to every rank (as DDP does at construction)."""
    if not is_parallel(info):
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for group in _flat_groups([*module.parameters(), *module.buffers()]):
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, 0)
            offset = 0
            for t in group:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n


def all_sum(values: Sequence[float], info: DistInfo | None) -> list[float]:
    """The sums over the ranks of a few numbers (float64), the same list on every rank."""
    if not is_parallel(info):
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.comm_device)
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def mean_scalars(values: Mapping[str, float], info: DistInfo | None) -> dict[str, float]:
    """Logged scalars averaged over the ranks (every rank logs the same names)."""
    if not is_parallel(info):
        return dict(values)
    keys = sorted(values)
    sums = all_sum([values[k] for k in keys], info)
    return {k: s / info.world_size for k, s in zip(keys, sums)}  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ leader and followers


def _broadcast_command(info: DistInfo, op: int, n: int, extra: int = 0) -> tuple[int, int, int]:
    import torch
    import torch.distributed as dist

    t = torch.tensor([op, n, extra], dtype=torch.int64, device=info.comm_device)
    dist.broadcast(t, 0)
    op, n, extra = (int(v) for v in t.cpu())
    return op, n, extra


class _Leader:
    """Rank 0's task for bench.trainer.train: tells the followers each call before making it."""

    def __init__(self, task: Any, info: DistInfo):
        self.task, self.info = task, info
        # the trainer looks these up with getattr(..., None): absent on the task, absent here
        if not callable(getattr(task, "evaluate", None)):
            self.evaluate = None  # type: ignore[assignment]
        if not callable(getattr(task, "preview", None)):
            self.preview = None  # type: ignore[assignment]

    def state(self) -> dict[str, Any]:
        return self.task.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.task.load_state(state)

    def begin(self, step: int) -> None:
        _broadcast_command(self.info, BEGIN, step)
        begin = getattr(self.task, "begin", None)
        if callable(begin):
            begin(step)

    def step(self, step: int, autocast: "Autocast") -> Mapping[str, float]:
        _broadcast_command(self.info, STEP, step)
        return self.task.step(step, autocast)

    def evaluate(self, step: int) -> Mapping[str, float]:  # type: ignore[no-redef]
        _broadcast_command(self.info, EVALUATE, step)
        return self.task.evaluate(step)

    def preview(self, step: int) -> Any:  # type: ignore[no-redef]
        return self.task.preview(step)   # rank 0 only: a preview must not communicate


def lead(task: Any, info: DistInfo, run: Callable[[Any], "TrainResult"]) -> "TrainResult":
    """Rank 0: `run(wrapped task)` (bench.trainer.train with the folder and settings bound), then tell
    the followers to stop at the step it reached. An exception other than an interruption leaves the
    followers waiting; torchrun ends them when this process fails."""
    from bench.trainer import Interrupted

    leader = _Leader(task, info)
    try:
        out = run(leader)
    except Interrupted as e:
        _broadcast_command(info, STOP, e.result.steps_done, STOPPED.index("interrupted"))
        raise
    _broadcast_command(info, STOP, out.steps_done, STOPPED.index(out.stopped))
    return out


@dataclass(frozen=True)
class Followed:
    """What a follower did: the leader's final step and stop reason, where this rank resumed, its seconds."""

    steps_done: int
    resumed_from: int
    stopped: str
    seconds: float


def follow(task: Any, info: DistInfo, folder: Any, autocast: "Autocast") -> Followed:
    """A follower: load the leader's checkpoint from `folder` (the one its trainer resumes from), then
    repeat the leader's calls on `task` until it says stop. Raises KeyboardInterrupt when the leader
    was interrupted (it checkpointed; nothing is left to do here)."""
    from pathlib import Path

    from bench.trainer import FORMAT, StopSignals, read_checkpoint

    t0 = time.monotonic()
    ckpt = read_checkpoint(Path(folder))
    start = 0
    if ckpt is not None and int(ckpt.get("format", 0)) == FORMAT:  # another format: the leader refuses it
        task.load_state(ckpt["task"])
        start = int(ckpt["step"])
    del ckpt
    # SIGINT / SIGTERM are left to the leader (torchrun or the terminal signals it too): it finishes
    # the step with everyone, checkpoints and says stop; a second signal on a follower raises
    with StopSignals("signal {signum} again on a follower: stopping at once"):
        while True:
            op, n, extra = _broadcast_command(info, STOP, 0)
            if op == STOP:
                stopped = STOPPED[extra]
                if stopped == "interrupted":
                    raise KeyboardInterrupt(f"rank {info.rank}: the leader was interrupted at step {n} (checkpointed)")
                return Followed(n, start, stopped, time.monotonic() - t0)
            if op == BEGIN:
                begin = getattr(task, "begin", None)
                if callable(begin):
                    begin(n)
            elif op == STEP:
                task.step(n, autocast)
            elif op == EVALUATE:
                task.evaluate(n)
            else:
                raise RuntimeError(f"rank {info.rank}: unknown command {op} from the leader")
