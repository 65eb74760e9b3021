"""`bench`: run the benchmark, prepare data, list what is available, build reports, show the machine.

    bench run --methods all --dataset demo
    bench prepare --dataset cmlr:/data/CMLR --methods wav2lip --limit 20
    bench list
    bench report runs/<id> [runs/<id2> ...]
    bench run --dataset cmlr:/data/CMLR --shard 0/8    (one of 8 processes; then bench merge runs/<id>.shard-*)
    bench run --dataset demo --executor ray [--ray-address HOST:PORT]   (shard tasks on a Ray cluster, merged)
    bench cache [--prune --runs runs/]
    bench env
    bench score out.mp4 --metrics lse --json
    bench generate --method wav2lip --face face.mp4 --audio speech.wav --out out.mp4 --set wav2lip.checkpoint=F
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _set_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise argparse.ArgumentTypeError(f"expected <method or metric>.<option>=<value>, got {text!r}")
    return key.strip(), value


def _add_dataset_args(p: argparse.ArgumentParser, split_default: str = "test") -> None:
    p.add_argument("--dataset", default="demo", metavar="NAME[:ARG]",
                   help="demo | video:<file>[+<audio>...] | cmlr:<root> | lrs2:<root> (default: demo, the embedded "
                        "clip). video:clip.mp4+a.wav+b.mp3 adds one cross-driven request per driving audio file "
                        "(wav, mp3, m4a, ...: any rate, any channels), each driving the clip's test segment")
    p.add_argument("--split", default=split_default,
                   help=f"which split to use, or 'all' where allowed (default: {split_default})")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use at most N test clips (and proportionally few training clips)")
    p.add_argument("--subjects", type=_csv, default=(), metavar="A,B",
                   help="keep only these subjects, e.g. CMLR speakers s1,s4 (default: all)")
    p.add_argument("--test-seconds", type=_seconds_or_auto, default=None, metavar="S|auto",
                   help="video:<file> datasets: length of the val and the test segment, rounded to whole "
                        "frames (default: auto = 1/11 of the clip each, 1-4 s, as AD-NeRF's 10:1 split)")
    p.add_argument("--pairs", default=None, metavar="FILE",
                   help="lrs2: the cross-driving pair list '<audio source> <video>' (Wav2Lip's lrs2.txt); "
                        "default: looked up in the dataset root")


def _count_or_all(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'all', got {text!r}")
    return n


def _seconds_or_auto(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'auto', got {text!r}") from None


def _add_progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=("auto", "rich", "log", "off"), default="auto",
                   help="progress display: rich bars on a terminal, plain log lines otherwise (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="talkbench: lip-sync, image quality and speed of talking-head methods.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Weights go in $TALKBENCH_WEIGHTS (default ~/.cache/talkbench/weights); caches in "
               "$TALKBENCH_CACHE (default ~/.cache/talkbench/cache). See README.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="generate and score videos for every method; write results and a report",
                       description="Dataset -> recipe stages -> fit -> generate (self- and cross-driven) -> "
                                   "metrics -> runs/<run-id>/. Rerunning the same command resumes.",
                       epilog="Driving audio: --dataset video:clip.mp4+speech.wav+other.mp3 drives the clip's test "
                              "segment with each audio file too (cross-driven requests; wav, mp3, m4a, ...: any "
                              "format FFmpeg decodes, any rate or channels). Input checks (docs/RELIABILITY.md): a "
                              "clip without any face fails the methods that need faces, with the reason; warnings "
                              "(silent audio, small face, few frames with a face) are logged and kept in the "
                              "manifest and the report. "
                              "Exit status: 0 when every requested cell is ok or unavailable by design (a metric "
                              f"or method without its weights); {EXIT_RUN_FAILED} when a clip, fit, generation "
                              "or score failed (a summary is printed; results are still written); 2 for a bad "
                              f"command line or configuration; {EXIT_BUSY} when another `bench run` holds the run "
                              "folder (retry later); 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM).")
    p.add_argument("--methods", type=_csv, default=("all",), metavar="all|A,B",
                   help="methods to run; 'all' = every available one, unavailable ones are listed with the reason")
    p.add_argument("--metrics", type=_csv, default=("all",), metavar="all|A,B",
                   help="metric families to compute (default: all; unavailable ones are reported with the reason)")
    _add_dataset_args(p)
    p.add_argument("--budget", default="quick", metavar="SPEC",
                   help="training budget, comma-joined: a preset quick | standard | full (each part of each "
                        "method turns it into its own steps); steps=N (every part); <method>.<part>=N (one part "
                        "or one network of a part, e.g. nerf_head.head=20000 or wav2lip.generator=50; `bench list` "
                        "shows the parts); minutes=M (a ceiling on all training of the run, shared out across "
                        "the fits still to do). A fit's checkpoints are kept per method, config, part, seed and "
                        "data but not per budget, so rerunning with a larger budget continues training from them. "
                        "E.g. 'standard,minutes=30,wav2lip.generator=500' (default: quick, sized for the demo on "
                        "2 CPU cores)")
    p.add_argument("--seed", type=int, default=0, help="seed for training and generation (default: 0)")
    p.add_argument("--no-cross", dest="cross", action="store_false",
                   help="skip cross-driven requests (another clip's audio)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "amp"), default="auto",
                   help="numeric precision of the methods' networks: auto = bf16 only where the device "
                        "does it natively (CUDA with bf16, a CPU with AVX-512-BF16 / AMX), else fp32; an "
                        "explicit choice wins, with a warning where it is emulated and slow (default: auto)")
    p.add_argument("--set", dest="overrides", type=_set_pair, action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="set a method or metric option, e.g. --set wav2lip.checkpoint=/w/wav2lip_gan.pth (repeatable)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: ./runs)")
    p.add_argument("--run-id", default=None,
                   help="run folder name (default: <dataset>-<hash of the configuration>, so the same command resumes)")
    p.add_argument("--strip-frames", type=int, default=4, help="frames per report strip (default: 4)")
    p.add_argument("--no-previews", dest="preview_videos", action="store_false",
                   help="do not write preview mp4s for the report")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not build the HTML report")
    p.add_argument("--workers", type=int, default=2, help="parallel workers for data preparation (default: 2)")
    p.add_argument("--samples", type=_count_or_all, default=4, metavar="N|all",
                   help="requests whose frame strips and preview videos are written: the first N the report shows "
                        "(self-driven first, at least one cross-driven) plus any with a failed or degenerate result; "
                        "every request keeps the mp4 LSE scored (default: 4)")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="run only shard i of N (0-based) into <runs-dir>/<run-id>.shard-i-of-N; requests are split "
                        "by request, and by subject for methods with per-subject fits; dataset-level fits are shared "
                        "through the cache (the first shard trains, the others wait and reuse). Combine the N folders "
                        "with `bench merge` (docs/ARCHITECTURE.md, Running on a cluster)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the work runs: local = this process; ray = shard tasks on a Ray cluster (the extra "
                        "talkbench[ray]), merged into <runs-dir>/<run-id> with the same results (bench/executor.py; "
                        "default: local)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="--executor ray: the cluster to use (default: $RAY_ADDRESS, else a cluster `ray start` "
                        "began on this machine, else a local one started for the run, on 127.0.0.1)")
    p.add_argument("--ray-tasks", type=int, default=None, metavar="N",
                   help="--executor ray: shard tasks (default: the cluster's CPUs / --ray-cpus, or GPUs / --ray-gpus, "
                        "at most one per request; a rerun keeps the earlier N and resumes)")
    p.add_argument("--ray-cpus", type=float, default=None, metavar="C", help="--executor ray: CPUs per task (default: 1)")
    p.add_argument("--ray-gpus", type=float, default=None, metavar="G",
                   help="--executor ray: GPUs per task, fractions share a GPU (default: 1 with --device cuda, or "
                        "with --device auto on a cluster with GPUs; else 0)")
    p.add_argument("--ray-retries", type=int, default=None, metavar="K",
                   help="--executor ray: retries of a task whose worker died; the retry resumes (default: 3)")
    _add_progress_arg(p)

    p = sub.add_parser("prepare", help="run recipe stages only (cached), e.g. before a long run",
                       description="Compute and cache the recipe stages for a dataset's clips, then check each "
                                   "clip (input checks: truncated media, silent audio, frames with a face, face "
                                   "size, length against what the methods need; docs/RELIABILITY.md).",
                       epilog=f"Exit status: 0 when every clip prepared and passed its input checks (warnings "
                              f"are printed but do not count); {EXIT_RUN_FAILED} when a clip failed a stage or an "
                              "input check (a summary is printed), as `bench run` does; 2 for a bad command "
                              "line, configuration or an unavailable stage; 130 when interrupted.")
    _add_dataset_args(p, split_default="all")
    p.add_argument("--stages", type=_csv, default=(), metavar="A,B",
                   help="stages to run (default: those the chosen methods need)")
    p.add_argument("--methods", type=_csv, default=("all",), metavar="all|A,B",
                   help="prepare the stages these methods need (default: all available)")
    p.add_argument("--workers", type=int, default=2, help="parallel workers (default: 2)")
    p.add_argument("--device", default="auto",
                   help="where model stages (HuBERT, 3DMM fit) run: auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--debug-dir", type=Path, default=None,
                   help="also write overlay PNGs (landmarks, boxes, crops, segmentation) for a few frames per clip")
    _add_progress_arg(p)

    p = sub.add_parser("list", help="methods, metrics, datasets, stages and weights, with availability",
                       description="Everything the suite knows, each 'available' or the exact reason it is not.")
    p.add_argument("what", nargs="?", choices=("all", "methods", "metrics", "datasets", "stages", "weights"),
                   default="all", help="what to list (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("report", help="build report.html from one or more runs (several machines merge)",
                       description="Build one self-contained HTML report from run folders.")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<run-id>)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <first run>/report)")
    p.add_argument("--pool", type=_csv, default=(), metavar="datasets,budgets",
                   help="pool these across runs into one column (default: none; suite-trained scorers and "
                        "machines are never pooled: docs/reports.md, merge rules)")
    _add_progress_arg(p)

    p = sub.add_parser("merge", help="combine the shard folders of one run (bench run --shard i/N) into one run",
                       description="Combine run folders of one configuration (the N shards of `bench run --shard`) "
                                   "into one run folder: parts, samples, cache references and one manifest. Rows keep "
                                   "the hardware they were made on. Then `bench report` the result.")
    p.add_argument("runs", nargs="+", type=Path, help="shard folders (runs/<run-id>.shard-<i>-of-<N>)")
    p.add_argument("--out", type=Path, default=None, help="output run folder (default: <runs-dir>/<run-id>)")
    p.add_argument("--allow-missing", action="store_true", help="merge even when some shards are absent")
    p.add_argument("--report", action="store_true", help="also build the HTML report of the merged run")
    _add_progress_arg(p)

    p = sub.add_parser("cache", help="cache size per namespace; remove what no run refers to",
                       description="Show the cache ($TALKBENCH_CACHE) size per namespace and remove leftovers of "
                                   "killed processes; with --prune, remove every entry no run under --runs refers to "
                                   "(each run lists what it used in cache-refs.gz).")
    p.add_argument("--prune", action="store_true", help="remove entries no run under --runs refers to")
    p.add_argument("--runs", type=Path, action="append", default=[], metavar="DIR",
                   help="runs folder(s) whose runs keep their entries (repeatable; needed with --prune)")
    p.add_argument("--dry-run", action="store_true", help="with --prune: only say what would be removed")
    p.add_argument("--keep-newer", type=float, default=60.0, metavar="MINUTES",
                   help="never prune entries changed in the last MINUTES (a run in progress elsewhere; default 60)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_progress_arg(p)

    p = sub.add_parser("env", help="hardware fingerprint and package versions as recorded in manifests",
                       description="Print this machine's hardware fingerprint and the versions of relevant packages.")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    from bench.single import add_parsers  # `bench score` and `bench generate`

    add_parsers(sub, _set_pair, _csv, _add_progress_arg)
    return parser


# ---------------------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config import RunConfig
    from bench.progress import Progress
    from bench.runner import run

    config = RunConfig(
        dataset=args.dataset, methods=args.methods, metrics=args.metrics, split=args.split, budget=args.budget,
        seed=args.seed, limit=args.limit, subjects=args.subjects, test_seconds=args.test_seconds,
        pairs=args.pairs, cross=args.cross, device=args.device,
        precision=args.precision, overrides=tuple(args.overrides), strip_frames=args.strip_frames,
        preview_videos=args.preview_videos, runs_dir=args.runs_dir, run_id=args.run_id, workers=args.workers,
        report=args.report, samples=args.samples, shard=args.shard)
    ray_args = {"address": args.ray_address, "tasks": args.ray_tasks, "cpus_per_task": args.ray_cpus,
                "gpus_per_task": args.ray_gpus, "max_retries": args.ray_retries}
    ray_set = {k: v for k, v in ray_args.items() if v is not None}
    if args.executor != "ray" and ray_set:
        print("error: the --ray-* options only apply with --executor ray", file=sys.stderr)
        return EXIT_USAGE
    if args.executor == "ray":
        from bench.executor import ExecutorFailed, RayExecutor, RayOptions

        options = RayOptions(**ray_set)
        try:
            outcome = RayExecutor(options).run(config, command=["bench", *sys.argv[1:]],
                                               progress=Progress(args.progress))
        except ExecutorFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_RUN_FAILED
    else:
        outcome = run(config, command=["bench", *sys.argv[1:]], progress=Progress(args.progress))
    print(f"results: {outcome.run_dir / 'results.parquet'} ({len(outcome.results)} rows; "
          f"{outcome.done} videos made, {outcome.skipped} already done)")
    if outcome.report:
        print(f"report:  {outcome.report}")
    problems = run_failures(outcome.results, outcome.manifest)
    if problems:
        print(f"error: {len(problems)} part(s) of the run failed (exit {EXIT_RUN_FAILED}):", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        if len(problems) > 20:
            print(f"  ... and {len(problems) - 20} more (see results.csv, status 'failed')", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


# `bench run` exit codes: 0 when every requested cell is ok or unavailable by design (a metric or
# method without its weights), EXIT_RUN_FAILED when a clip, fit, generation or score failed; argparse
# and configuration errors exit 2.
EXIT_RUN_FAILED = 3
# another process holds the run folder (sysexits' EX_TEMPFAIL: a scheduler may retry later)
EXIT_BUSY = 75


def run_failures(results: Any, manifest: dict[str, Any]) -> list[str]:
    """One line per failed clip, and per (method, metric status reason) group of failed result rows."""
    lines = [f"clip {cid}: {why}" for cid, why in sorted((manifest.get("clip_errors") or {}).items())]
    if results is None or not len(results):
        return lines
    failed = results[results["status"] == "failed"]
    if len(failed):
        groups = failed.groupby(["method", "reason"], sort=True)["request_id"].nunique()
        for (method, reason), n in groups.items():
            lines.append(f"{method}: {n} request(s): {str(reason).splitlines()[0][:160] if reason else 'failed'}")
    return lines


def cmd_prepare(args: argparse.Namespace) -> int:
    from bench.cache import Cache
    from bench.progress import Progress
    from bench.runner import resolve_device, resolve_methods
    from bench.runner import dataset_options
    from data_recipes.datasets import load
    from data_recipes.prepare import prepare_all
    from data_recipes.quality import consumer
    from data_recipes.recipe import Recipe, audio_stages, stage_order

    progress = Progress(args.progress)
    dataset = load(args.dataset, dataset_options(args.limit, args.subjects, args.test_seconds, args.pairs))
    clips = list(dataset.clips) if args.split == "all" else list(dataset.split(args.split))
    device = resolve_device(args.device)
    # every clip: subject stages see the subject's train clips
    recipe = Recipe(Cache(), progress, clips=dataset.clips, device=device)
    consumers = []
    if args.stages:
        stages = list(args.stages)
    else:
        chosen = [m for m in resolve_methods(args.methods, {}, device, recipe) if m.availability.ok]
        stages = sorted({s for m in chosen for s in m.spec.stages})
        consumers = [consumer(m.name, m.spec) for m in chosen]  # for the length check
    order = stage_order(stages)
    for s in order:
        a = recipe.availability(s)
        if not a.ok:
            print(f"error: stage {s!r} is unavailable: {a.reason}", file=sys.stderr)
            return EXIT_USAGE
    video_clips = [c for c in clips if not c.audio_only]
    audio_clips = [c for c in clips if c.audio_only]  # driving audio files: audio stages only
    with progress:
        report = prepare_all(recipe, video_clips, order, workers=args.workers, progress=progress,
                             consumers=consumers)
        if audio_clips:
            more = prepare_all(recipe, audio_clips, audio_stages(order) or ["normalise"], workers=args.workers,
                               progress=progress, consumers=consumers)
            report.results.extend(more.results)
            report.checks.update(more.checks)
        stage_failures = dict(report)
        failures = {**prepare_failures(report, order), **stage_failures}
        if args.debug_dir:
            from data_recipes.debug import write_overlays

            for clip in progress.track(video_clips, "debug overlays"):
                if clip.id not in failures:
                    write_overlays(recipe.prepare(clip), order, args.debug_dir)
    print(f"prepared {len(clips) - len(stage_failures)}/{len(clips)} clips: stages {', '.join(order)}")
    if report.checks:
        status = [c.status for c in report.checks.values()]
        print(f"input checks: {status.count('ok')} ok, {status.count('warning')} with warnings, "
              f"{status.count('failed')} failed (docs/RELIABILITY.md)")
    for cid, why in report.gate_warnings().items():
        print(f"  warning {cid}: {why}")
    for cid, err in failures.items():
        print(f"  failed {cid}: {err}", file=sys.stderr)
    if args.debug_dir:
        print(f"overlays: {args.debug_dir}")
    if failures:
        print(f"error: {len(failures)} clip(s) failed (exit {EXIT_RUN_FAILED})", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


def prepare_failures(report: Any, stages: Sequence[str]) -> dict[str, str]:
    """Clips that failed an input check relevant to what was prepared: a failure for every method,
    no face when the faces stage was prepared, too short for a chosen method."""
    out: dict[str, str] = {}
    for cid, checks in report.checks.items():
        lines = [g.line() for g in checks.failed()
                 if g.scope == "clip" or (g.scope == "faces" and "faces" in stages) or g.scope == "consumers"]
        if lines:
            out[cid] = "; ".join(lines)
    return out


def list_entries(what: str = "all") -> dict[str, list[dict[str, Any]]]:
    """Everything `bench list` shows, as data (also used by tests and reports)."""
    from bench.availability import Availability
    from bench.registry import method_registry, metric_registry
    from bench.runner import resolve_device, resolve_methods, resolve_metrics

    out: dict[str, list[dict[str, Any]]] = {}
    if what in ("all", "methods"):
        from bench.cache import Cache
        from data_recipes.recipe import Recipe

        origins = {e.name: e.origin for e in method_registry().entries().values()}
        rows = []
        for m in resolve_methods(["all"], {}, resolve_device("auto"), Recipe(Cache())):
            spec = m.spec
            rows.append({"name": m.name, "available": m.availability.ok, "reason": m.availability.reason,
                         "origin": origins.get(m.name, ""),
                         "description": spec.description if spec else "",
                         "kind": spec.kind if spec else "",
                         "variant": m.variant,   # e.g. nerf_head's front end on this machine
                         # parts and their fit scope: what `--budget <method>.<part>=N` can name
                         "fit": (", ".join(f"{p.name} ({p.scope}"
                                           + (f": {', '.join(p.counters)}" if p.counters else "") + ")"
                                           for p in spec.fit_parts()) or "none") if spec else ""})
        out["methods"] = rows
    if what in ("all", "metrics"):
        origins = {e.name: e.origin for e in metric_registry().entries().values()}
        rows = []
        for m in resolve_metrics(["all"], {}):
            spec = m.spec
            rows.append({"name": m.name, "available": m.availability.ok, "reason": m.availability.reason,
                         "origin": origins.get(m.name, ""),
                         "values": [v.name for v in spec.values] if spec else [],
                         "published": spec.published if spec else True,
                         "description": spec.description if spec else ""})
        out["metrics"] = rows
    if what in ("all", "datasets"):
        from data_recipes.datasets import DATASETS, availability

        rows = []
        for name, spec in sorted(DATASETS.items()):
            a = availability(spec, None) if not spec.argument else Availability.no(
                f"give its location: --dataset {name}:{spec.argument}")
            rows.append({"name": name + (f":{spec.argument}" if spec.argument else ""),
                         "available": a.ok, "reason": a.reason, "description": spec.description})
        out["datasets"] = rows
    if what in ("all", "stages"):
        from bench.cache import Cache
        from data_recipes.recipe import STAGES, Recipe

        recipe = Recipe(Cache())
        rows = []
        for name, spec in STAGES.items():
            try:
                a = recipe.availability(name)
            except Exception as e:  # a stage whose module is not written yet, or broken
                a = Availability.no(f"cannot load: {type(e).__name__}: {e}")
            rows.append({"name": name, "available": a.ok, "reason": a.reason, "description": spec.description})
        out["stages"] = rows
    if what in ("all", "weights"):
        from bench import weights as w

        rows = []
        for spec in known_weights():
            found = w.find(spec)
            a = w.availability(spec)  # digests checked as the metrics check them: a wrong file is not "available"
            rows.append({"name": spec.filename, "available": a.ok, "reason": a.reason, "path": str(found or ""),
                         "description": spec.description})
        out["weights"] = rows
    return out


# Modules that declare the weight files they use as a module-level WEIGHTS (tuple or dict of WeightSpec).
WEIGHT_MODULES = ("metrics.lpips.metric", "metrics.sync.weights", "methods.wav2lip.weights",
                  "data_recipes.faces.weights", "data_recipes.audio.hubert")


def known_weights():
    """Every WeightSpec the built-in methods, metrics and stages declare."""
    import importlib

    from bench.weights import WeightSpec

    specs: list[WeightSpec] = []
    for module in WEIGHT_MODULES:
        try:
            declared = getattr(importlib.import_module(module), "WEIGHTS", ())
        except Exception:
            continue
        items = declared.values() if isinstance(declared, dict) else declared
        specs.extend(s for s in items if isinstance(s, WeightSpec) and s not in specs)
    return specs


def cmd_list(args: argparse.Namespace) -> int:
    data = list_entries(args.what)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)  # piped output keeps whole lines
    for section, rows in data.items():
        console.print(f"[bold]{section}[/bold]")
        width = max((len(r["name"]) for r in rows), default=0)
        for r in rows:
            mark = "[green]available  [/green]" if r["available"] else "[red]unavailable[/red]"
            detail = r["description"] if r["available"] else r["reason"]
            if section == "metrics" and r.get("values"):
                detail = f"{', '.join(r['values'])}: {detail}"
            if r.get("variant"):
                detail = f"[{r['variant']}] {detail}"
            console.print(f"  {escape(r['name']).ljust(width)}  {mark}  {escape(detail)}")
        console.print()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.progress import Progress
    from reports.build import ReportConfig, build_report

    for r in args.runs:
        if not (r / "manifest.json").is_file():
            print(f"error: {r} is not a run folder (no manifest.json)", file=sys.stderr)
            return 1
    from reports.tables import POOLABLE

    bad = [p for p in args.pool if p not in POOLABLE]
    if bad:
        print(f"error: --pool {','.join(bad)}: only {', '.join(POOLABLE)} can be pooled", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress(args.progress)
    with progress:
        path = build_report(list(args.runs), out_dir=args.out, progress=progress,
                            config=ReportConfig(pool=tuple(args.pool)))
    print(f"report: {path}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from bench.progress import Progress
    from bench.shard import merge

    out = merge(list(args.runs), args.out, allow_missing=args.allow_missing)
    print(f"merged {len(args.runs)} folder(s) into {out.out}: {out.parts} parts, {len(out.results)} rows")
    for note in out.notes:
        print(f"  note: {note}")
    if args.report:
        from reports.build import build_report

        progress = Progress(args.progress)
        with progress:
            print(f"report: {build_report([out.out], progress=progress)}")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_cache(args: argparse.Namespace) -> int:
    from bench.cache import Cache, read_refs
    from bench.layout import RunLayout
    from bench.locks import is_locked
    from bench.progress import Progress

    cache = Cache()
    progress = Progress(args.progress)
    data: dict[str, Any] = {"cache": str(cache.root)}
    with progress:
        swept = cache.sweep(min_age_s=600.0)
        data["swept"] = {"removed": len(swept.removed), "bytes": swept.bytes}
        if args.prune:
            if not args.runs:
                print("error: --prune needs --runs DIR (the runs whose cache entries are kept)", file=sys.stderr)
                return EXIT_USAGE
            keep: dict[str, set[str]] = {}
            unknown, running = [], []
            for runs in args.runs:
                for manifest in sorted(Path(runs).glob("*/manifest.json")):
                    layout = RunLayout(manifest.parent)
                    if is_locked(layout.lock):
                        running.append(str(layout.root))
                    if not layout.cache_refs.is_file():
                        unknown.append(str(layout.root))
                        continue
                    for ns, keys in read_refs(layout.cache_refs).items():
                        keep.setdefault(ns, set()).update(keys)
            if running:
                print("error: runs in progress (prune when they end): " + ", ".join(running), file=sys.stderr)
                return 1
            if unknown:
                print("error: these runs do not list their cache entries (made before cache-refs.gz; rerun them "
                      "to write it, or move them out of --runs): " + ", ".join(unknown[:10]), file=sys.stderr)
                return 1
            pruned = cache.prune(keep, min_age_s=60.0 * args.keep_newer, dry_run=args.dry_run, progress=progress)
            data["pruned"] = {"dry_run": args.dry_run, "kept_young": pruned.young, "kept_busy": pruned.busy,
                              "removed": {ns: {"entries": n, "bytes": b} for ns, (n, b) in pruned.removed.items()}}
        usage = cache.usage(progress=progress)
    data["namespaces"] = {ns: {"entries": u.entries, "bytes": u.bytes} for ns, u in usage.items()}
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(f"cache: {cache.root}")
    width = max([len(ns) for ns in usage] + [9])
    for ns, u in usage.items():
        print(f"  {ns.ljust(width)}  {u.entries:>8} entries  {_human(u.bytes):>10}")
    print(f"  {'total'.ljust(width)}  {sum(u.entries for u in usage.values()):>8} entries  "
          f"{_human(sum(u.bytes for u in usage.values())):>10}")
    if swept.removed:
        print(f"removed {len(swept.removed)} leftover(s) of killed processes ({_human(swept.bytes)})")
    if "pruned" in data:
        verb = "would remove" if args.dry_run else "removed"
        for ns, v in data["pruned"]["removed"].items():
            print(f"{verb} {v['entries']} entries of {ns} ({_human(v['bytes'])})")
        if not data["pruned"]["removed"]:
            print("nothing to prune")
        if pruned.young or pruned.busy:
            print(f"kept {pruned.young} unreferenced entries newer than {args.keep_newer:g} min and "
                  f"{pruned.busy} in use")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from bench.hardware import fingerprint, package_versions
    from bench.paths import cache_dir, weights_dir

    data = {"hardware": fingerprint(), "packages": package_versions(),
            "weights_dir": str(weights_dir()), "cache_dir": str(cache_dir())}
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    hw = data["hardware"]
    print(f"hardware: {hw['label']} (id {hw['id']})")
    print(f"memory:   {hw['memory_gb']} GB; platform {hw['platform']}; python {hw['python']}")
    print(f"torch:    {hw['torch']}; CUDA {hw['cuda'] or 'not available'}")
    print(f"weights:  {data['weights_dir']}")
    print(f"cache:    {data['cache_dir']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in data["packages"].items()))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from bench.single import cmd_score as run_score

    return run_score(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from bench.single import cmd_generate as run_generate

    return run_generate(args)


COMMANDS = {"run": cmd_run, "prepare": cmd_prepare, "list": cmd_list, "report": cmd_report, "env": cmd_env,
            "merge": cmd_merge, "cache": cmd_cache,
            "score": cmd_score, "generate": cmd_generate}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from bench.config import ConfigError
    from bench.registry import UnknownName
    from bench.runner import RunBusy, RunError
    from bench.shard import ShardError
    from data_recipes.clip import DatasetError

    try:
        return COMMANDS[args.command](args)
    except RunBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BUSY
    except (UnknownName, RunError, DatasetError, ConfigError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print("interrupted: finished videos are saved; rerun the same command to continue", file=sys.stderr)
        return 128 + int(getattr(e, "signum", 2) or 2)   # 130 for Ctrl-C, 143 for SIGTERM


if __name__ == "__main__":
    sys.exit(main())
