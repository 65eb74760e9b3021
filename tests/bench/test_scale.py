"""CMLR-sized runs: lookups and reports that stay linear, media hashed once (in parallel), samples only
where the report shows them, and `bench cache` (size per namespace, prune what no run refers to).

Work is counted, never timed (timings: scripts/measure_planning.py and docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bench.cache import Cache, append_refs, file_sha256, read_refs
from bench.layout import sampled_requests
from data_recipes.clip import Clip, CrossPair, Dataset

N = 102_076


def _clips(n: int, root: Path = Path("/nonexistent")) -> tuple[Clip, ...]:
    return tuple(Clip(f"s{i % 11 + 1}/{i:06d}", root / f"{i}.mp4", f"s{i % 11 + 1}",
                      "test" if i % 5 == 0 else "train") for i in range(n))


class _CountingTuple(tuple):
    iterations = 0

    def __iter__(self):
        type(self).iterations += 1
        return super().__iter__()


def test_clip_lookup_uses_the_index_not_a_scan():
    clips = _clips(N)
    counted = _CountingTuple(clips)
    ds = Dataset("big", "synthetic", counted, pairs=(CrossPair(clips[0].id, clips[-1].id),))
    before = _CountingTuple.iterations
    for c in clips[::97]:
        assert ds.clip(c.id) is c
    assert _CountingTuple.iterations == before, "a lookup iterated over the clips"
    with pytest.raises(KeyError, match="no clip 'nope'"):
        ds.clip("nope")
    with pytest.raises(ValueError, match="duplicate clip ids"):
        Dataset("dup", "", clips[:3] + clips[:1])


def test_build_requests_on_a_cmlr_sized_dataset():
    from bench.runner import build_requests
    from data_recipes.datasets.common import rotate_pairs

    clips = _clips(N)
    test = [c for c in clips if c.split == "test"]
    ds = Dataset("big", "synthetic", clips, pairs=rotate_pairs(test))
    reqs = build_requests(ds, "test", cross=True)
    assert len(reqs) == 2 * len(test)
    cross = [r for r in reqs if r.kind == "cross"]
    assert all(r.target.id == p.video_clip and r.driving.id == p.audio_clip for r, p in zip(cross, ds.pairs))


class _CountingList(list):
    iterations = 0

    def __iter__(self):
        type(self).iterations += 1
        return super().__iter__()


def test_failure_report_is_built_once_for_all_lookups():
    from data_recipes.prepare import PrepareReport, StageResult

    rows = _CountingList()
    for i in range(5000):
        rows.append(StageResult(f"c{i}", "faces", "failed" if i % 10 == 0 else "cached", 0.0, "ValueError: x\ntb"))
    report = PrepareReport(rows)
    got = dict(report)           # keys, then one lookup per failed clip
    assert len(got) == 500 and len(report) == 500 and got["c10"] == "faces: ValueError: x"
    assert _CountingList.iterations == 1, f"the rows were scanned {_CountingList.iterations} times"
    rows.append(StageResult("late", "mel", "failed", 0.0, "E"))
    assert report["late"] == "mel: E", "rows added later are seen"


def test_fingerprints_hash_each_file_once_and_follow_changes(tmp_path, monkeypatch):
    from data_recipes import recipe as recipe_mod
    from data_recipes.recipe import Recipe

    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    files = []
    for i in range(20):
        f = tmp_path / f"{i}.mp4"
        f.write_bytes(os.urandom(3000))
        files.append(f)
    clips = [Clip(f"c{i}", f, "s", "train") for i, f in enumerate(files)]
    calls = []
    real = recipe_mod.file_sha256
    monkeypatch.setattr(recipe_mod, "file_sha256", lambda p: calls.append(p) or real(p))
    recipe = Recipe(Cache(tmp_path / "cache"), clips=clips)
    for _ in range(5):
        fps = [recipe.clip_fingerprint(c) for c in clips]
    assert len(calls) == 20 and fps[3]["video"] == file_sha256(files[3])
    fps[3]["video"] = "mutated"   # callers get copies
    assert recipe.clip_fingerprint(clips[3])["video"] == file_sha256(files[3])
    files[3].write_bytes(os.urandom(3001))   # another size: hashed again
    assert recipe.clip_fingerprint(clips[3])["video"] == file_sha256(files[3]) and len(calls) == 21


def test_parallel_hashing_equals_serial_and_reports_progress(tmp_path, monkeypatch):
    from bench.progress import Progress

    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    paths = []
    for i in range(40):
        p = tmp_path / "media" / f"{i}.wav"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(os.urandom(1000 + i))
        paths.append(p)
    import hashlib

    got = Cache(tmp_path / "cache").hash_files(paths + paths[:5], workers=4, progress=Progress.off())
    assert len(got) == 40
    assert all(got[p] == hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    memos = list((tmp_path / "cache" / "file-hashes").glob("*/*"))
    assert len(memos) == 40, "each digest remembered on disk for the next run"


# --------------------------------------------------------------------------------------------- samples


def test_sampled_requests_are_what_the_report_shows():
    from reports.media import Sample, choose_requests

    for n_self, n_cross, k in [(10, 10, 4), (2, 1, 4), (0, 3, 4), (5, 0, 4), (7, 7, 8), (3, 3, 1)]:
        reqs = [(f"self-{i:02d}", "self") for i in range(n_self)] + [(f"x-{i:02d}", "cross") for i in range(n_cross)]
        samples = {rid: {"m": Sample(Path("/s"), {"kind": kind, "request_id": rid})} for rid, kind in reqs}
        assert sampled_requests(reqs, k) == set(choose_requests(samples, k)), (n_self, n_cross, k)
    assert sampled_requests([("a", "self"), ("b", "cross")], None) == {"a", "b"}


def test_a_run_writes_strips_only_for_the_sampled_requests(tmp_path, monkeypatch):
    from bench.config import RunConfig
    from bench.progress import Progress
    from bench.runner import run

    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    out = run(RunConfig(dataset="demo", methods=("frozen",), metrics=("fps",), runs_dir=tmp_path / "runs",
                        report=False, preview_videos=False, samples=1), progress=Progress.off())
    # one sample: the report's rule shows the cross-driven request first when there is room for one only
    shown = sorted(json.loads(p.read_text())["kind"] for p in out.run_dir.glob("samples/*/*/sample.json"))
    assert shown == ["cross"]
    delivered = list(out.run_dir.glob("samples/frozen/*/delivered.mp4"))
    assert len(delivered) == 2, "every request keeps the mp4 LSE scores"
    refs = read_refs(out.run_dir / "cache-refs.gz")
    assert {"stages/normalise", "stages/faces", "generated/frozen", "fits/frozen"} <= set(refs)
    assert all(Cache(tmp_path / "cache").entry(ns, k).exists() or ns.startswith(("fits/", "metric-fits/"))
               for ns, keys in refs.items() for k in keys)


# ---------------------------------------------------------------------------------------- bench cache


def _entry(cache: Cache, ns: str, key: str, size: int = 100, age_s: float = 0.0) -> Path:
    with cache.write(ns, key) as tmp:
        (tmp / "data.bin").write_bytes(b"x" * size)
    path = cache.entry(ns, key)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_bench_cache_shows_sizes_and_prunes_what_no_run_refers_to(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    cache = Cache(tmp_path / "cache")
    day = 86400.0
    kept = _entry(cache, "stages/faces", "a" * 64, 1000, day)
    gone = _entry(cache, "stages/faces", "b" * 64, 2000, day)
    young = _entry(cache, "stages/f0", "c" * 64, 10)        # unreferenced but new: kept
    gen = _entry(cache, "generated/frozen", "d" * 64, 50, day)
    work = cache.scratch("fits/tinted", "e" * 64)
    (work / "trainer.pt").write_bytes(b"w" * 30)
    os.utime(work, (time.time() - day, time.time() - day))
    runs = tmp_path / "runs"
    for name, refs in (("r1", {"stages/faces": ["a" * 64]}), ("r2", {"generated/frozen": ["d" * 64]})):
        (runs / name).mkdir(parents=True)
        (runs / name / "manifest.json").write_text("{}")
        append_refs(runs / name / "cache-refs.gz", refs)

    assert main(["cache", "--json", "--progress", "off"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["namespaces"]["stages/faces"] == {"entries": 2, "bytes": 3000}
    assert data["namespaces"]["stages/f0"]["entries"] == 1 and data["namespaces"]["fits/tinted"]["bytes"] == 30

    assert main(["cache", "--prune", "--runs", str(runs), "--dry-run", "--json", "--progress", "off"]) == 0
    assert gone.exists() and json.loads(capsys.readouterr().out)["pruned"]["removed"]["stages/faces"]["entries"] == 1
    assert main(["cache", "--prune", "--runs", str(runs), "--json", "--progress", "off"]) == 0
    pruned = json.loads(capsys.readouterr().out)["pruned"]
    assert not gone.exists() and not work.exists()
    assert kept.exists() and young.exists() and gen.exists() and pruned["kept_young"] == 1
    assert set(pruned["removed"]) == {"stages/faces", "fits/tinted"}

    (runs / "old").mkdir()
    (runs / "old" / "manifest.json").write_text("{}")   # a run that does not list its entries: refuse
    assert main(["cache", "--prune", "--runs", str(runs), "--progress", "off"]) == 1
    assert "do not list their cache entries" in capsys.readouterr().err
