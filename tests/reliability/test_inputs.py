"""Inputs that used to pass silently or crash (issue 16): a clip without any face, silent audio,
driving audio files for `video:`. Every clip is cut from the demo at test time (tests/reliability/media.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench import cli


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------ no face at all


def test_prepare_reports_a_clip_without_faces_and_exits_non_zero(isolated_dirs, reliability_media, capsys):
    code, out, err = _main(["prepare", "--dataset", f"video:{reliability_media['noface']}", "--methods", "wav2lip",
                            "--workers", "1", "--progress", "off"], capsys)
    assert code == cli.EXIT_RUN_FAILED != 0
    assert "prepared 3/3 clips" in out and "input checks: 0 ok, 0 with warnings, 3 failed" in out
    assert "failed noface/test: faces: no face in any of 25 frames" in err
    assert "failed noface/train: faces: no face in any of 60 frames" in err
    assert "Traceback" not in out + err


def test_prepare_of_a_clip_with_faces_passes(isolated_dirs, reliability_media, capsys):
    code, out, err = _main(["prepare", "--dataset", f"video:{reliability_media['face']}", "--methods", "wav2lip",
                            "--workers", "1", "--progress", "off"], capsys)
    assert code == 0, err
    assert "prepared 3/3 clips" in out and "input checks: 3 ok, 0 with warnings, 0 failed" in out


def test_wav2lip_run_on_a_clip_without_faces_fails_its_requests_with_the_reason(isolated_dirs, reliability_media,
                                                                                 tmp_path, capsys):
    code, out, err = _main(["run", "--dataset", f"video:{reliability_media['noface']}", "--methods", "wav2lip",
                            "--metrics", "psnr,fps", "--budget", "steps=1", "--runs-dir", str(tmp_path / "runs"),
                            "--no-report", "--no-previews", "--progress", "off"], capsys)
    assert code == cli.EXIT_RUN_FAILED
    assert "wav2lip: 2 request(s): input check failed for clip 'noface/test': faces: no face in any of 25" in err
    assert "IndexError" not in err and "Traceback" not in err
    run_dir = next((tmp_path / "runs").iterdir())
    rows = pd.read_csv(run_dir / "results.csv")
    assert set(rows["status"]) == {"failed"} and set(rows["request_id"]) == {"noface/test",
                                                                             "noface/test <- noface/val"}
    assert rows["reason"].str.contains("no face in any of 25 frames").all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    gates = {g["name"]: g for g in manifest["input_checks"]["noface/test"]["gates"]}
    assert manifest["input_checks"]["noface/test"]["status"] == "failed"
    assert gates["faces"]["status"] == "failed" and gates["faces"]["scope"] == "faces"
    assert not (run_dir / "fits").exists() or not any((run_dir / "fits").iterdir())


def test_wav2lip_itself_names_missing_faces(isolated_dirs, reliability_media, tmp_path):
    """Called directly (no runner gate in front): fitting on faceless training clips and generating
    for a faceless target raise InputUnusable with the counts, never an IndexError."""
    import torch

    from bench.cache import Cache
    from bench.method import Budget, GenerateRequest, MethodContext
    from bench.progress import Progress
    from data_recipes.datasets import load
    from data_recipes.quality import InputUnusable
    from data_recipes.recipe import Recipe
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod
    from methods.wav2lip.models import Wav2Lip

    ds = load(f"video:{reliability_media['noface']}")
    recipe = Recipe(Cache(isolated_dirs / "cache"), clips=ds.clips)
    train, val, test = (recipe.prepare(ds.clip(f"noface/{s}")) for s in ("train", "val", "test"))
    context = MethodContext(work_dir=tmp_path / "work", cache=recipe.cache, progress=Progress.off(), device="cpu")
    with pytest.raises(InputUnusable, match=r"no training clip has more than 15 frames with a detected face "
                                            r"\(frames with a face: 'noface/train': 0 of 60\)"):
        Wav2LipMethod(Wav2LipConfig(), context).fit([train, val], Budget(steps=1))
    torch.manual_seed(0)
    weights = tmp_path / "seeded.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in Wav2Lip().state_dict().items()}}, weights)
    method = Wav2LipMethod(Wav2LipConfig(checkpoint=weights), context)
    method.fit([], Budget())
    with pytest.raises(InputUnusable, match=r"no face in any of the \d+ frames of target clip 'noface/test'"):
        method.generate(GenerateRequest("noface/test", "self", test, test))


def test_split_of_no_usable_clip_is_a_reason_not_an_index_error():
    from data_recipes.quality import InputUnusable
    from methods.wav2lip.data import split_train_eval

    with pytest.raises(InputUnusable, match="no training clip"):
        split_train_eval([], [])


# ------------------------------------------------------------------------------------------ silence


def test_silent_audio_warns_in_prepare_and_in_the_run_manifest(isolated_dirs, reliability_media, tmp_path, capsys):
    code, out, err = _main(["prepare", "--dataset", f"video:{reliability_media['silent']}", "--methods", "frozen",
                            "--workers", "1", "--progress", "off"], capsys)
    assert code == 0, err                                           # a warning never fails
    assert "input checks: 0 ok, 3 with warnings, 0 failed" in out
    assert "warning silent/test: audio: digital silence" in out or "warning silent/test: audio: near-silent" in out
    code, out, err = _main(["run", "--dataset", f"video:{reliability_media['silent']}", "--methods", "frozen",
                            "--metrics", "fps", "--runs-dir", str(tmp_path / "runs"), "--no-report", "--no-previews",
                            "--no-cross", "--progress", "off"], capsys)
    assert code == 0, err
    manifest = json.loads((next((tmp_path / "runs").iterdir()) / "manifest.json").read_text())
    checks = manifest["input_checks"]["silent/test"]
    gates = {g["name"]: g for g in checks["gates"]}
    assert checks["status"] == "warning" and gates["audio"]["status"] == "warning"
    assert gates["faces"]["status"] == "ok" and gates["media"]["status"] == "ok"


# ----------------------------------------------------------------------------------- driving audio


def test_video_argument_names_driving_audio_files(reliability_media, tmp_path):
    from data_recipes.clip import DatasetError
    from data_recipes.datasets import DATASETS, availability, load
    from data_recipes.datasets.demo import demo_video
    from data_recipes.datasets.video import split_argument
    from tests.reliability.media import audio_file, ffmpeg

    face, mp3, wav = reliability_media["face"], reliability_media["mp3"], reliability_media["wav44k"]
    # "speech 44k+stereo.wav" has a "+" in its name: the split happens only where a file exists
    assert split_argument(f"{face}+{mp3}+{wav}") == (face, (mp3, wav))
    ds = load(f"video:{face}+{mp3}+{wav}")
    driving = ds.split("driving")
    assert [c.id for c in driving] == ["face/audio:speech.mp3", "face/audio:speech 44k+stereo.wav"]
    assert all(c.audio_only and c.audio == c.video for c in driving)
    assert [(p.video_clip, p.audio_clip) for p in ds.pairs] == [
        ("face/test", "face/val"), ("face/test", "face/audio:speech.mp3"),
        ("face/test", "face/audio:speech 44k+stereo.wav")]
    assert "driving audio: speech.mp3, speech 44k+stereo.wav" in ds.description
    with pytest.raises(DatasetError, match=r"driving audio file .*nope\.wav not found"):
        load(f"video:{face}+{tmp_path / 'nope.wav'}")
    video_only = tmp_path / "video_only.mp4"
    ffmpeg("-i", str(face), "-an", "-c:v", "copy", str(video_only))
    with pytest.raises(DatasetError, match=r"driving audio file .*video_only\.mp4 has no audio stream"):
        load(f"video:{face}+{video_only}")
    short = audio_file(demo_video(), tmp_path / "short.wav", 0.0, 0.2, 16000, 1)
    with pytest.raises(DatasetError, match=r"lasts 0\.20 s; at least 0\.52 s"):
        load(f"video:{face}+{short}")
    assert availability(DATASETS["video"], f"{face}+{mp3}").ok
    assert not availability(DATASETS["video"], f"{face}+{tmp_path / 'nope.wav'}").ok


@pytest.mark.parametrize("key, seconds", [("wav44k", 2.0), ("m4a", 1.0)])
def test_driving_audio_file_normalises_to_whole_frames(isolated_dirs, reliability_media, key, seconds):
    """44.1 kHz stereo PCM and 48 kHz AAC come out as 16 kHz mono, 640 samples per 25 fps frame, and
    feed the audio stages (mel); asking for frames says the clip has none."""
    from bench.cache import Cache
    from data_recipes.datasets import load
    from data_recipes.media import MediaError
    from data_recipes.recipe import Recipe

    ds = load(f"video:{reliability_media['face']}+{reliability_media[key]}")
    (clip,) = ds.split("driving")
    prepared = Recipe(Cache(isolated_dirs / "cache"), clips=ds.clips).prepare(clip)
    n = prepared.num_frames
    assert abs(n - 25 * seconds) <= 1 and len(prepared.audio()) == 640 * n
    assert prepared.stage("mel").array("mel").shape[0] == 80
    with pytest.raises(MediaError, match="driving audio file"):
        prepared.frames(0, 1)


def test_driving_audio_files_give_cross_driven_requests(isolated_dirs, reliability_media, tmp_path, capsys):
    face, mp3, wav = reliability_media["face"], reliability_media["mp3"], reliability_media["wav44k"]
    code, out, err = _main(["run", "--dataset", f"video:{face}+{mp3}+{wav}", "--methods", "frozen",
                            "--metrics", "fps", "--runs-dir", str(tmp_path / "runs"), "--no-report", "--no-previews",
                            "--progress", "off"], capsys)
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    rows = pd.read_parquet(run_dir / "results.parquet")
    cross = rows[rows["kind"] == "cross"].set_index("audio_clip")
    assert set(cross.index) == {"face/val", "face/audio:speech.mp3", "face/audio:speech 44k+stereo.wav"}
    # frozen reports no timings, so its fps is not applicable; nothing failed and every video was made
    assert not (rows["status"] == "failed").any() and set(cross["clip_id"]) == {"face/test"}
    made = [json.loads(p.read_text()) for p in (run_dir / "samples" / "frozen").glob("*/sample.json")]
    assert sorted(m["audio_clip"] for m in made) == sorted([*cross.index, "face/test"])
    # each request lasts as long as its driving audio (the target's 25 frames are looped)
    assert cross.loc["face/audio:speech 44k+stereo.wav", "n_frames"] == 50
    assert abs(int(cross.loc["face/audio:speech.mp3", "n_frames"]) - 75) <= 1
    assert set(rows[rows["kind"] == "self"]["clip_id"]) == {"face/test"}   # audio files are never targets
