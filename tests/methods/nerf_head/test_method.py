"""The nerf_head Method on a 4 s cut of the embedded demo clip with the tiny renderer and audio-to-motion
sizes: both parts fit through bench.trainer, generate keeps the frame contract and only changes the
head-crop square, is deterministic, loops the target under longer audio, budgets continue training and
set each network's steps, and the method is unavailable with a reason when what it needs is missing.
Pure helpers (pose smoothing, eye area, feather mask) are checked on their own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.method import Budget, GenerateRequest, MethodContext

TINY = {"renderer_preset": "tiny", "a2m_size": "tiny", "eval_frames": "1"}


@pytest.fixture(scope="module")
def cut(tmp_path_factory, demo_video):
    """A 4 s `video:` dataset (train 2.4 s, val 0.8 s, test 0.8 s) prepared in a private cache."""
    from bench.cache import Cache
    from data_recipes.datasets import DatasetOptions, load
    from data_recipes.media import read_audio, read_video_frames, write_video
    from data_recipes.recipe import Recipe

    root = tmp_path_factory.mktemp("nerf_head_method")
    mp = pytest.MonkeyPatch()
    mp.setenv("TALKBENCH_CACHE", str(root / "cache"))
    mp.setenv("TALKBENCH_WEIGHTS", str(root / "weights"))
    video = write_video(root / "cut.mp4", read_video_frames(demo_video)[:100], fps=25,
                        audio=read_audio(demo_video, 16000)[: 100 * 640])
    dataset = load(f"video:{video}", DatasetOptions(test_seconds=0.8))
    recipe = Recipe(Cache(), clips=dataset.clips)
    yield {"root": root, "dataset": dataset, "recipe": recipe}
    mp.undo()


def _method(overrides: dict[str, str] | None = None, work: Path | None = None):
    from bench.cache import Cache
    from bench.config import apply_overrides
    from bench.progress import Progress
    from methods.nerf_head.method import NerfHeadConfig, NerfHeadMethod

    config = apply_overrides(NerfHeadConfig(), {**TINY, **(overrides or {})}, "method nerf_head")
    ctx = MethodContext(work_dir=work or Path("."), cache=Cache(), progress=Progress.off(), seed=0)
    return NerfHeadMethod(config, ctx)


def _fit(cut, budget: Budget, work: Path, overrides: dict[str, str] | None = None):
    """As the runner: dataset part on train + val clips, then the subject part, each in its own folder."""
    ds, recipe = cut["dataset"], cut["recipe"]
    clips = [recipe.prepare(c) for c in (*ds.split("train"), *ds.split("val"))]
    method = _method(overrides, work)
    reports = {}
    for part in method.spec.fit_parts():
        method.context = dataclasses.replace(method.context, work_dir=work / part.name)
        method.context.work_dir.mkdir(parents=True, exist_ok=True)
        reports[part.name] = method.fit_part(part, clips, budget.for_method("nerf_head"))
    return method, reports


@pytest.fixture(scope="module")
def fitted(cut, tmp_path_factory):
    return _fit(cut, Budget(steps=2), tmp_path_factory.mktemp("fit"))


def _crop_box(recipe_clip, frame_hw):
    """Pixels of the full frame covered by any of the clip's head-crop squares."""
    from data_recipes.crops.head import invert

    h, w = frame_hw
    t = recipe_clip.stage("head_crops")
    size = int(t.json("meta")["size"])
    covered = np.zeros((h, w), bool)
    for a in t.array("transforms"):
        inv = invert(a)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        pts = corners @ inv[:, :2].T + inv[:, 2]
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int)
        covered[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return covered


def test_fit_reports_both_parts_with_steps_curves_and_front_end(fitted):
    _, reports = fitted
    a2m, rend = reports["audio2motion"], reports["renderer"]
    assert a2m.steps == 2 and a2m.steps_by_part == {"audio2motion": 2}
    assert "front end: mel" in a2m.notes and "front end: mel" in rend.notes
    assert rend.steps_by_part == {"head": 2, "torso": 2} and rend.steps == 4
    assert rend.curves["head_eval"] and "val_psnr" in rend.curves["head_eval"][-1]
    assert rend.curves["torso_eval"] and rend.curves["head"]
    assert "previews:" in rend.notes and "preset tiny" in rend.notes
    assert {w.role for w in rend.weights} == {"renderer head", "renderer torso"}
    assert all(w.sha256 for w in (*a2m.weights, *rend.weights))


def test_generate_frame_contract_paste_region_and_determinism(fitted, cut):
    method, _ = fitted
    ds, recipe = cut["dataset"], cut["recipe"]
    test = recipe.prepare(ds.split("test")[0])
    val = recipe.prepare(ds.split("val")[0])
    for req in (GenerateRequest("self", "self", test, test, seed=1), GenerateRequest("cross", "cross", test, val, seed=1)):
        res = method.generate(req)
        f = np.asarray(res.frames)   # a lazy video (issue 16): decoded for the pixel checks
        h, w = test.size
        assert f.dtype == np.uint8 and f.shape == (req.num_frames, h, w, 3) and f.flags.c_contiguous
        assert set(res.timings) == {"motion", "render", "paste_back"} and all(v >= 0 for v in res.timings.values())
        assert res.info["front_end"] == "mel" and res.info["renderer_preset"] == "tiny"
        target = test.frames(0, len(f))
        inside = _crop_box(test, (h, w))
        assert inside.any() and (~inside).any()
        # the rendered square changes the frame inside the crop, and nothing outside it
        np.testing.assert_array_equal(f[:, ~inside], target[:, ~inside])
        assert np.abs(f[:, inside].astype(int) - target[:, inside]).mean() > 1.0
        np.testing.assert_array_equal(method.generate(req).frames, f)


def test_longer_audio_loops_the_target_video(fitted, cut):
    method, _ = fitted
    ds, recipe = cut["dataset"], cut["recipe"]
    test = recipe.prepare(ds.split("test")[0])
    train = recipe.prepare(ds.split("train")[0])
    res = method.generate(GenerateRequest("long", "cross", test, train, seed=0))
    t = test.num_frames
    assert len(res.frames) == train.num_frames > t and res.info["looped"]
    outside = ~_crop_box(test, test.size)
    frames = test.frames()
    for i in (t, t + 1, 2 * t + 3):
        np.testing.assert_array_equal(res.frames[i][outside], frames[i % t][outside])


def test_larger_budget_continues_and_counters_set_each_network(cut, tmp_path):
    work = tmp_path / "w"
    _, first = _fit(cut, Budget(steps=1), work)
    _, more = _fit(cut, Budget(steps=2), work)
    assert more["renderer"].resumed_from == {"head": 1, "torso": 1}
    assert more["audio2motion"].resumed_from == {"audio2motion": 1}
    assert more["renderer"].steps_by_part == {"head": 2, "torso": 2}
    # the head continued exactly as a straight 2-step fit; the continued torso sits on that new head
    _, straight = _fit(cut, Budget(steps=2), tmp_path / "straight")
    import torch

    def state(report, role):
        path = next(w.path for w in report.weights if w.role == role)
        return torch.load(path, weights_only=True)["task"]["model"]

    head_more, head_straight = state(more["renderer"], "renderer head"), state(straight["renderer"], "renderer head")
    for k in head_more:
        assert torch.allclose(head_more[k].float(), head_straight[k].float(), atol=1e-6), k
    torso_more = state(more["renderer"], "renderer torso")
    for k in ("sigma_net.net.0.weight", "individual_embeddings", "density_grid"):
        assert torch.equal(torso_more[k], head_more[k]), k
    _, counted = _fit(cut, Budget.parse("steps=1,nerf_head.head=3,nerf_head.torso=0"), tmp_path / "counted")
    assert counted["renderer"].steps_by_part == {"head": 3}
    assert counted["audio2motion"].steps == 1


def test_unavailable_with_a_reason(monkeypatch):
    from bench.availability import Availability
    from bench.config import apply_overrides
    from methods.nerf_head.method import NerfHeadConfig, NerfHeadMethod

    def cfg(**kw):
        return apply_overrides(NerfHeadConfig(), {k: str(v) for k, v in kw.items()}, "method nerf_head")

    a = NerfHeadMethod.availability(cfg(audio2motion_checkpoint="/nonexistent/a2m_official"))
    assert not a.ok and "a2m_official" in a.reason
    import data_recipes.audio.hubert as hubert

    monkeypatch.setattr(hubert, "hubert_availability", lambda config=None: Availability.no("no HuBERT folder here"))
    a = NerfHeadMethod.availability(cfg(front_end="hubert"))
    assert not a.ok and "hubert" in a.reason and "no HuBERT folder here" in a.reason
    import data_recipes.threedmm.stage as tdm

    monkeypatch.setattr(tdm, "threedmm_availability", lambda config=None: Availability.no("mesh file missing"))
    a = NerfHeadMethod.availability(cfg())
    assert not a.ok and "threedmm" in a.reason and "mesh file missing" in a.reason


def test_pose_smoothing_eye_area_and_feather_mask():
    from methods.nerf_head.subject import eye_area, feather_mask, smooth_poses

    rng = np.random.default_rng(0)
    const = np.tile([[0.1, -0.2, 0.05]], (20, 1))
    e, t = smooth_poses(const, const * 10, 7)
    np.testing.assert_allclose(e, const)
    np.testing.assert_allclose(t, const * 10)
    noisy = const + rng.normal(scale=0.05, size=const.shape)
    e, _ = smooth_poses(noisy, noisy, 7)
    assert e.shape == noisy.shape and np.abs(np.diff(e, axis=0)).mean() < 0.5 * np.abs(np.diff(noisy, axis=0)).mean()

    ang = np.linspace(0, 2 * np.pi, 17)
    face = np.zeros((2, 68, 2))
    face[:, :17] = np.stack([50 + 40 * np.cos(ang / 2 + np.pi), 50 + 40 * np.sin(ang / 2)], -1)  # jaw
    face[:, 17:27] = np.stack([np.linspace(10, 90, 10), np.full(10, 20.0)], -1)                     # brows
    eye = np.array([[0, 0], [2, -1], [4, -1], [6, 0], [4, 1], [2, 1]], np.float64)
    for k, scale in enumerate((1.0, 3.0)):              # frame 1: eyes three times as open
        e = eye * [1, scale]
        face[k, 36:42] = e + [30, 40]
        face[k, 42:48] = e + [60, 40]
    areas = eye_area(face)
    assert areas.shape == (2,) and 0 < areas[0] < areas[1] and areas[1] == pytest.approx(3 * areas[0], rel=1e-4)

    m = feather_mask(64, 8)
    assert m.shape == (64, 64) and m[32, 32] == 1.0 and m[0, 32] < 0.1 and m[0, 0] <= m[0, 32]
    assert np.all(feather_mask(16, 0) == 1)
