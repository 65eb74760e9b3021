"""prepare_all: parallel clips, identical results to serial, resume after a crash, errors reported."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cache import Cache
from data_recipes.clip import Clip
from data_recipes.prepare import prepare_all
from data_recipes.recipe import Recipe


def _clips(video):
    return [Clip(f"obama/{k}", video, subject="obama", split="test", start=float(k), end=float(k) + 0.6)
            for k in range(3)]


def test_parallel_equals_serial_and_resumes(isolated_dirs, demo_video):
    clips = _clips(demo_video)
    serial = Recipe(Cache(isolated_dirs / "a"))
    rep1 = prepare_all(serial, clips, ["faces"], workers=1)
    assert rep1.ok and rep1.counts() == {"computed": 6} and len(rep1) == 0
    parallel = Recipe(Cache(isolated_dirs / "b"))
    rep2 = prepare_all(parallel, clips, ["faces"], workers=2)
    assert rep2.ok and [(r.clip_id, r.stage) for r in rep2.results] == [(r.clip_id, r.stage) for r in rep1.results]
    for c in clips:
        a = serial.output(c, "faces").array("landmarks478")
        b = parallel.output(c, "faces").array("landmarks478")
        np.testing.assert_array_equal(a, b)
    # a second run finds everything in the cache
    rep3 = prepare_all(Recipe(Cache(isolated_dirs / "b")), clips, ["faces"], workers=2)
    assert rep3.counts() == {"cached": 6}


def test_crash_midway_resumes_from_cache(isolated_dirs, demo_video, monkeypatch):
    clips = _clips(demo_video)
    cache = Cache(isolated_dirs / "c")
    import data_recipes.faces.pipeline as pipeline

    real = pipeline.detect_with_report
    calls = {"n": 0}

    def crash_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "detect_with_report", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_all(Recipe(cache), clips, ["faces"], workers=1)
    # no half-written entry: only the finished clip's stages are cached
    r = Recipe(cache)
    assert r.is_cached(clips[0], "faces") and not r.is_cached(clips[1], "faces")
    assert not list((isolated_dirs / "c").rglob(".tmp-*"))
    monkeypatch.setattr(pipeline, "detect_with_report", real)
    rep = prepare_all(r, clips, ["faces"], workers=2)
    status = {(x.clip_id, x.stage): x.status for x in rep.results}
    assert status[("obama/0", "faces")] == "cached" and status[("obama/1", "faces")] == "computed"


def test_failures_are_reported_not_raised(isolated_dirs, demo_video, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    clips = [Clip("bad", bad, subject="x", split="test"), _clips(demo_video)[0]]
    rep = prepare_all(Recipe(Cache(isolated_dirs / "d")), clips, ["faces"], workers=2)
    status = {(x.clip_id, x.stage): x.status for x in rep.results}
    assert status[("bad", "normalise")] == "failed" and status[("bad", "faces")] == "skipped"
    assert status[("obama/0", "faces")] == "computed"
    assert "broken.mp4" in rep.failed()[0].error and not rep.ok
    # as a mapping: the failed clips, as `bench prepare` prints them
    assert list(rep) == ["bad"] and len(rep) == 1 and "obama/0" not in rep
    assert rep["bad"].startswith("normalise: MediaError") and "broken.mp4" in rep["bad"]


def test_debug_overlays_written(isolated_dirs, demo_video, tmp_path):
    import cv2

    from data_recipes.debug import write_overlays

    recipe = Recipe(Cache(isolated_dirs / "e"))
    clip = Clip("obama/dbg", demo_video, subject="obama", split="test", start=2.0, end=3.0)
    paths = write_overlays(recipe.prepare(clip), ["faces", "wav2lip_crops", "head_crops", "segmentation"],
                           tmp_path / "debug", n_frames=3)
    assert [p.name for p in paths] == ["obama__dbg_f00000.png", "obama__dbg_f00012.png", "obama__dbg_f00024.png"]
    img = cv2.imread(str(paths[0]))
    assert img.shape == (384 + 20, 3 * 384, 3)  # three panels and the subject-entries caption strip
    # the landmark colours are drawn: magenta mouth points and green face box exist in the left panel
    left = img[:, :384]
    assert ((left[..., 0] > 200) & (left[..., 1] < 60) & (left[..., 2] > 200)).sum() > 20
    assert ((left[..., 0] < 60) & (left[..., 1] > 200) & (left[..., 2] < 60)).sum() > 20
