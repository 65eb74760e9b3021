"""Subject-level recipe stages: computed once per subject from its train clips, read by every clip.

The first tests use toy stages (no media decoding) to pin the caching rules; the last ones check the
acceptance on real media: the train, val and test segments of one video share one 3DMM identity,
one camera, one background plate and one head-crop frame of reference, and `bench prepare
--debug-dir` says so on its overlays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cache import Cache
from data_recipes.clip import Clip
from data_recipes.recipe import STAGES, Recipe, StageSpec, save_json

CALLS: list[tuple[str, tuple[str, ...]]] = []


def toy_clip_stage(ctx) -> None:
    CALLS.append(("clip", (ctx.clip.id,)))
    save_json(ctx.out_dir, "meta", {"clip": ctx.clip.id, "subject_total": ctx.inputs["toy_subject"].json()["total"]})


def toy_subject_stage(ctx) -> None:
    ids = tuple(c.id for c in ctx.clips)
    CALLS.append(("subject", ids))
    total = sum(o.json()["n"] for o in ctx.clip_inputs["toy_base"])
    save_json(ctx.out_dir, "meta", {"subject": ctx.subject, "clips": list(ids), "total": total})


def toy_base_stage(ctx) -> None:
    save_json(ctx.out_dir, "meta", {"n": len(ctx.clip.id)})


@pytest.fixture()
def toy_recipe(tmp_path, monkeypatch):
    for name, entry, level, requires in (("toy_base", "toy_base_stage", "clip", ()),
                                         ("toy_subject", "toy_subject_stage", "subject", ("toy_base",)),
                                         ("toy_clip", "toy_clip_stage", "clip", ("toy_subject",))):
        monkeypatch.setitem(STAGES, name, StageSpec(name, "test", f"{__name__}:{entry}",
                                                    "data_recipes.recipe:NoConfig", requires=requires,
                                                    level=level))  # type: ignore[arg-type]
    CALLS.clear()
    media = []
    for i in range(3):
        f = tmp_path / f"v{i}.bin"
        f.write_bytes(bytes([i]) * 100)
        media.append(f)
    clips = [Clip("a/train", media[0], "a", "train"), Clip("a/val", media[1], "a", "val"),
             Clip("a/test", media[2], "a", "test"), Clip("b/test", media[2], "b", "test", start=1.0)]
    return Recipe(Cache(tmp_path / "cache"), clips=clips), clips, media


def test_subject_stage_is_computed_once_from_train_clips_and_read_by_every_clip(toy_recipe):
    recipe, clips, _ = toy_recipe
    outs = [recipe.output(c, "toy_clip").json() for c in clips[:3]]
    assert [c for c in CALLS if c[0] == "subject"] == [("subject", ("a/train",))]
    assert {o["subject_total"] for o in outs} == {len("a/train")}
    subject_outputs = {recipe.output(c, "toy_subject").folder for c in clips[:3]}
    assert len(subject_outputs) == 1
    # b has no train clip: its subject stage uses all of its clips, and is its own entry
    assert recipe.output(clips[3], "toy_subject").json()["clips"] == ["b/test"]
    assert recipe.output(clips[3], "toy_subject").folder not in subject_outputs


def test_subject_key_follows_train_content_only(toy_recipe, tmp_path):
    recipe, clips, media = toy_recipe
    before = [recipe.key(c, "toy_clip") for c in clips[:3]]
    subject_before = recipe.key(clips[0], "toy_subject")
    media[2].write_bytes(b"changed test segment")   # the test clip: only its own clip stages move
    fresh = Recipe(Cache(tmp_path / "cache"), clips=clips)
    assert fresh.key(clips[0], "toy_subject") == subject_before
    after = [fresh.key(c, "toy_clip") for c in clips[:3]]
    assert after[:2] == before[:2] and after[2] != before[2]
    media[0].write_bytes(b"changed train segment")  # a train clip: the subject and every clip of it move
    fresh = Recipe(Cache(tmp_path / "cache"), clips=clips)
    assert fresh.key(clips[0], "toy_subject") != subject_before
    assert all(a != b for a, b in zip((fresh.key(c, "toy_clip") for c in clips[:3]), before))


def test_clip_unknown_to_the_recipe_is_its_own_subject(toy_recipe, tmp_path):
    recipe, clips, media = toy_recipe
    stray = Clip("stray", media[1], "a", "test")
    assert recipe.subject_sources(stray) == (stray,)
    assert recipe.output(stray, "toy_subject").json()["clips"] == ["stray"]


def test_subject_stage_timing_is_recorded(toy_recipe):
    recipe, clips, _ = toy_recipe
    timing = json.loads(recipe.output(clips[0], "toy_subject").path("timing.json").read_text())
    assert timing["seconds"] >= 0 and timing["wall_seconds"] >= timing["seconds"] - 1e-9


# --------------------------------------------------------------------------- real media (acceptance)


def _assert_shared(recipe: Recipe, clips) -> None:
    """One identity, camera, plate and frame of reference for every clip of the subject."""
    assert {c.split for c in clips} == {"train", "val", "test"}
    outs = [recipe.output(c, "threedmm") for c in clips]
    for o in outs[1:]:
        np.testing.assert_array_equal(o.array("id"), outs[0].array("id"))
        np.testing.assert_array_equal(o.array("intrinsics"), outs[0].array("intrinsics"))
        assert o.json()["subject"]["identity_key"] == outs[0].json()["subject"]["identity_key"]
    assert all(len(o.array("exp")) == recipe.prepare(c).num_frames for o, c in zip(outs, clips))
    assert all(o.json()["reprojection_error_px"]["mean"] < 2.0 for o in outs)
    # expression still varies per frame (only identity and camera are shared)
    assert float(np.std(outs[0].array("exp"), axis=0).max()) > 0
    segs = [recipe.output(c, "segmentation") for c in clips]
    plates = {s.json()["plate_key"] for s in segs}
    assert len(plates) == 1
    first_plate = segs[0].path("plate.png").read_bytes()
    assert all(s.path("plate.png").read_bytes() == first_plate for s in segs)
    crops = [recipe.output(c, "head_crops") for c in clips]
    modes = {c.json()["mode"] for c in crops}
    assert len(modes) == 1 and all(c.json()["frame_of_reference"] == "subject" for c in crops)
    if modes == {"fixed"}:
        ref = crops[0].array("transforms")[0]
        for c in crops:
            np.testing.assert_allclose(c.array("transforms"), np.broadcast_to(ref, c.array("transforms").shape))
    else:
        sides = {round(float(c.json()["median_side_px"]), 6) for c in crops}
        assert len(sides) == 1


@pytest.mark.shared_data
def test_video_segments_share_identity_camera_plate_and_frame(shared_data, isolated_dirs):
    from data_recipes.datasets import DatasetOptions, load

    ds = load(f"video:{shared_data / 'clips' / 'may_5s.mp4'}", DatasetOptions(test_seconds=1.0))
    recipe = Recipe(Cache(isolated_dirs / "cache"), clips=ds.clips)
    _assert_shared(recipe, list(ds.clips))


@pytest.mark.slow
def test_demo_segments_share_identity_camera_plate_and_frame(isolated_dirs):
    from data_recipes.datasets import load

    ds = load("demo")
    recipe = Recipe(Cache(isolated_dirs / "cache"), clips=ds.clips)
    _assert_shared(recipe, list(ds.clips))


@pytest.mark.shared_data
def test_prepare_debug_overlays_name_the_shared_subject_entries(shared_data, isolated_dirs, tmp_path, capsys):
    from bench.cli import main

    video = shared_data / "clips" / "may_5s.mp4"
    debug = tmp_path / "debug"
    rc = main(["prepare", "--dataset", f"video:{video}", "--test-seconds", "1", "--split", "all",
               "--stages", "segmentation", "--debug-dir", str(debug), "--workers", "1", "--progress", "off"])
    assert rc == 0, capsys.readouterr()
    pngs = sorted(debug.glob("*.png"))
    assert {p.name.split("_f")[0] for p in pngs} == {"may_5s__train", "may_5s__val", "may_5s__test"}
    from data_recipes.datasets import DatasetOptions, load

    ds = load(f"video:{video}", DatasetOptions(test_seconds=1.0))
    recipe = Recipe(Cache(), clips=ds.clips)
    from data_recipes.debug import _subject_caption

    captions = {_subject_caption(recipe.prepare(c), ["segmentation"]) for c in ds.clips}
    assert len(captions) == 1 and "plate" in next(iter(captions)) and "frame" in next(iter(captions))
    import cv2

    img = cv2.imread(str(pngs[0]))
    assert img.shape[0] == 384 + 20  # the panels plus the caption strip
