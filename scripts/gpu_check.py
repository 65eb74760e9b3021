"""GPU check: the demo end to end with `--device cuda`, then the CUDA tests, as one compact table.

    make gpu-check                       # or: .venv/bin/python scripts/gpu_check.py [options]

Where no CUDA device is visible it says so and exits with status 2 without running anything (the
CPU paths are what `make demo` / `make test` check). The demo runs in a new run folder under
./runs (report included) with an empty temporary cache by default, so its phase times are a cold start like a fresh clone's (`--warm-cache`
reuses your cache instead). The table gives the phase times of the run, the frames per second of
every method (the fps metric: generation seconds only, file IO excluded), the precision each
component ran at (from the manifest) and the outcome of the CUDA tests. Paste it into
docs/BENCHMARKS.md with the GPU's name.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
NO_CUDA_EXIT = 2


def cuda_device() -> str | None:
    """The name of CUDA device 0, or None when torch sees no CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def bench_command() -> list[str]:
    """The `bench` entry point of the interpreter running this script (the project's venv)."""
    exe = Path(sys.executable).parent / "bench"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from bench.cli import main; "
                                            "sys.exit(main())"]


def run_demo(runs_dir: Path, run_id: str, budget: str, env: dict[str, str], timeout: float) -> tuple[int, float]:
    """`bench run --methods all --dataset demo --device cuda`; returns (exit status, wall seconds)."""
    cmd = [*bench_command(), "run", "--methods", "all", "--dataset", "demo", "--device", "cuda",
           "--budget", budget, "--runs-dir", str(runs_dir), "--run-id", run_id]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    try:
        rc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, time.monotonic() - t0


def run_cuda_tests(env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    """The CUDA tests: those marked `gpu` or named after cuda. Returns (status, summary line, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda or gpu", "tests"]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.monotonic() - t0
    sys.stdout.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-2000:])
    return proc.returncode, test_summary(proc.stdout), time.monotonic() - t0


def test_summary(pytest_output: str) -> str:
    """pytest's final count line ("3 passed, 1 skipped in 4.2s"), or what is left of it."""
    for line in reversed(pytest_output.strip().splitlines()):
        if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b", line):
            return line.strip("= ").strip()
    return "no pytest summary"


def summarise(run_dir: Path) -> dict[str, Any]:
    """Phases, fps per method and precision per component, read from a finished run folder."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    fps: dict[str, list[float]] = {}
    results = run_dir / "results.csv"
    if results.is_file():
        with results.open(newline="") as f:
            for row in csv.DictReader(f):
                if row["metric"] == "fps" and row["status"] == "ok":
                    fps.setdefault(row["method"], []).append(float(row["value"]))
    precision: list[tuple[str, str, str]] = []
    run_p = manifest.get("precision", {})
    if run_p:
        precision.append(("run (--precision)", f"{run_p.get('requested')} -> auto = {run_p.get('auto', {}).get('name')}",
                          run_p.get("auto", {}).get("reason", "")))
    for kind in ("methods", "metrics"):
        for name, entry in manifest.get(kind, {}).items():
            for use, p in (entry.get("precision") or {}).items():
                precision.append((f"{kind[:-1]} {name} ({use})", p.get("name", "?"), p.get("reason", "")))
    for stage, entries in (run_p.get("stages") or {}).items():
        for p in entries:
            precision.append((f"stage {stage}", p.get("name", "?"), p.get("reason", "")))
    return {"status": manifest.get("status"), "device": manifest.get("device"),
            "phases": manifest.get("last_invocation", {}).get("phases") or manifest.get("phases", {}),
            "wall": manifest.get("last_invocation", {}).get("wall_seconds"),
            "fps": {m: sum(v) / len(v) for m, v in sorted(fps.items())}, "precision": precision,
            "unavailable": {n: e.get("reason", "") for n, e in manifest.get("methods", {}).items()
                            if not e.get("available", True)}}


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A Markdown table (it reads as a table in a terminal too)."""
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def report(gpu: str, summary: dict[str, Any] | None, demo: tuple[int, float] | None,
           tests: tuple[int, str, float] | None) -> str:
    out = [f"GPU check on {gpu}"]
    if demo is not None:
        rc, seconds = demo
        out.append(f"\ndemo (`bench run --methods all --dataset demo --device cuda`): exit {rc}, {seconds:.0f} s wall")
    if summary is not None:
        rows = [(phase, f"{sec:.1f} s") for phase, sec in summary["phases"].items()]
        out += ["", table(rows, ("phase", "time"))]
        if summary["fps"]:
            out += ["", table([(m, f"{v:,.1f}") for m, v in summary["fps"].items()], ("method", "fps (generation)"))]
        if summary["unavailable"]:
            out += ["", table(sorted(summary["unavailable"].items()), ("unavailable method", "reason"))]
        if summary["precision"]:
            out += ["", table(summary["precision"], ("component", "precision", "why"))]
    if tests is not None:
        rc, line, seconds = tests
        out.append(f"\nCUDA tests (pytest -k 'cuda or gpu'): exit {rc}: {line} ({seconds:.0f} s)")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"),
                    help="where the demo's run folder goes, report included (default: ./runs)")
    ap.add_argument("--budget", default="quick", help="bench run --budget (default: quick)")
    ap.add_argument("--warm-cache", action="store_true", help="reuse $TALKBENCH_CACHE instead of an empty cache")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--timeout", type=float, default=3000.0, help="seconds per step (default: 3000)")
    args = ap.parse_args(argv)

    gpu = cuda_device()
    if gpu is None:
        print("gpu-check: no CUDA device is visible to torch here (torch.cuda.is_available() is False), so "
              "there is nothing to check. Run it on a machine with an NVIDIA GPU and a CUDA build of torch; "
              "on this machine `make demo` and `make test` check the CPU paths.", file=sys.stderr)
        return NO_CUDA_EXIT
    with tempfile.TemporaryDirectory(prefix="talkbench-gpu-check-") as tmp:
        env = dict(os.environ)
        if not args.warm_cache:
            env["TALKBENCH_CACHE"] = str(Path(tmp) / "cache")
        runs_dir = args.runs_dir
        run_id = f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
        demo = summary = tests = None
        if not args.skip_demo:
            demo = run_demo(runs_dir, run_id, args.budget, env, args.timeout)
            if (runs_dir / run_id / "manifest.json").is_file():
                summary = summarise(runs_dir / run_id)
        if not args.skip_tests:
            tests = run_cuda_tests(env, args.timeout)
        print("\n" + report(gpu, summary, demo, tests))
    failed = (demo is not None and demo[0] != 0) or (tests is not None and tests[0] not in (0, 5))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
