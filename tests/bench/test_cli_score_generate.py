"""`bench run`'s LSE rows equal `bench score` on the files the run stored (the real video's segment copy,
a generated video's delivered mp4), and `bench score` / `bench generate` handle their inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metrics.sync import inputs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from tests.metrics.sync_common import save_like_original
    from tests.metrics.test_sync_files import seeded_informative_syncnet

    return save_like_original(seeded_informative_syncnet(0), tmp_path_factory.mktemp("sn") / "syncnet_test.model")


def _score(video: Path, checkpoint: Path, capsys, protocol: str = "lrs") -> dict:
    from bench.cli import main

    capsys.readouterr()
    assert main(["score", str(video), "--metrics", "lse", "--set", f"lse.checkpoint={checkpoint}", "--json",
                 "--device", "cpu", "--protocol", protocol]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_run_rows_equal_bench_score_on_the_stored_files(isolated_dirs, shared_data, checkpoint, capsys):
    from bench.cli import main

    clip = isolated_dirs / "obama_7s.mp4"
    inputs.run_ffmpeg(["-y", "-i", str(shared_data / "clips/obama_20s.mp4"), "-t", "7", "-c", "copy", str(clip)])
    runs = isolated_dirs / "runs"
    rc = main(["run", "--dataset", f"video:{clip}", "--methods", "reference,frozen", "--metrics", "lse",
               "--set", f"lse.checkpoint={checkpoint}", "--test-seconds", "1.6", "--no-cross", "--no-report",
               "--no-previews", "--runs-dir", str(runs), "--device", "cpu", "--progress", "off"])
    assert rc == 0
    run_dir = next(runs.iterdir())
    rows = pd.read_parquet(run_dir / "results.parquet")
    lse_rows = rows[rows["family"] == "lse"]
    assert set(lse_rows["status"]) == {"ok"}
    assert all("(SyncNet " in m for m in lse_rows["metric"])          # a test network: never "LSE-D"
    protocol = json.loads((run_dir / "manifest.json").read_text())["dataset"]["sync_protocol"]
    assert protocol == "tracked"   # a full-frame video: faces tracked and cropped from each file
    checked = 0
    for method, name in (("reference", "real.mp4"), ("frozen", "delivered.mp4")):
        files = list((run_dir / "samples" / method).glob(f"*/{name}"))
        assert len(files) == 1, (method, files)
        sample = json.loads((files[0].parent / "sample.json").read_text())
        assert sample.get("segment_copy") is True if method == "reference" else sample["delivered"] == name
        scored = _score(files[0], checkpoint, capsys, protocol)
        mine = lse_rows[lse_rows["method"] == method]
        for _, row in mine.iterrows():
            assert scored[row["metric"]] == pytest.approx(row["value"], abs=1e-6), (method, row["metric"])
            checked += 1
    assert checked == 6
    manifest = json.loads((run_dir / "manifest.json").read_text())
    used = manifest["metrics"]["lse"]["weights"]
    assert any(w["role"].startswith("ffmpeg") and w["version"] for w in used)
    assert any(w.get("label", "").startswith("SyncNet ") for w in used)


def test_bench_score_json_reports_what_could_not_run(shared_data, checkpoint, capsys, isolated_dirs):
    from bench.cli import main

    video = shared_data / "clips/vox/00002.mp4"
    capsys.readouterr()
    assert main(["score", str(video), "--metrics", "lse,psnr", "--json", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["not_scored"]["LSE-D"]["status"] == "unavailable" and "syncnet_v2.model" in got["not_scored"]["LSE-D"]["reason"]
    assert got["not_scored"]["PSNR"]["status"] == "not_applicable" and "--reference" in got["not_scored"]["PSNR"]["reason"]


def test_bench_generate_needs_weights_and_a_known_method(shared_data, tmp_path, capsys):
    from bench.cli import main

    face = shared_data / "clips/vox/00002.mp4"
    rc = main(["generate", "--method", "wav2lip", "--face", str(face), "--audio", str(face), "--out",
               str(tmp_path / "o.mp4")])
    assert rc == 2 and "wav2lip.checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--method", "nerf_head", "--face", str(face), "--audio", str(face), "--out", "x.mp4"])


def test_bench_score_streams_the_files_and_scores_like_whole_arrays(tmp_path, demo_video, capsys):
    """`bench score` reads both videos lazily (metrics take them in blocks, so memory does not follow
    the files' length) and gets the numbers the metric functions give on whole decoded arrays."""
    from bench.cli import main
    from bench.single import _sample
    from data_recipes.frames import Frames
    from data_recipes.media import read_video_frames, write_video
    from metrics.image import psnr, ssim
    from tests.conftest import first_frames

    frames = first_frames(demo_video, 40)
    tone = (0.1 * np.sin(np.arange(40 * 640) / 10.0)).astype(np.float32)
    ref = write_video(tmp_path / "ref.mkv", frames, lossless=True, audio=tone)
    noisy = np.clip(frames.astype(np.int16) + np.random.default_rng(0).integers(-12, 13, frames.shape), 0, 255)
    gen = write_video(tmp_path / "gen.mkv", noisy[:37].astype(np.uint8), lossless=True, audio=tone[: 37 * 640])   # 3 frames shorter

    sample = _sample(gen, None, ref, "lrs")
    assert isinstance(sample.generated, Frames) and isinstance(sample.ground_truth, Frames)
    assert len(sample.generated) == len(sample.ground_truth) == 37
    assert main(["score", str(gen), "--reference", str(ref), "--metrics", "psnr,ssim", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    a, b = read_video_frames(gen), read_video_frames(ref)[:37]
    assert got["PSNR"] == pytest.approx(float(np.mean(psnr(a, b, 255.0))), abs=1e-9)
    assert got["SSIM"] == pytest.approx(float(np.mean(ssim(a, b, 255.0))), abs=1e-9)
