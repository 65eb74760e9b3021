"""`bench run --executor ray`: the run as shard tasks on a Ray cluster gives the local run's results,
and a worker killed mid-run is retried and loses nothing.

One local cluster for these tests: `ray start --head --block` in a subprocess on 127.0.0.1 (2 CPUs, no
dashboard, its own temp dir), stopped by its process id at the end. The methods are the baselines and
the tiny trainable `tinted` (a dataset part and a subject part), registered in the workers through the
executor's setup hook; the metrics psnr, ssim and fps, on the embedded demo."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.progress import Progress
from bench.results import load_run
from tests.bench.tiny_methods import Tinted, comparable, demo_config, register

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'talkbench[ray]')")

# Where a test's worker is told to die once: the first fit of tinted's subject part touches this file
# and ends its process with os._exit (no cleanup, no checkpoint: as a kill -9 or a lost node would).
CRASH_ENV = "TALKBENCH_TEST_CRASH_ONCE"
SETUP = f"{__name__}:register_in_worker"


class CrashOnceTinted(Tinted):
    """`tinted` itself (same spec, name and version, so the rows equal a local run's) whose subject
    fit kills its worker the first time, when $TALKBENCH_TEST_CRASH_ONCE names a file not yet there."""

    def fit_part(self, part, clips, budget):
        marker = os.environ.get(CRASH_ENV)
        if marker and part.name == "person" and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().fit_part(part, clips, budget)


def register_in_worker() -> None:
    """The executor's setup hook: each Ray task registers `tinted` before its runner starts."""
    import methods

    methods.BUILTIN_METHODS["tinted"] = f"{__name__}:CrashOnceTinted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a local head node started once for these tests (module docstring); module-scoped,
    so it is stopped when they end, not kept (320 MB, a few processes) through the rest of the suite."""
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip(f"the ray command is not installed beside {sys.executable}")
    # Ray's unix socket paths have a length limit: a short folder of its own, not pytest's tmp path
    temp = Path(tempfile.mkdtemp(prefix="tbray-", dir="/tmp"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    log = temp / "ray-start.log"
    cmd = [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
           "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
           "--disable-usage-stats", "--object-store-memory=100000000"]
    with open(log, "wb") as out:
        # its own process group: the head's processes can be stopped by this id, and nothing else's
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        # --block: on SIGTERM ray start stops what it started, but first drains the node for up to 30 s;
        # nothing is left to drain here, so a short grace, then its whole process group (by its id)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)




@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The local (unsharded, in-process) run: results and the cache whose recipe stages the Ray runs reuse."""
    from bench.runner import run

    root = tmp_path_factory.mktemp("ray-local")
    with pytest.MonkeyPatch.context() as mp:
        register(mp)
        mp.setenv("TALKBENCH_WEIGHTS", str(root / "weights"))
        mp.setenv("TALKBENCH_CACHE", str(root / "cache"))
        outcome = run(demo_config(root / "runs"), progress=Progress.off())
    return outcome, root


def _fresh_cache(local_root: Path, cache: Path) -> None:
    """Recipe stages copied (no clip prepared twice) but no fit and no generated video: the Ray run
    trains and generates everything again, so equal results are computed, not read back."""
    for ns in ("stages", "file-hashes"):
        shutil.copytree(local_root / "cache" / ns, cache / ns)


def _log_lines(path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []


def _ray_run(tmp_path, monkeypatch, address, local_root, **options):
    from bench.executor import RayExecutor, RayOptions

    monkeypatch.setenv("TALKBENCH_WEIGHTS", str(local_root / "weights"))
    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))   # forwarded to the workers
    _fresh_cache(local_root, tmp_path / "cache")
    executor = RayExecutor(RayOptions(address=address, tasks=2, setup=SETUP, **options))
    return executor.run(demo_config(tmp_path / "runs"), command=["bench", "run", "--executor", "ray"],
                        progress=Progress.off())


@needs_ray
def test_ray_executor_gives_the_local_results(tmp_path, monkeypatch, ray_cluster, local_run):
    import builtins

    local, root = local_run
    log = tmp_path / "tinted.log"
    printer = builtins.print
    out = _ray_run(tmp_path, monkeypatch, ray_cluster, root, env={"TINTED_LOG": str(log)})
    assert out.run_dir == tmp_path / "runs" / local.run_dir.name   # the run id of the local run
    assert builtins.print is printer, "Ray replaced the driver's print (RAY_TQDM_PATCH_PRINT)"
    a, b = comparable(load_run(local.run_dir)), comparable(load_run(out.run_dir))
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a, b)

    m = json.loads((out.run_dir / "manifest.json").read_text())
    assert m["status"] == "complete" and len(m["merged_from"]) == 2
    assert m["executor"]["name"] == "ray" and m["executor"]["tasks"] == 2
    shards = m["executor"]["shards"]
    assert sorted(s["shard"] for s in shards) == ["0/2", "1/2"] and all(s["done"] > 0 for s in shards)
    assert out.done == local.done > 0 and out.skipped == 0
    # the tasks ran in Ray's workers (not here), and trained each step of each fit exactly once: the
    # dataset part both shards need was trained by one and loaded by the other through the shared cache
    steps = [(part, step) for pid, part, step in _log_lines(log) if step != "fit"]
    assert sorted(steps) == [("person", "0"), ("person", "1"), ("shared", "0"), ("shared", "1")]
    assert str(os.getpid()) not in {pid for pid, _, _ in _log_lines(log)}


@needs_ray
def test_a_killed_worker_is_retried_and_loses_nothing(tmp_path, monkeypatch, ray_cluster, local_run):
    local, root = local_run
    log, marker = tmp_path / "tinted.log", tmp_path / "crashed"
    out = _ray_run(tmp_path, monkeypatch, ray_cluster, root, max_retries=2,
                   env={"TINTED_LOG": str(log), CRASH_ENV: str(marker)})
    assert marker.exists(), "a worker died in the subject fit"
    fits = [pid for pid, part, what in _log_lines(log) if (part, what) == ("person", "fit")]
    assert len(fits) == 1 and fits[0] != marker.read_text(), "the subject fit ran in the retry's worker"
    # nothing done before the kill was done again: the retry kept the parts the killed attempt had
    # written, and the dataset fit it had trained was loaded, not trained a second time
    assert out.skipped > 0
    steps = [(part, step) for pid, part, step in _log_lines(log) if step != "fit"]
    assert sorted(steps) == [("person", "0"), ("person", "1"), ("shared", "0"), ("shared", "1")]
    m = json.loads((out.run_dir / "manifest.json").read_text())
    killed = [h for h in m["history"] if "finished" not in h]
    assert len(killed) == 1 and m["invocations"] == 3, "the killed invocation, its retry and the other shard"
    pd.testing.assert_frame_equal(comparable(load_run(local.run_dir)), comparable(load_run(out.run_dir)))


def test_cli_without_ray_says_how_to_install(monkeypatch, capsys):
    """Exit 2 with the install hint where ray cannot be imported (here: hidden from the import system)."""
    from bench.cli import EXIT_USAGE, main

    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    assert main(["run", "--dataset", "demo", "--methods", "frozen", "--executor", "ray"]) == EXIT_USAGE
    assert "pip install 'talkbench[ray]'" in capsys.readouterr().err
    # and the Ray options are refused without the Ray executor (not silently ignored)
    assert main(["run", "--dataset", "demo", "--methods", "frozen", "--ray-tasks", "2"]) == EXIT_USAGE
    assert "--executor ray" in capsys.readouterr().err


def test_shard_count_rules(tmp_path):
    from bench.executor import existing_shard_counts, shard_count

    cpus = {"CPU": 8.0}
    assert shard_count(None, [], cpus, 1.0, 0.0, requests=100) == 8       # what the cluster runs at once
    assert shard_count(None, [], cpus, 2.0, 0.0, requests=100) == 4
    assert shard_count(None, [], cpus, 1.0, 0.0, requests=3) == 3         # never more tasks than requests
    assert shard_count(None, [], {"CPU": 8.0, "GPU": 2.0}, 1.0, 1.0, requests=100) == 2
    assert shard_count(None, [], {"CPU": 8.0, "GPU": 2.0}, 1.0, 0.5, requests=100) == 4
    assert shard_count(None, [5], cpus, 1.0, 0.0, requests=100) == 5      # an earlier Ray run's N: resume it
    assert shard_count(3, [5], cpus, 1.0, 0.0, requests=100) == 3         # unless told otherwise
    assert shard_count(None, [], {}, 1.0, 0.0, requests=0) == 1
    from bench.runner import RunError

    with pytest.raises(RunError):
        shard_count(0, [], cpus, 1.0, 0.0, requests=10)
    for name in ("demo-abc.shard-0-of-3", "demo-abc.shard-2-of-3", "demo-abc.shard-0-of-2", "demo-abcd.shard-0-of-4"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / "demo-abc.shard-1-of-7").mkdir()   # no manifest: not a run folder
    assert existing_shard_counts(tmp_path, "demo-abc") == [2, 3]


def test_what_the_tasks_inherit():
    from bench.executor import _is_local, forwarded_env

    env = {"TALKBENCH_CACHE": "/c", "TALKBENCH_WEIGHTS": "/w", "XDG_CACHE_HOME": "/x", "HOME": "/h",
           "PATH": "/bin", "RAY_ADDRESS": "h:1"}
    assert forwarded_env(env, {"EXTRA": "1"}) == {"TALKBENCH_CACHE": "/c", "TALKBENCH_WEIGHTS": "/w",
                                                  "XDG_CACHE_HOME": "/x", "EXTRA": "1"}
    assert _is_local(None) and _is_local("127.0.0.1:6379") and _is_local("localhost:1") and _is_local("auto")
    assert not _is_local("10.0.0.5:6379") and not _is_local("ray://head:10001")
