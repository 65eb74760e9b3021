"""Executors: where the work of one `bench run` runs.

    bench run ... --executor local                      (default) everything in this process
    bench run ... --executor ray [--ray-address HOST:PORT] [--ray-tasks N]

`local` is `bench.runner.run` as it always was.

`ray` (the extra `talkbench[ray]`) splits the run into N shard tasks with the same deterministic
split as `bench run --shard i/N` (bench.shard) and sends them to a Ray cluster:

- The driver (this process) connects to `--ray-address` (or $RAY_ADDRESS, or a cluster `ray start`
  began on this machine; with none it starts a local one for the run and stops it after), counts the
  run's requests (dataset listing only: nothing is prepared, fitted or scored here), chooses N
  (`--ray-tasks`; default: the cluster's CPUs / CPUs per task, or GPUs / GPUs per task, at most one
  task per request; a rerun keeps the N of the shard folders an earlier Ray run left) and submits
  one task per shard.
- Each task is `bench.runner.run(config with shard=i/N)` in a Ray worker process, declared with
  `--ray-cpus` CPUs and `--ray-gpus` GPUs (default 1 with --device cuda, or with --device auto on a
  cluster that has GPUs; fractions share a GPU). A task is one whole runner: it prepares the clips
  its requests and fits need, fits (or loads) the models of its share and holds them while it
  generates and scores its requests, so each worker loads every model and scorer once for its share
  and nothing large crosses the network: tasks exchange files through the shared cache and runs
  folder, and return a few numbers. No actors: a task's process keeps its models for the task's
  lifetime, which is the whole share.
- The task runs in the driver's working directory with the driver's talkbench environment
  ($TALKBENCH_CACHE, $TALKBENCH_WEIGHTS, every other TALKBENCH_* variable, XDG_CACHE_HOME, ...), so
  relative paths and the cache resolve as in a local run. On a cluster of several machines the runs
  folder, the cache and the data must be on a shared filesystem mounted at the same path everywhere.
- Dataset-level fits are needed by every shard: the first task to reach one trains it under the
  fit's lock (bench.locks) and the others wait and load its checkpoints, so all tasks use one model.
- A worker that dies (killed, out of memory, node lost) is retried by Ray (`--ray-retries`,
  default 3): the retry is the same shard rerun, which resumes under the runner's rules (parts
  already written are kept, fits continue from their checkpoints), so a killed worker loses at most
  the request and the training steps since the last checkpoint in flight. An exception inside the
  run (a bad configuration) is not retried; it is raised here as a local run raises it.
- Equal results: the split, the seeds and the cache keys are those of a local run, so rows equal a
  local run's wherever the computation does not depend on the thread count (the baselines, every
  metric, tests/bench/test_ray_executor.py). Ray runs a task with OMP_NUM_THREADS = its CPUs, and a
  model trained (Wav2Lip's quick fit in bf16) with 1 thread instead of a local run's 2 sums in another
  order: its weights, and so its videos and scores, differ in the last bits (measured in
  docs/BENCHMARKS.md, "Ray executor"). `--ray-cpus` equal to the local run's thread count gives the
  same bits. The merged manifest's `executor.shards[].torch_threads` says what each task used. Speed
  (fps) is measured while the node's other tasks run; its load is recorded with every video.
- When every task is done the driver merges the shard folders `<runs>/<run-id>.shard-<i>-of-<N>`
  into `<runs>/<run-id>` (bench.shard.merge: exactly the unsharded run's results) and builds the
  report there as a local run does; the merged manifest's `executor` entry says how it ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from bench.config import RunConfig
from bench.progress import Progress
from bench.runner import RunError, RunOutcome

EXECUTORS = ("local", "ray")

# Environment a shard task gets from the driver (besides every TALKBENCH_* variable): where the
# default cache and weights live, and what decides torch's CPU kernels (and so the precision rule).
FORWARDED_ENV = ("XDG_CACHE_HOME", "ATEN_CPU_CAPABILITY", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
FORWARDED_PREFIXES = ("TALKBENCH_",)

# Set (when not set already) while the driver connects: write no auth token into ~/.ray, send no usage
# statistics; and for a cluster on this machine (no address, or a loopback one), take 127.0.0.1 as this
# node's address (a cluster started here then listens on 127.0.0.1 only; without it Ray picks the
# machine's interface address). Not for a remote cluster: its workers must reach the driver.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
LOCAL_CLUSTER_ENV = {**RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

INSTALL_HINT = "pip install 'talkbench[ray]'"


class ExecutorFailed(RuntimeError):
    """A shard task could not finish (its worker died more often than the retries allow); what the
    other tasks wrote is kept and rerunning the same command resumes."""


class Executor(Protocol):
    name: str

    def run(self, config: RunConfig, command: list[str] | None = None,
            progress: Progress | None = None) -> RunOutcome: ...


@dataclass(frozen=True)
class LocalExecutor:
    """Today's behaviour: the whole run in this process."""

    name: str = "local"

    def run(self, config: RunConfig, command: list[str] | None = None,
            progress: Progress | None = None) -> RunOutcome:
        from bench.runner import run

        return run(config, command=command, progress=progress)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None          # None: $RAY_ADDRESS, a cluster started on this machine, or a new one
    tasks: int | None = None            # shard tasks; None: from the cluster's resources (module docstring)
    cpus_per_task: float = 1.0
    gpus_per_task: float | None = None  # None: 1 with --device cuda (or auto on a cluster with GPUs), else 0
    max_retries: int = 3                # retries of a task whose worker died
    # Extra environment for the tasks, and a function every task calls first, named "module:function"
    # (imported in the worker once the driver's sys.path is there): tests register a method with it.
    env: Mapping[str, str] = field(default_factory=dict)
    setup: str | None = None


def ray_module() -> Any:
    """`ray`, or a RunError that says how to install it (a usage error, as an unknown method is)."""
    try:
        import ray
    except ImportError as e:
        raise RunError(f"--executor ray needs the ray package ({e}); install it with: {INSTALL_HINT}") from None
    return ray


def forwarded_env(environ: Mapping[str, str], extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The driver's variables a shard task must see (module docstring), plus `extra`."""
    out = {k: v for k, v in environ.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_ENV}
    out.update(extra)
    return out


def shard_count(requested: int | None, existing: Sequence[int], resources: Mapping[str, float],
                cpus_per_task: float, gpus_per_task: float, requests: int) -> int:
    """How many shard tasks: `requested` when given; else the N of an earlier Ray run's shard folders
    (so a rerun resumes them); else as many as the cluster runs at once. Never more than the run's
    requests (an empty shard only costs a worker), never fewer than 1."""
    if requested is not None:
        if requested < 1:
            raise RunError(f"--ray-tasks {requested}: need at least 1")
        return min(requested, max(requests, 1))
    if len(set(existing)) == 1:
        return existing[0]
    fits = [int(resources.get("CPU", 0) // cpus_per_task)] if cpus_per_task > 0 else []
    if gpus_per_task > 0:
        fits.append(int(resources.get("GPU", 0) // gpus_per_task))
    n = min(fits) if fits else 1
    return max(1, min(n, max(requests, 1)))


def existing_shard_counts(runs_dir: Path, run_id: str) -> list[int]:
    """N of every `<run-id>.shard-<i>-of-<N>` folder with a manifest (from an earlier Ray run or --shard)."""
    out = []
    for m in Path(runs_dir).glob(f"{glob.escape(run_id)}.shard-*-of-*/manifest.json"):
        tail = m.parent.name[len(run_id) + len(".shard-"):]
        _, _, n = tail.partition("-of-")
        if n.isdigit():
            out.append(int(n))
    return sorted(set(out))


def _is_local(address: str | None) -> bool:
    """No address (a cluster on this machine, or a new one) or a loopback one."""
    if not address or address == "auto":
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _env_defaults(values: Mapping[str, str]) -> Iterator[None]:
    """Set the variables not set already; restore on exit (only processes started inside see them)."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """SIGINT / SIGTERM handlers as they were before (main thread only, Python's rule)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def _count_requests(config: RunConfig) -> int:
    """The run's requests (dataset listing only), to cap N; raises DatasetError as a local run would."""
    from bench.runner import build_requests, dataset_options
    from data_recipes.datasets import load

    dataset = load(config.dataset, dataset_options(config.limit, config.subjects, config.test_seconds, config.pairs))
    return len(build_requests(dataset, config.split, config.cross))


def run_shard_task(config: RunConfig, env: Mapping[str, str], cwd: str, sys_path: Sequence[str],
                   progress_mode: str, command: list[str], setup: str | None) -> dict[str, Any]:
    """One shard, inside a Ray worker: the driver's environment and working directory for the
    duration of the task (a worker process runs many tasks), then `bench.runner.run`."""
    import socket

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    for p in sys_path:          # a source checkout that is not installed: import it as the driver does
        if p and p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    before = os.getcwd()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        if setup:
            import importlib

            module, _, function = setup.partition(":")
            getattr(importlib.import_module(module), function)()
        from bench.runner import run

        t0 = time.monotonic()
        outcome = run(config, command=command, progress=Progress(progress_mode))
        return {"shard": config.shard, "torch_threads": _torch_threads(), "run_dir": str(outcome.run_dir), "done": outcome.done,
                "skipped": outcome.skipped, "rows": 0 if outcome.results is None else len(outcome.results),
                "seconds": round(time.monotonic() - t0, 3), "host": socket.gethostname(), "pid": os.getpid(),
                "status": outcome.manifest.get("status")}
    finally:
        os.chdir(before)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _torch_threads() -> int | None:
    """torch's intra-op threads in this worker: Ray gives a task OMP_NUM_THREADS = its CPUs, and a model
    trained with another thread count than a local run's may differ in the last bits (module docstring)."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


@dataclass(frozen=True)
class RayExecutor:
    """The run as N shard tasks on a Ray cluster, merged here (module docstring)."""

    options: RayOptions = RayOptions()
    name: str = "ray"

    def run(self, config: RunConfig, command: list[str] | None = None,
            progress: Progress | None = None) -> RunOutcome:
        from bench.runner import default_run_id

        if config.shard:
            raise RunError("--shard and --executor ray do not combine: the Ray executor splits the run itself "
                           "(use --ray-tasks N)")
        # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported (it decides whether a
        # loopback address stays 127.0.0.1), so the defaults are in place before the import
        local = _is_local(self.options.address or os.environ.get("RAY_ADDRESS"))
        ray_env = LOCAL_CLUSTER_ENV if local else RAY_ENV
        with _env_defaults(ray_env):
            ray = ray_module()
        progress = progress or Progress()
        command = list(command) if command is not None else list(sys.argv)
        config = dataclasses.replace(config, run_id=config.run_id or default_run_id(config),
                                     runs_dir=Path(config.runs_dir).absolute())
        out = Path(config.runs_dir) / str(config.run_id)
        _check_output_folder(out)
        requests = _count_requests(config)
        t_start = time.monotonic()
        started_here = not ray.is_initialized()
        if started_here:   # ray.init replaces the driver's SIGTERM handler: Ctrl-C and SIGTERM act as locally
            with _keep_signal_handlers(), _env_defaults(ray_env):
                ray.init(address=self.options.address, include_dashboard=False, log_to_driver=True,
                         logging_level="warning")
        import builtins

        printer = builtins.print
        try:
            connect_s = time.monotonic() - t_start
            return self._run(ray, config, command, progress, out, requests, connect_s, t_start)
        finally:
            if started_here:
                with _keep_signal_handlers():
                    ray.shutdown()
            # Ray's log listener may swap builtins.print for its tqdm-safe one (RAY_TQDM_PATCH_PRINT is
            # read in that thread, after the defaults above are gone): the host process gets its own back
            builtins.print = printer

    def _run(self, ray: Any, config: RunConfig, command: list[str], progress: Progress, out: Path,
             requests: int, connect_s: float, t_start: float) -> RunOutcome:
        from bench import manifest as mf
        from bench.shard import Shard, merge

        opts = self.options
        resources = dict(ray.cluster_resources())
        gpus = opts.gpus_per_task
        if gpus is None:
            wants_gpu = config.device.startswith("cuda") or (config.device == "auto" and resources.get("GPU", 0) > 0)
            gpus = 1.0 if wants_gpu else 0.0
        n = shard_count(opts.tasks, existing_shard_counts(config.runs_dir, str(config.run_id)), resources,
                        opts.cpus_per_task, gpus, requests)
        try:
            address = ray.get_runtime_context().gcs_address
        except Exception:   # Ray Client (ray://) does not say
            address = self.options.address or "?"
        progress.log(f"ray: {address} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs, "
                     f"connected in {connect_s:.1f} s): run {config.run_id} as {n} shard task(s) of "
                     f"{opts.cpus_per_task:g} CPU, {gpus:g} GPU each ({requests} requests)")
        task = ray.remote(run_shard_task).options(num_cpus=opts.cpus_per_task, num_gpus=gpus,
                                                  max_retries=opts.max_retries, retry_exceptions=False,
                                                  name="talkbench-shard")
        env = forwarded_env(os.environ, opts.env)
        mode = "off" if progress.mode == "off" else "log"
        pending = {task.remote(dataclasses.replace(config, shard=Shard(i, n).label), env, os.getcwd(),
                               list(sys.path), mode, command, opts.setup): i for i in range(n)}
        summaries: dict[int, dict[str, Any]] = {}
        errors: dict[int, BaseException] = {}
        t_tasks = time.monotonic()
        try:
            with progress, progress.task(f"ray: {n} shard tasks", n) as bar:
                while pending:
                    # a short timeout keeps Ctrl-C responsive (it is handled between Python calls)
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in ready:
                        i = pending.pop(ref)
                        try:
                            summaries[i] = ray.get(ref)
                            progress.log(f"ray: shard {i}/{n} done on {summaries[i]['host']} "
                                         f"({summaries[i]['done']} videos made, {summaries[i]['skipped']} "
                                         f"already done, {summaries[i]['seconds']:.0f} s)")
                        except Exception as e:   # keep waiting: the other shards' work is worth keeping
                            errors[i] = e
                            progress.log(f"ray: shard {i}/{n} failed: {_reason(ray, e)}")
                        bar.advance()
        except KeyboardInterrupt:
            # the tasks get a KeyboardInterrupt of their own: they checkpoint and mark their shard interrupted
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            with contextlib.suppress(BaseException):   # a moment to checkpoint before a local cluster stops
                ray.wait(list(pending), num_returns=len(pending), timeout=30.0)
            raise
        tasks_s = time.monotonic() - t_tasks
        if errors:
            i, e = min(errors.items())
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception) and not isinstance(e, ray.exceptions.WorkerCrashedError):
                raise cause from None    # the run's own error (RunError, DatasetError, ...), as a local run raises it
            raise ExecutorFailed(f"shard {i}/{n} failed: {_reason(ray, e)}; the other shards' work is kept: "
                                 "rerun the same command to resume") from e
        t0 = time.monotonic()
        merged = merge([Path(s["run_dir"]) for _, s in sorted(summaries.items())], out)
        merge_s = time.monotonic() - t0
        for note in merged.notes:
            progress.log(f"note: {note}")
        manifest = mf.read(out / "manifest.json")
        manifest["executor"] = {
            "name": "ray", "address": address, "tasks": n, "cpus_per_task": opts.cpus_per_task,
            "gpus_per_task": gpus, "max_retries": opts.max_retries,
            "cluster": {"CPU": resources.get("CPU", 0), "GPU": resources.get("GPU", 0)},
            "shards": [{"shard": s["shard"], "host": s["host"], "seconds": s["seconds"], "done": s["done"],
                        "skipped": s["skipped"], "torch_threads": s["torch_threads"]}
                       for _, s in sorted(summaries.items())],
            "seconds": {"connect": round(connect_s, 3), "tasks": round(tasks_s, 3), "merge": round(merge_s, 3)},
        }
        report = None
        if config.report:
            report = _report(out, manifest, progress)
        manifest["executor"]["seconds"]["wall"] = round(time.monotonic() - t_start, 3)
        mf.write(out / "manifest.json", manifest)
        return RunOutcome(out, merged.results, manifest, report,
                          skipped=sum(s["skipped"] for s in summaries.values()),
                          done=sum(s["done"] for s in summaries.values()))


def _reason(ray: Any, e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def _check_output_folder(out: Path) -> None:
    """The merge writes `<runs>/<run-id>`; a local run of the same configuration there is not overwritten."""
    from bench import manifest as mf

    if (out / "manifest.json").is_file() and "merged_from" not in mf.read(out / "manifest.json"):
        raise RunError(f"{out} holds a local run of this configuration; the Ray executor writes its merged "
                       "result there: use another --run-id or --runs-dir")


def _report(out: Path, manifest: dict[str, Any], progress: Progress) -> Path | None:
    """The HTML report of the merged run, as a local run builds it (a failure is logged, not raised)."""
    import traceback

    from bench import manifest as mf

    t0 = time.monotonic()
    try:
        from reports.build import build_report

        with progress:
            path = build_report([out], progress=progress)
    except Exception as e:
        progress.log(f"error: report failed: {type(e).__name__}: {e} (results are saved; "
                     f"retry with `bench report {out}`)")
        traceback.print_exc(file=sys.stderr)
        return None
    mf.add_phase(manifest, "report", time.monotonic() - t0)
    return path


def make(name: str, ray: RayOptions | None = None) -> Executor:
    """The executor called `name` (EXECUTORS)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray or RayOptions())
    raise RunError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
