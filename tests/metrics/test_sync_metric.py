"""The `lse` metric class: availability from the weights folder, statuses, the tracked protocol."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cache import Cache
from bench.progress import Progress
from metrics.base import MetricContext, Sample
from metrics.sync import tracked
from metrics.sync.metric import LSEConfig, LSEMetric
from tests.metrics.sync_common import decode_clip, place_syncnet, save_like_original, seeded_syncnet


def _context(tmp_path) -> MetricContext:
    return MetricContext(work_dir=tmp_path / "work", cache=Cache(tmp_path / "cache"), progress=Progress.off())


def _sample(frames, audio, protocol="lrs", kind="self") -> Sample:
    return Sample("r", kind, frames, frames if kind == "self" else None, audio, None, protocol)  # type: ignore[arg-type]


def test_unavailable_without_weights_then_available_when_placed(isolated_dirs, shared_data, monkeypatch):
    from bench.cli import list_entries

    a = LSEMetric.availability(LSEConfig())
    assert not a.ok
    assert "syncnet_v2.model" in a.reason and str(isolated_dirs / "weights") in a.reason
    assert "TALKBENCH_WEIGHTS" in a.reason and "robots.ox.ac.uk" in a.reason
    row = next(r for r in list_entries("metrics")["metrics"] if r["name"] == "lse")
    assert row["available"] is False and row["reason"] == a.reason
    frames, audio = decode_clip(shared_data / "clips/vox/00002.mp4", 8)
    metric = LSEMetric(LSEConfig(), _context(isolated_dirs))
    scores = metric.score(_sample(frames, audio))
    assert {s.status for s in scores.values()} == {"unavailable"}
    assert set(scores) == {"LSE-D", "LSE-C", "AV-offset"}

    place_syncnet(seeded_syncnet(0), isolated_dirs / "weights", monkeypatch)
    assert LSEMetric.availability(LSEConfig()).ok
    assert next(r for r in list_entries("metrics")["metrics"] if r["name"] == "lse")["available"]
    scores = metric.score(_sample(frames, audio))
    assert all(s.status == "ok" for s in scores.values())
    assert len(scores["LSE-D"].extra["curve"]) == 31 and scores["LSE-D"].extra["windows"] == 3
    assert scores["LSE-D"].value == pytest.approx(min(scores["LSE-D"].extra["curve"]))
    used = metric.weights_used()
    assert used[0]["origin"] == "official" and len(used[0]["sha256"]) == 64


def test_too_short_clip_says_how_long_it_was(isolated_dirs, shared_data, monkeypatch):
    place_syncnet(seeded_syncnet(0), isolated_dirs / "weights", monkeypatch)
    frames, audio = decode_clip(shared_data / "clips/vox/00002.mp4", 4)
    scores = LSEMetric(LSEConfig(), _context(isolated_dirs)).score(_sample(frames, audio, kind="cross"))
    assert {s.status for s in scores.values()} == {"too_short"}
    assert "4 usable frames" in scores["LSE-C"].reason


def test_a_file_that_is_not_the_official_one_is_unavailable(isolated_dirs):
    """The pinned digest refuses a different network under the official name, with the reason."""
    save_like_original(seeded_syncnet(0), isolated_dirs / "weights" / "syncnet_v2.model")
    a = LSEMetric.availability(LSEConfig())
    assert not a.ok and "sha256" in a.reason and "961e8696" in a.reason


def test_spec_declares_published_values():
    spec = LSEMetric.spec
    assert [(v.name, v.better) for v in spec.values] == [("LSE-D", "lower"), ("LSE-C", "higher"),
                                                         ("AV-offset", "zero")]
    assert spec.needs_audio and not spec.needs_ground_truth and spec.published


# ------------------------------------------------------------------------------------ tracked crops


def test_crop_geometry_follows_run_pipeline():
    """A frame whose pixel values encode their coordinates shows exactly which window was cut."""
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy % 256, xx % 256, (yy // 256) * 16 + (xx // 256)], axis=2).astype(np.uint8)
    s, x, y = 50.0, 200.0, 150.0
    # rows [y - s, y + 1.8 s) = [100, 240), columns [x - 1.4 s, x + 1.4 s) = [130, 270): 140 x 140
    crop = tracked.crop_frame(img, s, x, y, size=140)
    np.testing.assert_array_equal(crop, img[100:240, 130:270])
    # near the border the frame is padded with 110
    edge = tracked.crop_frame(img, s, 10.0, 10.0, size=140)
    assert (edge[:20, :20] == 110).all()
    assert edge[140 - 1, 140 - 1, 0] == (10 + 90 - 1) % 256  # last row is y + 1.8 s - 1


def test_box_smoothing_is_a_13_frame_median_with_zero_padding():
    t = np.arange(30, dtype=float)
    boxes = np.stack([100 + t, 50 + 0 * t, 200 + t, 170 + 0 * t], axis=1)  # 100 wide, 120 high
    boxes[10] = [0, 0, 400, 400]  # one outlier box is voted away by the median
    tr = tracked.crop_track(boxes)
    assert tr.s[10] == pytest.approx(60.0)
    assert tr.x[10] == pytest.approx(161.0)  # median of 154..166 with 160 replaced by 200
    # scipy.signal.medfilt pads with zeros: at frame 0 the median of 6 zeros and 7 values is the smallest value
    assert tr.x[0] == pytest.approx(150.0) and tr.s[0] == pytest.approx(60.0)


def test_short_tracks_keep_their_boxes():
    """With fewer than 7 frames a 13-frame zero-padded median is 0 everywhere (empty crops); short
    clips (which the original never scores) use the largest odd kernel that fits instead."""
    from scipy import signal

    for t in (6, 7, 12):
        boxes = np.tile([[50.0, 40.0, 150.0, 160.0]], (t, 1))
        tr = tracked.crop_track(boxes)
        np.testing.assert_allclose(tr.s, 60.0)
        np.testing.assert_allclose(tr.x, 100.0)
    with pytest.warns(UserWarning, match="zero-padded"):
        assert (signal.medfilt(np.full(6, 60.0), kernel_size=13) == 0).all()  # what the original would do


def test_missing_boxes_are_interpolated_and_no_face_is_an_error():
    b = np.array([[0, 0, 10, 10], [np.nan] * 4, [20, 20, 30, 30], [np.nan] * 4], dtype=float)
    filled, n = tracked.fill_missing_boxes(b)
    assert n == 2
    np.testing.assert_allclose(filled[1], [10, 10, 20, 20])
    np.testing.assert_allclose(filled[3], [20, 20, 30, 30])
    with pytest.raises(tracked.NoFace):
        tracked.fill_missing_boxes(np.full((3, 4), np.nan))


@pytest.mark.slow
def test_tracked_protocol_scores_a_full_frame_clip(isolated_dirs, shared_data, monkeypatch):
    """may_5s.mp4 (512x512 full frames): face found, crops made through the pipeline's codecs."""
    place_syncnet(seeded_syncnet(0), isolated_dirs / "weights", monkeypatch)
    frames, audio = decode_clip(shared_data / "clips/may_5s.mp4", 24)
    metric = LSEMetric(LSEConfig(), _context(isolated_dirs))
    scores = metric.score(_sample(frames, audio, protocol="tracked"))
    extra = scores["LSE-D"].extra
    assert scores["LSE-D"].status == "ok", scores["LSE-D"].reason
    assert extra["protocol"] == "tracked" and extra["frames_without_face"] == 0 and extra["emulate_codecs"]
    cx, cy, s = extra["mean_crop"]
    assert 150 < cx < 360 and 100 < cy < 360 and 40 < s < 200  # a face-sized box inside the frame
    plain = LSEMetric(LSEConfig(emulate_codecs=False), _context(isolated_dirs)).score(
        _sample(frames, audio, protocol="tracked"))
    # the intermediate codecs move the numbers (a little): both paths really differ
    assert plain["LSE-D"].value != scores["LSE-D"].value


def test_tracked_protocol_without_a_face_fails_with_reason(isolated_dirs, monkeypatch):
    place_syncnet(seeded_syncnet(0), isolated_dirs / "weights", monkeypatch)
    frames = np.full((8, 128, 128, 3), 40, np.uint8)
    audio = np.zeros(8 * 640, np.float32)
    scores = LSEMetric(LSEConfig(), _context(isolated_dirs)).score(_sample(frames, audio, protocol="tracked"))
    assert {s.status for s in scores.values()} == {"failed"}
    assert "no face" in scores["LSE-D"].reason
