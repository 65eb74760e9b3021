"""The runner end to end on the embedded demo: manifest contents, results, caching, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cache import Cache
from bench.config import RunConfig
from bench.layout import RunLayout
from bench.method import GenerateResult, Method, MethodSpec
from bench.progress import Progress
from bench.results import load_run
from bench.runner import RunError, run

REPO = Path(__file__).resolve().parents[2]
FAST_METRICS = ("psnr", "ssim", "fps")


def _config(tmp_path: Path, **kw) -> RunConfig:
    base = dict(dataset="demo", methods=("reference", "frozen"), metrics=FAST_METRICS, runs_dir=tmp_path / "runs",
                report=False, preview_videos=False)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    """One real run of the baselines on the demo, shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("TALKBENCH_CACHE", str(tmp / "cache"))
    mp.setenv("TALKBENCH_WEIGHTS", str(tmp / "weights"))
    try:
        outcome = run(_config(tmp, preview_videos=True), command=["bench", "run", "test"], progress=Progress.off())
    finally:
        mp.undo()
    return outcome


def test_results_have_one_row_per_request_method_metric(baseline_run):
    df = load_run(baseline_run.run_dir)
    # reference: self only; frozen: self + the demo's cross pair. psnr/ssim need ground truth (self only).
    got = sorted(set(zip(df["method"], df["kind"], df["metric"])))
    assert got == sorted([
        ("frozen", "cross", "fps"), ("frozen", "self", "PSNR"), ("frozen", "self", "SSIM"),
        ("frozen", "self", "fps"), ("reference", "self", "PSNR"), ("reference", "self", "SSIM"),
        ("reference", "self", "fps")])
    assert len(df) == len(got)
    ref = df[(df.method == "reference") & (df.metric == "PSNR")].iloc[0]
    assert ref.status == "ok" and math.isinf(ref.value)
    ssim_ref = df[(df.method == "reference") & (df.metric == "SSIM")].iloc[0]
    assert ssim_ref.value == pytest.approx(1.0)
    frozen = df[(df.method == "frozen") & (df.metric == "PSNR")].iloc[0]
    assert 10 < frozen.value < 40 and frozen.n_frames == 100
    # Baselines do no timed compute, so fps is not applicable rather than a made-up number.
    assert set(df[df.metric == "fps"].status) == {"not_applicable"}
    csv = pd.read_csv(baseline_run.run_dir / "results.csv")
    assert len(csv) == len(df)


def test_frozen_psnr_equals_direct_computation(baseline_run):
    """The runner feeds metrics the right frames: recompute frozen's per-frame PSNR from the clip."""
    import tempfile

    from data_recipes.datasets import load
    from data_recipes.recipe import Recipe

    clip = load("demo").clip("obama/test")
    frames = Recipe(Cache(Path(tempfile.mkdtemp()))).prepare(clip).frames().astype(np.float64)
    mse = ((frames - frames[:1]) ** 2).reshape(len(frames), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        direct = 10 * np.log10(255.0**2 / mse)
    df = load_run(baseline_run.run_dir)
    row = df[(df.method == "frozen") & (df.metric == "PSNR")].iloc[0]
    per_frame = np.array(json.loads(row.extra)["per_frame"], dtype=float)
    assert len(per_frame) == len(direct)
    np.testing.assert_allclose(per_frame, direct, rtol=1e-6)
    assert np.isfinite(row.value), "one identical frame must not turn the clip's PSNR into inf"


def test_manifest_records_what_makes_the_run_reproducible(baseline_run):
    m = json.loads((baseline_run.run_dir / "manifest.json").read_text())
    assert m["schema_version"] == 2 and m["status"] == "complete" and m["invocations"] == 1
    assert m["config"]["dataset"] == "demo" and m["config"]["seed"] == 0 and m["seed"] == 0
    assert len(m["git"]["commit"] or "") == 40
    assert [h["invocation"] for h in m["history"]] == [1] and m["history"][0]["git"] == m["git"]
    # the stages the run read, with their code versions and settings
    assert {"normalise", "faces"} <= set(m["stages"])
    assert m["stages"]["normalise"]["version"] == "2" and isinstance(m["stages"]["faces"]["config"], dict)
    versions = json.loads(m["versions"]["frozen"])
    assert versions["method"].startswith("frozen@") and set(versions["metrics"]) == set(FAST_METRICS)
    df = load_run(baseline_run.run_dir)
    assert set(df[df.method == "frozen"].versions) == {m["versions"]["frozen"]}
    assert set(df.commit) == {m["git"]["commit"] + ("+dirty" if m["git"]["dirty"] else "")}
    assert m["packages"]["torch"].startswith("2.") and "numpy" in m["packages"]
    hw = m["hardware"]
    assert hw["cpu_cores"] >= 1 and hw["cpu_model"] and "gpu" in hw and hw["torch"] and "cuda" in hw
    ds = m["dataset"]
    assert len(ds["content_hash"]) == 64 and ds["splits"] == {"train": 1, "val": 1, "test": 1} and ds["pairs"] == 1
    assert set(m["methods"]) >= {"reference", "frozen"}
    assert m["methods"]["frozen"]["spec"]["kind"] == "baseline"
    assert m["methods"]["frozen"]["fits"][0]["scope"] == "none"
    assert set(m["metrics"]) == set(FAST_METRICS)
    for phase in ("prepare", "fit", "generate", "score", "collect"):
        assert m["phases"][phase] >= 0
    assert isinstance(m["weights"], list)


def test_samples_for_reports(baseline_run):
    layout = RunLayout(baseline_run.run_dir)
    dirs = layout.sample_dirs()
    methods = sorted({d.parent.name for d in dirs})
    assert methods == ["frozen", "ground_truth", "reference"]
    info = json.loads((layout.samples("frozen", "obama/test") / "sample.json").read_text())
    gt = json.loads((layout.samples("ground_truth", "obama/test") / "sample.json").read_text())
    assert info["frame_indices"] == gt["frame_indices"] and len(info["files"]) == 4
    for name in info["files"]:
        assert (layout.samples("frozen", "obama/test") / name).stat().st_size > 1000
    assert info["video"] == "video.mp4"
    assert info["mouth_boxes"], "the faces stage gives mouth boxes for the strip zoom"


def test_dataset_content_hash_tracks_content(tmp_path, monkeypatch):
    from bench.runner import dataset_summary
    from data_recipes.clip import Clip, Dataset
    from data_recipes.recipe import Recipe
    import shutil

    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "c"))
    from data_recipes.datasets.demo import demo_video

    a = tmp_path / "a.mp4"
    shutil.copy(demo_video(), a)
    ds = Dataset("x", "", (Clip("c", a, "s", "test"),))
    h1 = dataset_summary(ds, Recipe(Cache(tmp_path / "c")), None)["content_hash"]
    with open(a, "ab") as f:
        f.write(b"\0")
    os.utime(a, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    h2 = dataset_summary(ds, Recipe(Cache(tmp_path / "c")), None)["content_hash"]
    assert h1 != h2


# ------------------------------------------------------------------------------ generated-video cache

GENERATE_CALLS: list[str] = []


@dataclass(frozen=True)
class NoiseOpts:
    amplitude: int = 10


class Noisy(Method):
    """Target frames plus seeded noise: cheap, deterministic per seed, depends on its config."""

    spec = MethodSpec(name="noisy", description="test method", config=NoiseOpts, kind="2d")

    def generate(self, request):
        GENERATE_CALLS.append(request.id)
        frames = request.target.frames(0, min(request.num_frames, request.target.num_frames))
        reps = -(-request.num_frames // len(frames))
        frames = np.concatenate([frames] * reps)[: request.num_frames]
        rng = np.random.default_rng(request.seed)
        noise = rng.integers(-self.config.amplitude, self.config.amplitude + 1, frames.shape)
        out = np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return GenerateResult(out, timings={"model": 0.5})


@pytest.fixture()
def noisy_method(monkeypatch, isolated_dirs):
    import methods

    monkeypatch.setitem(methods.BUILTIN_METHODS, "noisy", f"{__name__}:Noisy")
    GENERATE_CALLS.clear()
    return GENERATE_CALLS


def test_generated_videos_are_cached_and_invalidated_by_config(tmp_path, noisy_method):
    cfg = _config(tmp_path, methods=("noisy",), metrics=("psnr", "fps"))
    first = run(cfg, progress=Progress.off())
    assert len(noisy_method) == 2  # self + cross
    # Another run id with the same method config reuses the cached frames bit-exactly.
    second = run(_config(tmp_path, methods=("noisy",), metrics=("psnr", "fps"), run_id="again"), progress=Progress.off())
    assert len(noisy_method) == 2
    a, b = load_run(first.run_dir), load_run(second.run_dir)
    pd.testing.assert_series_equal(a.value, b.value)
    fps = a[a.metric == "fps"].value
    np.testing.assert_allclose(fps.to_numpy(), 100 / 0.5)
    # A config change generates again.
    run(_config(tmp_path, methods=("noisy",), metrics=("psnr",), overrides=(("noisy.amplitude", "20"),)),
        progress=Progress.off())
    assert len(noisy_method) == 4


def test_rerun_of_finished_run_does_nothing(tmp_path, noisy_method):
    cfg = _config(tmp_path, methods=("noisy",), metrics=("psnr",))
    run(cfg, progress=Progress.off())
    again = run(cfg, progress=Progress.off())
    assert again.done == 0 and again.skipped == 2 and len(noisy_method) == 2
    m = json.loads((again.run_dir / "manifest.json").read_text())
    assert m["invocations"] == 2 and m["status"] == "complete"


def test_run_folder_from_another_config_is_refused(tmp_path, noisy_method):
    run(_config(tmp_path, methods=("noisy",), metrics=("psnr",), run_id="fixed"), progress=Progress.off())
    with pytest.raises(RunError, match="different configuration"):
        run(_config(tmp_path, methods=("noisy",), metrics=("ssim",), run_id="fixed"), progress=Progress.off())


def test_explicitly_requested_unavailable_method_is_an_error(tmp_path, isolated_dirs):
    missing = str(tmp_path / "absent" / "wav2lip_gan.pth")
    with pytest.raises(RunError, match=r"method 'wav2lip' is unavailable: .*wav2lip_gan\.pth"):
        run(_config(tmp_path, methods=("wav2lip",), overrides=(("wav2lip.checkpoint", missing),)),
            progress=Progress.off())


def test_failing_method_is_recorded_not_fatal(tmp_path, noisy_method, monkeypatch):
    def broken(self, request):
        raise RuntimeError("out of <memory>")

    monkeypatch.setattr(Noisy, "generate", broken)
    out = run(_config(tmp_path, methods=("noisy", "frozen"), metrics=("psnr",)), progress=Progress.off())
    df = load_run(out.run_dir)
    bad = df[df.method == "noisy"]
    assert set(bad.status) == {"failed"} and "out of <memory>" in bad.iloc[0].reason
    assert set(df[df.method == "frozen"].status) == {"ok"}


# ------------------------------------------------------------------------------------------- resume


def _bench(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_work(tmp_path):
    """SIGKILL `bench run` after its first finished video; the rerun completes only what is missing
    and gives the same results as an uninterrupted run (made with a separate cache)."""
    args = ["run", "--methods", "reference,frozen", "--metrics", "psnr,ssim,lmd", "--dataset", "demo",
            "--runs-dir", str(tmp_path / "runs"), "--no-report", "--no-previews", "--progress", "log"]
    env = {**os.environ, "TALKBENCH_CACHE": str(tmp_path / "cache"), "TALKBENCH_WEIGHTS": str(tmp_path / "w")}
    proc = _bench(args, env)
    parts_dir = tmp_path / "runs"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list(parts_dir.glob("*/parts/*/*.parquet"))
        if parts:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    parts = sorted(parts_dir.glob("*/parts/*/*.parquet"))
    assert 1 <= len(parts) < 3
    run_dir = parts[0].parents[2]
    assert not (run_dir / "results.parquet").exists()
    before = {p: p.stat().st_mtime_ns for p in parts}

    resumed = _bench(args, env)
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out
    assert f"{len(parts)} already done" in out
    for p, mtime in before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["invocations"] == 2 and manifest["status"] == "complete"

    clean_env = {**env, "TALKBENCH_CACHE": str(tmp_path / "cache2")}
    clean_args = [a if a != str(tmp_path / "runs") else str(tmp_path / "clean") for a in args]
    clean = _bench(clean_args, clean_env)
    out, _ = clean.communicate(timeout=900)
    assert clean.returncode == 0, out
    a = load_run(run_dir).sort_values(["method", "request_id", "metric"]).reset_index(drop=True)
    b = load_run(next((tmp_path / "clean").iterdir())).sort_values(["method", "request_id", "metric"]).reset_index(drop=True)
    assert len(a) == len(b) and len(a) > 0
    # commit is provenance, not a result: in a shared checkout it may move between the three runs
    pd.testing.assert_frame_equal(a.drop(columns=["extra", "commit"]), b.drop(columns=["extra", "commit"]))


# ------------------------------------------------------------------------------------------ versions


def test_resume_under_other_versions_recomputes_what_changed_and_tracks_commits(tmp_path, noisy_method,
                                                                                 monkeypatch):
    """Rows carry the versions that made them; a rerun after a (simulated) pull recomputes the parts
    whose method or metric version changed, and the manifest names every invocation's commit."""
    import dataclasses

    import bench.manifest as mf
    from metrics.image import PSNRMetric

    cfg = _config(tmp_path, methods=("noisy", "frozen"), metrics=("psnr",))
    first = run(cfg, progress=Progress.off())
    rows1 = load_run(first.run_dir)
    assert len(noisy_method) == 2
    parts = sorted((first.run_dir / "parts").glob("*/*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in parts}

    # 1. only the commit moves: nothing is recomputed, the manifest names the new commit and keeps both
    monkeypatch.setattr(mf, "git_info", lambda start=None: {"commit": "f" * 40, "dirty": False})
    again = run(cfg, progress=Progress.off())
    assert len(parts) == 4 and again.done == 0 and again.skipped == 4
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    m = json.loads((first.run_dir / "manifest.json").read_text())
    assert m["git"]["commit"] == "f" * 40 and m["invocations"] == 2
    assert [h["git"]["commit"] for h in m["history"]] == [rows1.commit.iloc[0].removesuffix("+dirty"), "f" * 40]

    # 2. the method's version changes: its parts are regenerated and restamped, frozen's stay
    monkeypatch.setattr(Noisy, "spec", dataclasses.replace(Noisy.spec, version="2"))
    third = run(cfg, progress=Progress.off())
    assert third.done == 2 and third.skipped == 2 and len(noisy_method) == 4
    rows3 = load_run(first.run_dir)
    noisy_versions = {json.loads(v)["method"] for v in rows3[rows3.method == "noisy"].versions}
    assert len(noisy_versions) == 1 and next(iter(noisy_versions)).startswith("noisy@2#")
    assert set(rows3[rows3.method == "noisy"].commit) == {"f" * 40}
    for p in parts:
        assert (p.stat().st_mtime_ns == mtimes[p]) == (p.parent.name == "frozen"), p

    # 3. a metric's version changes: every part is rescored, the videos come from the cache
    monkeypatch.setattr(PSNRMetric, "spec", dataclasses.replace(PSNRMetric.spec, version="7"))
    fourth = run(cfg, progress=Progress.off())
    assert fourth.done == 4 and len(noisy_method) == 4
    rows4 = load_run(first.run_dir)
    assert {json.loads(v)["metrics"]["psnr"].split("#")[0] for v in rows4.versions} == {"7"}
    assert len(rows4) == len(rows1), "recomputed parts replace their rows, never add to them"
    m = json.loads((first.run_dir / "manifest.json").read_text())
    assert m["invocations"] == 4 and len(m["versions_seen"]) == 3
