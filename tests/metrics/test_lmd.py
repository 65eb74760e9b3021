"""LMD: the arithmetic on constructed landmarks, and the metric on real frames through the face stage."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cache import Cache
from bench.progress import Progress
from metrics.base import MetricContext, Sample
from metrics.lmd import FACE, MOUTH, LMDConfig, LMDMetric, face_size_px, landmark_distance


def test_distance_is_scaled_mean_l2_over_points_and_frames():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 200, size=(10, 68, 2))
    pred = gt.copy()
    pred[:, 48:68] += [3.0, 4.0]           # every mouth point 5 px away
    mouth = landmark_distance(pred, gt, MOUTH, scale=2.0)
    face = landmark_distance(pred, gt, FACE, scale=2.0)
    assert mouth.value == pytest.approx(10.0)
    assert face.value == pytest.approx(10.0 * 20 / 68)
    pred[3] = np.nan                        # a frame without a face is skipped, not counted as 0
    r = landmark_distance(pred, gt, MOUTH, scale=1.0)
    assert (r.frames_used, r.frames_skipped) == (9, 1) and r.value == pytest.approx(5.0)


def test_face_size_is_the_median_box_side():
    boxes = np.array([[0, 0, 100, 120], [10, 10, 110, 100], [0, 0, 300, 300], [np.nan] * 4])
    assert face_size_px(boxes) == pytest.approx(120.0)
    with pytest.raises(ValueError):
        face_size_px(np.full((2, 4), np.nan))


@pytest.fixture(scope="module")
def may_clip(shared_data, tmp_path_factory):
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    cache = Cache(tmp_path_factory.mktemp("lmd-cache"))
    clip = Clip("may/0", shared_data / "clips/may_5s.mp4", subject="may", split="test", start=0.0, end=1.2)
    return Recipe(cache).prepare(clip)


def _score(target, generated, tmp_path):
    ctx = MetricContext(work_dir=tmp_path, cache=Cache(tmp_path / "c"), progress=Progress.off())
    gt = target.frames(0, len(generated))
    sample = Sample("r", "self", generated, gt, np.zeros(len(generated) * 640, np.float32), target)
    return LMDMetric(LMDConfig(), ctx).score(sample)


def test_real_frames_score_zero_against_themselves_and_a_shift_by_its_size(may_clip, tmp_path):
    frames = may_clip.frames()
    same = _score(may_clip, frames, tmp_path)
    assert same["LMD-mouth"].status == "ok", same["LMD-mouth"].reason
    assert same["LMD-mouth"].value < 0.05 and same["LMD-face"].value < 0.05
    # the whole picture moved 8 px right: every landmark should move ~8 px, i.e. 8 * 256 / F
    moved = np.ascontiguousarray(np.roll(frames, 8, axis=2))
    got = _score(may_clip, moved, tmp_path)
    f = got["LMD-face"].extra["face_size_px"]
    expected = 8 * 256 / f
    assert got["LMD-face"].value == pytest.approx(expected, rel=0.2)
    assert got["LMD-mouth"].value == pytest.approx(expected, rel=0.2)
    assert got["LMD-mouth"].extra["frames_used"] == len(frames)


def test_cross_driven_samples_are_not_applicable(tmp_path):
    ctx = MetricContext(work_dir=tmp_path, cache=Cache(tmp_path / "c"), progress=Progress.off())
    s = Sample("r", "cross", np.zeros((3, 8, 8, 3), np.uint8), None, np.zeros(1920, np.float32), None)  # type: ignore[arg-type]
    assert {v.status for v in LMDMetric(LMDConfig(), ctx).score(s).values()} == {"not_applicable"}


def test_generated_face_track_is_detected_once_per_sample(may_clip, isolated_dirs, monkeypatch):
    """Face tracking of the generated frames runs once per sample for the metrics that read frames
    (LMD, sync_suite); LSE's tracked protocol tracks the faces of the file it scores (as
    syncnet_python does), which is one more pass, on other pixels (the delivered mp4's)."""
    import data_recipes.faces as faces
    from metrics.sync.metric import LSEConfig, LSEMetric
    from tests.metrics.sync_common import place_syncnet, seeded_syncnet

    calls = []
    real_detect = faces.detect
    monkeypatch.setattr(faces, "detect", lambda *a, **k: calls.append(1) or real_detect(*a, **k))
    place_syncnet(seeded_syncnet(0), isolated_dirs / "weights", monkeypatch)
    generated = may_clip.frames()
    audio = may_clip.audio()[: len(generated) * 640]
    sample = Sample("r", "self", generated, generated, audio, may_clip, "tracked")
    ctx = MetricContext(work_dir=isolated_dirs / "w", cache=Cache(isolated_dirs / "c"), progress=Progress.off())
    lmd = LMDMetric(LMDConfig(), ctx).score(sample)
    assert len(calls) == 1
    LMDMetric(LMDConfig(), ctx).score(sample)          # another metric instance on the same sample: shared
    assert len(calls) == 1
    lse = LSEMetric(LSEConfig(), ctx).score(sample)
    assert lmd["LMD-mouth"].status == "ok" and lse["LSE-D"].status == "ok", (lmd, lse)
    assert len(calls) == 2                             # the scored file's own frames
    # a new sample (other frames) is detected afresh
    LMDMetric(LMDConfig(), ctx).score(Sample("r2", "self", generated, generated, audio, may_clip, "tracked"))
    assert len(calls) == 3
