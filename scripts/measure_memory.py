"""Peak memory of `bench prepare` / `bench run` on a large and a long clip (issue 16).

Builds, with the suite's ffmpeg (argument lists), from a real clip:
  portrait: the first `--seconds` s scaled to 1080 wide and padded to 1080x1920 (a phone portrait clip);
  long:     the clip looped (`-stream_loop`) to `--long-seconds` s (default 5 minutes);
then runs each `bench` command as a child process and reports its peak RSS (wait4's ru_maxrss: the
largest of the process and its children, e.g. an ffmpeg it starts) and, from RSS samples taken every
0.1 s, the log line that was last printed before the peak (which phase held the memory).

    .venv/bin/python scripts/measure_memory.py --clip ../shared/data/clips/german_20s.mp4 --case portrait \
        --methods reference,frozen --metrics psnr,ssim,output_check --test-seconds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ffmpeg(*args: str) -> None:
    from metrics.sync.inputs import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)


def portrait_clip(source: Path, out: Path, seconds: float = 8.0, width: int = 1080, height: int = 1920) -> Path:
    """`seconds` of `source` scaled to `width` wide and padded to width x height (black bars)."""
    vf = (f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
          f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1")
    ffmpeg("-i", str(source), "-t", f"{seconds}", "-vf", vf, "-r", "25", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out


def looped_clip(source: Path, out: Path, seconds: float = 300.0) -> Path:
    """`source` played over and over (video and audio) until `seconds`, re-encoded at its own size."""
    ffmpeg("-stream_loop", "-1", "-i", str(source), "-t", f"{seconds}", "-r", "25", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out


def vm_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Measured:
    command: list[str]
    returncode: int
    peak_kb: int                      # wait4 ru_maxrss: the process or its largest child
    seconds: float
    samples: list[tuple[float, int]] = field(default_factory=list)    # (t, VmRSS kB) of the bench process
    lines: list[tuple[float, str]] = field(default_factory=list)      # (t, stderr/stdout line)

    def phase_at_peak(self) -> str:
        if not self.samples:
            return ""
        t_peak = max(self.samples, key=lambda s: s[1])[0]
        before = [line for t, line in self.lines if t <= t_peak]
        return before[-1] if before else ""

    def phases(self, top: int = 8) -> list[tuple[int, str]]:
        """(max sampled RSS kB, log line) for the log lines whose following interval held the most."""
        out = []
        for k, (t0, line) in enumerate(self.lines):
            t1 = self.lines[k + 1][0] if k + 1 < len(self.lines) else float("inf")
            rss = [r for t, r in self.samples if t0 <= t < t1]
            if rss:
                out.append((max(rss), line))
        return sorted(out, reverse=True)[:top]


def measure(command: list[str], env: dict[str, str] | None = None, sample_s: float = 0.1,
            cwd: Path | None = None) -> Measured:
    """Run `command` (in `cwd`), sample its RSS, and return its peak (ru_maxrss from wait4, kB)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            errors="replace", cwd=cwd)
    result = Measured(command, 0, 0, 0.0)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            result.lines.append((time.monotonic() - t0, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while True:
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        rss = vm_rss_kb(proc.pid)
        if rss is not None:
            result.samples.append((time.monotonic() - t0, rss))
        time.sleep(sample_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    result.returncode, result.peak_kb, result.seconds = proc.returncode, int(usage.ru_maxrss), time.monotonic() - t0
    return result


def bench_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TALKBENCH_CACHE"] = str(cache)
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, required=True, help="a real clip to build the test media from")
    p.add_argument("--case", choices=("portrait", "long", "as-is"), default="portrait")
    p.add_argument("--seconds", type=float, default=8.0, help="portrait: seconds kept")
    p.add_argument("--long-seconds", type=float, default=300.0, help="long: length of the looped clip")
    p.add_argument("--methods", default="reference,frozen")
    p.add_argument("--metrics", default="psnr,ssim,output_check")
    p.add_argument("--test-seconds", default="auto")
    p.add_argument("--budget", default="quick")
    p.add_argument("--work", type=Path, default=None, help="folder for media, cache and runs (default: a temp dir)")
    p.add_argument("--skip-prepare", action="store_true")
    p.add_argument("--code", type=Path, default=None,
                   help="run the suite from this checkout instead (e.g. `git worktree add /tmp/old HEAD~3`: the "
                        "numbers before a change); it goes first on PYTHONPATH")
    args = p.parse_args(argv)

    work = (args.work or Path(tempfile.mkdtemp(prefix="talkbench-memory-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    media = work / f"{args.case}.mp4"
    if not media.is_file():
        t = time.monotonic()
        if args.case == "portrait":
            portrait_clip(args.clip, media, args.seconds)
        elif args.case == "long":
            looped_clip(args.clip, media, args.long_seconds)
        else:
            media = args.clip
        print(f"built {media} in {time.monotonic() - t:.1f} s", flush=True)
    from data_recipes.media import probe

    info = probe(media).video
    frame_mb = info.width * info.height * 3 / 1e6
    print(f"{media}: {info.width}x{info.height}, {info.frames} frames ({info.duration:.1f} s); one RGB frame "
          f"{frame_mb:.2f} MB, the whole clip {frame_mb * info.frames / 1e3:.2f} GB", flush=True)
    bench = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())"]
    common = ["--dataset", f"video:{media}", "--test-seconds", args.test_seconds, "--progress", "log"]
    env = bench_env(work / ("cache" if args.code is None else "cache-code"))
    if args.code is not None:
        env["PYTHONPATH"] = str(args.code.resolve())
    runs = []
    if not args.skip_prepare:
        runs.append(("prepare", [*bench, "prepare", *common, "--methods", args.methods, "--workers", "1"]))
    runs.append(("run", [*bench, "run", *common, "--methods", args.methods, "--metrics", args.metrics,
                         "--budget", args.budget, "--runs-dir", str(work / ("runs" if args.code is None else "runs-code")), "--no-report", "--workers", "1"]))
    for name, cmd in runs:
        # run outside the checkout: `python -c` puts the working directory first on sys.path, which
        # would shadow --code
        m = measure(cmd, env, cwd=work)
        print(f"\n== bench {name}: exit {m.returncode}, peak RSS {m.peak_kb / 1024:.0f} MiB, {m.seconds:.0f} s", flush=True)
        print(f"   last log line before the peak: {m.phase_at_peak()}")
        for rss, line in m.phases():
            print(f"   {rss / 1024:7.0f} MiB  {line[:150]}")
        if m.returncode != 0:
            print("\n".join(line for _, line in m.lines[-30:]))
        trace = work / f"trace-{name}{'' if args.code is None else '-code'}.tsv"
        with open(trace, "w") as f:   # every sample and log line in time order, for a closer look
            for t, rss in m.samples:
                f.write(f"{t:.1f}\trss\t{rss}\n")
            for t, line in m.lines:
                f.write(f"{t:.1f}\tlog\t{line}\n")
        print(f"   trace: {trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
