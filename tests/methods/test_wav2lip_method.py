"""The Wav2LipMethod adapter end to end through the recipe (normalise, faces, wav2lip_crops, mel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.method import Budget, GenerateRequest, MethodContext
from data_recipes.clip import Clip


def _context(tmp_path, cache):
    from bench.progress import Progress

    return MethodContext(work_dir=tmp_path / "work", cache=cache, progress=Progress.off(), device="cpu", seed=0)


@pytest.fixture()
def recipe(isolated_dirs):
    from bench.cache import Cache
    from data_recipes.recipe import Recipe

    return Recipe(Cache(isolated_dirs / "cache"))


def _seeded_official_file(path):
    from methods.wav2lip.models import Wav2Lip

    torch.manual_seed(0)
    sd = Wav2Lip().state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "optimizer": None,
                "global_step": 0, "global_epoch": 0}, path)
    return path


def test_registry_and_cheap_import():
    import subprocess
    import sys

    from bench.registry import method_registry
    from methods.wav2lip.method import Wav2LipMethod

    assert method_registry().load("wav2lip") is Wav2LipMethod
    spec = Wav2LipMethod.spec
    assert (spec.name, spec.kind, spec.fit_scope) == ("wav2lip", "2d", "dataset")
    assert spec.stages == ("normalise", "faces", "wav2lip_crops", "mel")
    code = "import sys, methods.wav2lip.method; print(sorted(m for m in ('torch', 'cv2', 'librosa') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_availability_says_what_is_missing(isolated_dirs, tmp_path):
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod

    assert Wav2LipMethod.availability(Wav2LipConfig()).ok  # trains when nothing is given
    a = Wav2LipMethod.availability(Wav2LipConfig(pretrained=True))
    assert not a.ok and "wav2lip_gan.pth" in a.reason
    a = Wav2LipMethod.availability(Wav2LipConfig(pretrained=True, gan=False))
    assert not a.ok and "wav2lip.pth" in a.reason
    a = Wav2LipMethod.availability(Wav2LipConfig(checkpoint=tmp_path / "nope.pth"))
    assert not a.ok and "does not exist" in a.reason
    a = Wav2LipMethod.availability(Wav2LipConfig(pretrained_expert=True))
    assert not a.ok and "lipsync_expert.pth" in a.reason


def test_config_overrides_from_the_command_line():
    from bench.config import apply_overrides
    from methods.wav2lip.method import Wav2LipConfig

    cfg = apply_overrides(Wav2LipConfig(), {"box": "120,360,110,350", "nosmooth": "true", "pads": "0,20,0,0",
                                            "checkpoint": "/w/wav2lip_gan.pth", "blend": "feather"}, "wav2lip")
    assert cfg.box == (120, 360, 110, 350) and cfg.nosmooth and cfg.pads == (0, 20, 0, 0)
    assert str(cfg.checkpoint) == "/w/wav2lip_gan.pth" and cfg.blend == "feather"


def test_user_checkpoint_fit_and_generate_with_detected_boxes(recipe, tmp_path, demo_video):
    from bench.weights import sha256_file
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod

    ckpt = _seeded_official_file(tmp_path / "mine.pth")
    clip = Clip("demo/short", demo_video, subject="obama", split="test", start=16.0, end=17.2)  # 30 frames
    prepared = recipe.prepare(clip)
    method = Wav2LipMethod(Wav2LipConfig(checkpoint=ckpt, batch_size=16), _context(tmp_path, recipe.cache))
    report = method.fit([], Budget())
    assert report.steps == 0 and report.weights[0].origin == "user"
    assert report.weights[0].sha256 == sha256_file(ckpt) and report.weights[0].role == "generator"
    res = method.generate(GenerateRequest("demo/short", "self", prepared, prepared))
    assert res.frames.shape == (27, 450, 450, 3)  # 97 mel frames -> 27 windows (the official rule)
    assert set(res.timings) == {"features", "model", "paste_back"} and all(v > 0 for v in res.timings.values())
    assert res.frames_without_face == 0 and res.info["faithful"]
    gt = prepared.frames(0, 27)
    boxes = np.array(res.info["boxes"])
    assert boxes.shape == (27, 4)
    x1, y1, x2, y2 = boxes[5]
    changed = np.abs(np.asarray(res.frames).astype(int) - gt.astype(int)).max(axis=-1) > 0
    assert changed[:, y1:y2, x1:x2].mean() > 0.5            # the face box was regenerated
    outside = changed.copy()
    for i in range(27):  # pixels far from every box are untouched
        bx1, by1, bx2, by2 = boxes[i]
        outside[i, by1:by2, bx1:bx2] = False
    assert not outside.any()
    # the run path equals the official data flow fed the transcribed original mel, bit for bit
    from methods.wav2lip.inference import lipsync
    from tests.methods.test_wav2lip_parity import official_melspectrogram

    crops = prepared.stage("wav2lip_crops")
    ref = lipsync(method._model, prepared.frames(0, 27), official_melspectrogram(prepared.audio()),
                  crops.array("detector_boxes"), crops.array("has_face"), method.inference_options())
    assert np.array_equal(np.asarray(res.frames), ref.frames)


def _video_with_black_frames(tmp_path, demo_video, black: range):
    """The demo's [16, 17.6) s with some frames blacked out, and its audio as a separate wav."""
    import soundfile as sf

    from bench.cache import Cache
    from data_recipes.media import write_video
    from data_recipes.recipe import Recipe

    src = Recipe(Cache(tmp_path / "src")).prepare(Clip("s", demo_video, "obama", "test", start=16.0, end=17.6))
    frames = src.frames()
    frames[list(black)] = 0
    video = write_video(tmp_path / "black.mp4", frames, crf=10)
    wav = tmp_path / "black.wav"
    sf.write(str(wav), src.audio(), 16000)
    return Clip("demo/black", video, subject="obama", split="test", audio=wav)


@pytest.mark.slow
def test_frames_without_a_face_pass_through_and_are_counted(recipe, tmp_path, demo_video):
    """Eight black frames (longer than the face tracker's gap filling) have no face; the official
    script would abort, we pass them through and count them."""
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod

    clip = _video_with_black_frames(tmp_path, demo_video, range(10, 18))
    prepared = recipe.prepare(clip)
    has_face = prepared.stage("wav2lip_crops").array("has_face")
    assert not has_face[10:18].any() and has_face[:10].all() and has_face[18:].all()
    method = Wav2LipMethod(Wav2LipConfig(checkpoint=_seeded_official_file(tmp_path / "g.pth")),
                           _context(tmp_path, recipe.cache))
    method.fit([], Budget())
    res = method.generate(GenerateRequest("demo/black", "self", prepared, prepared))
    assert len(res.frames) == 37 and res.frames_without_face == 8
    assert not np.asarray(res.frames[10:18]).any()  # passed through: still black


@pytest.mark.slow
def test_training_fit_is_resumable_and_reported(recipe, tmp_path, demo_video):
    """fit without weights trains expert then generator (tiny budget) in the work dir; a second fit
    with the same work dir finds the finished stages and only reloads."""
    from methods.wav2lip.method import Wav2LipConfig, Wav2LipMethod

    clips = [recipe.prepare(Clip("mini/train", demo_video, "obama", "train", start=0.0, end=2.4)),
             recipe.prepare(Clip("mini/val", demo_video, "obama", "val", start=2.4, end=3.6))]
    cfg = Wav2LipConfig(expert_batch_size=2, generator_batch_size=2, batch_size=32)
    budget = Budget.parse("quick,steps=1")
    method = Wav2LipMethod(cfg, _context(tmp_path, recipe.cache))
    report = method.fit(clips, budget)
    assert report.steps == 2 and report.budget == "quick,steps=1"
    roles = {w.role: w for w in report.weights}
    assert roles["generator"].origin == roles["expert syncnet"].origin == "trained-by-suite"
    assert "quality discriminator" in roles
    assert "evaluated on the dataset's val clips" in report.notes
    assert [r["step"] for r in report.curves["expert"]] == [1.0]
    assert [r["step"] for r in report.curves["generator"]] == [1.0]
    assert report.curves["generator_eval"][-1]["eval_sync"] > 0
    test = recipe.prepare(Clip("mini/test", demo_video, "obama", "test", start=16.0, end=16.8))
    res = method.generate(GenerateRequest("mini/test", "cross", test, clips[1]))
    assert res.frames.shape[0] == 27 and res.info["looped"]  # 1.2 s of audio over 20 frames
    again = Wav2LipMethod(cfg, _context(tmp_path, recipe.cache)).fit(clips, budget)
    assert again.weights[0].sha256 == roles["generator"].sha256 and again.steps == 2
