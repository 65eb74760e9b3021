"""Planning-phase timings of a CMLR-sized run (docs/BENCHMARKS.md, "Planning phase of a 102k-clip dataset").

What a `bench run` does before its first video: build the requests (clip lookup for every cross
pair), hash every media file (clip fingerprints), and read the prepare failure report. Measured on a
synthetic dataset of CMLR's size: an in-memory `Dataset` of 102,076 `Clip`s (11 speakers, CMLR's split
sizes, cross pairs as the cmlr loader makes them) for lookup and the failure report, and a tree of
tiny files (one video and one audio file per clip) for hashing.

    .venv/bin/python scripts/measure_planning.py --what lookup,report
    .venv/bin/python scripts/measure_planning.py --what hash --tree /tmp/cmlr-synth --clips 102076

`--sample N` times only N cross pairs / N failures of the quadratic paths and extrapolates linearly
(said so in the output), so the old code can be measured in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SPLITS = {"train": 71452, "val": 10206, "test": 20418}   # 102,076 clips, CMLR's test size


def synthetic_clips(n: int, root: Path):
    from data_recipes.clip import Clip

    total = sum(SPLITS.values())
    clips = []
    i = 0
    for split, count in SPLITS.items():
        for _ in range(round(count * n / total)):
            spk = f"s{i % 11 + 1}"
            cid = f"{spk}/2011{i // 1000:04d}/section_{i % 1000}_000.00_002.00"
            clips.append(Clip(cid, root / "video" / f"{cid}.mp4", spk, split, audio=root / "audio" / f"{cid}.wav"))
            i += 1
    return clips


def dataset(n: int, root: Path, pairs: int | None = None):
    from data_recipes.clip import Dataset
    from data_recipes.datasets.common import rotate_pairs

    clips = synthetic_clips(n, root)
    test = [c for c in clips if c.split == "test"]
    p = rotate_pairs(test)
    return Dataset("cmlr-synthetic", "synthetic", tuple(clips), p[:pairs] if pairs else p)


def time_lookup(n: int, sample: int | None) -> dict:
    from bench.runner import build_requests

    full = dataset(n, Path("/nonexistent"))
    ds = dataset(n, Path("/nonexistent"), pairs=sample) if sample else full
    t0 = time.perf_counter()
    reqs = build_requests(ds, "test", True)
    dt = time.perf_counter() - t0
    scale = len(full.pairs) / max(len(ds.pairs), 1)
    t0 = time.perf_counter()
    for c in full.clips[::100]:
        full.clip(c.id)
    per_lookup = (time.perf_counter() - t0) / len(full.clips[::100])
    return {"clips": len(full.clips), "pairs": len(full.pairs), "pairs_timed": len(ds.pairs),
            "requests": len(reqs), "build_requests_s": round(dt, 3),
            "build_requests_s_full": round(dt * scale, 1) if sample else round(dt, 3),
            "extrapolated": bool(sample), "mean_lookup_us": round(per_lookup * 1e6, 2)}


def time_report(n: int, failed_fraction: float, sample: int | None) -> dict:
    from data_recipes.prepare import PrepareReport, StageResult

    stages = ("normalise", "faces", "wav2lip_crops", "mel", "head_frame", "head_crops")
    clips = synthetic_clips(n, Path("/nonexistent"))
    every = max(int(round(1 / failed_fraction)), 1)
    results = []
    n_failed = 0
    for i, c in enumerate(clips):
        bad = i % every == 0 and (sample is None or n_failed < sample)
        for j, s in enumerate(stages):
            if bad and j == 1:
                results.append(StageResult(c.id, s, "failed", 0.0, "ValueError: no face\ntraceback"))
            elif bad and j > 1:
                results.append(StageResult(c.id, s, "skipped", 0.0, "faces failed"))
            else:
                results.append(StageResult(c.id, s, "cached"))
        n_failed += bad
    report = PrepareReport(results)
    t0 = time.perf_counter()
    errors: dict[str, str] = {}
    errors.update(report)          # what the runner does
    lines = [f"{k}: {v}" for k, v in report.items()]   # what `bench prepare` prints
    count = len(report)
    dt = time.perf_counter() - t0
    want = len(range(0, len(clips), every))
    return {"results": len(results), "failed_clips": want, "failed_timed": count,
            "report_s": round(dt, 3), "report_s_full": round(dt * want / max(count, 1), 1) if sample else round(dt, 3),
            "extrapolated": bool(sample), "lines": len(lines)}


def make_tree(root: Path, n: int, size: int) -> list:
    clips = synthetic_clips(n, root)
    rng = os.urandom
    made = 0
    for c in clips:
        for p in (c.video, c.audio):
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(rng(size))
                made += 1
    return clips


def time_hash(n: int, tree: Path, size: int, workers: int) -> dict:
    from bench.cache import Cache
    from data_recipes.recipe import Recipe

    t0 = time.perf_counter()
    clips = make_tree(tree, n, size)
    made_s = time.perf_counter() - t0
    out = {"clips": len(clips), "files": 2 * len(clips), "file_bytes": size, "tree_s": round(made_s, 1)}
    with tempfile.TemporaryDirectory(prefix="plan-cache-") as cache_root:
        os.environ["TALKBENCH_CACHE"] = cache_root
        cache = Cache(Path(cache_root))
        recipe = Recipe(cache, clips=clips)
        parallel = hasattr(cache, "hash_files")   # the runner's parallel pass exists (issue 17)
        t0 = time.perf_counter()
        if parallel:   # what Runner._fingerprint_all does before planning
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(recipe.clip_fingerprint, clips, chunksize=64))
        out["hash_pass_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for c in clips:
            recipe.clip_fingerprint(c)
        out["fingerprints_cold_s"] = round(time.perf_counter() - t0, 1)
        recipe2 = Recipe(cache, clips=clips)
        t0 = time.perf_counter()
        for c in clips:
            recipe2.clip_fingerprint(c)
        out["fingerprints_warm_new_recipe_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for _ in range(3):
            for c in clips:
                recipe2.clip_fingerprint(c)
        out["fingerprints_again_x3_same_recipe_s"] = round(time.perf_counter() - t0, 1)
        out["parallel_pass"] = parallel
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", default="lookup,report", help="lookup,report,hash")
    ap.add_argument("--clips", type=int, default=sum(SPLITS.values()))
    ap.add_argument("--sample", type=int, default=None, help="time only N pairs / failures and extrapolate")
    ap.add_argument("--failed", type=float, default=0.01, help="fraction of clips that fail prepare")
    ap.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "cmlr-synth")
    ap.add_argument("--file-bytes", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    out = {"cpu": os.cpu_count(), "load1": os.getloadavg()[0]}
    what = args.what.split(",")
    if "lookup" in what:
        out["lookup"] = time_lookup(args.clips, args.sample)
    if "report" in what:
        out["report"] = time_report(args.clips, args.failed, args.sample)
    if "hash" in what:
        out["hash"] = time_hash(args.clips, args.tree, args.file_bytes, args.workers)
    out["load1_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
