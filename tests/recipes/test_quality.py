"""Quality gates (data_recipes/quality.py): each gate's verdict and reason on measured inputs, the
scopes that decide whom a failure stops, and the gates of real prepared clips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_recipes.quality import (MINIMUMS, ClipChecks, Consumer, Gate, Minimum, QualityConfig, audio_gate, blocking,
                                  face_gates, length_gate, needs_faces, rms_dbfs)

CFG = QualityConfig()


def _tone(db: float, seconds: float = 1.0) -> np.ndarray:
    """A 440 Hz sine whose RMS is `db` dBFS (a sine's RMS is its amplitude / sqrt 2)."""
    t = np.arange(int(16000 * seconds)) / 16000
    return (math.sqrt(2) * 10 ** (db / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_rms_dbfs_of_known_signals():
    assert rms_dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert rms_dbfs(_tone(-20.0)) == pytest.approx(-20.0, abs=0.01)
    assert rms_dbfs(np.zeros(100, np.float32)) == -math.inf


@pytest.mark.parametrize("db, status, words", [(-20.0, "ok", "RMS -20.0 dBFS"), (-49.0, "ok", "RMS -49.0"),
                                               (-51.0, "warning", "near-silent: RMS -51.0 dBFS < -50 dBFS")])
def test_audio_gate_threshold(db, status, words):
    g = audio_gate(_tone(db), CFG)
    assert g.status == status and words in g.reason and g.value == pytest.approx(db, abs=0.05)


def test_digital_silence_is_a_warning_that_says_so():
    g = audio_gate(np.zeros(16000, np.float32), CFG)
    assert g.status == "warning" and "digital silence" in g.reason and g.value is None


def _boxes(n: int, side: float) -> np.ndarray:
    return np.tile(np.array([[10.0, 20.0, 10.0 + side, 20.0 + side]]), (n, 1))


def test_no_face_at_all_fails_for_methods_that_need_faces():
    (g,) = face_gates(np.zeros(40, bool), np.full((40, 4), np.nan), CFG)
    assert g.status == "failed" and g.scope == "faces" and "no face in any of 40 frames" in g.reason
    assert g.stops("wav2lip", needs_faces=True) and not g.stops("frozen", needs_faces=False)


def test_few_faces_and_small_faces_are_warnings_with_numbers():
    detected = np.zeros(100, bool)
    detected[:60] = True
    faces, size = face_gates(detected, _boxes(100, 50.0), CFG)
    assert faces.status == "warning" and "only 60 of 100 frames (60% < 90%)" in faces.reason
    assert size.status == "warning" and "median box side 50 px < 96 px" in size.reason and size.value == 50.0
    faces, size = face_gates(np.ones(100, bool), _boxes(100, 200.0), CFG)
    assert (faces.status, size.status, size.value) == ("ok", "ok", 200.0)
    # the median ignores a few frames with a huge box (a false detection), and the side is (w + h) / 2
    boxes = _boxes(100, 120.0)
    boxes[:10] = [0, 0, 400, 300]
    assert face_gates(np.ones(100, bool), boxes, CFG)[1].value == 120.0


def test_length_gate_per_consumer():
    wav2lip = Consumer("wav2lip", True, MINIMUMS["wav2lip"])
    lse = Consumer("lse", True, MINIMUMS["lse"])
    frozen = Consumer("frozen", False, Minimum())
    g = length_gate(4, 4, "test", [wav2lip, lse, frozen])
    assert g.status == "failed" and g.scope == "consumers" and g.consumers == ("wav2lip", "lse")
    assert "4 frames, 4 with a face" in g.reason and "wav2lip needs >= 5 frames with a face" in g.reason
    assert g.stops("lse", True) and not g.stops("frozen", False)
    g = length_gate(12, 12, "test", [wav2lip, lse])
    assert g.status == "warning" and "lse wants >= 25" in g.reason
    g = length_gate(100, 10, "train", [wav2lip])
    assert g.status == "warning" and "skips training clips with < 16 frames with a face" in g.reason
    assert length_gate(100, 100, "test", [wav2lip, lse]).status == "ok"
    assert length_gate(3, None, "test", [frozen]) is None             # nobody declares a minimum
    # no face at all is the faces gate's failure, not repeated here
    assert length_gate(100, 0, "test", [wav2lip]).status == "ok"


def test_blocking_reads_checks_and_their_manifest_form():
    checks = ClipChecks("c", (Gate("media", "ok", "fine"), Gate("faces", "failed", "no face", 0.0, scope="faces"),
                              Gate("length", "failed", "too short", 3.0, scope="consumers", consumers=("lse",))))
    assert checks.status == "failed" and checks.clip_failure() is None
    assert blocking(checks, "wav2lip", True) == "faces: no face"
    assert blocking(checks, "lse", True) == "faces: no face; length: too short"
    assert blocking(checks, "frozen", False) is None
    stored = checks.to_json()
    assert stored["status"] == "failed" and stored["gates"][0] == {"name": "media", "status": "ok", "reason": "fine"}
    assert blocking(stored, "wav2lip", True) == "faces: no face" and blocking(stored, "frozen", False) is None
    truncated = ClipChecks("t", (Gate("media", "failed", "x.mp4 is truncated", scope="clip"),))
    assert truncated.clip_failure() == "media: x.mp4 is truncated" and blocking(truncated, "frozen", False)
    assert blocking(None, "wav2lip", True) is None


def test_which_stages_need_faces():
    assert needs_faces(("normalise", "wav2lip_crops", "mel")) and needs_faces(("faces",))
    assert not needs_faces(("normalise", "mel", "hubert"))


def test_gates_of_real_prepared_clips(isolated_dirs, demo_video, tmp_path):
    """The demo's face fills every frame and its speech is loud: every gate ok; the same frames with
    the audio scaled to -60 dB warn, with the measured level."""
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.media import read_audio, write_video
    from data_recipes.prepare import prepare_all
    from data_recipes.recipe import Recipe

    from tests.conftest import first_frames

    frames = first_frames(demo_video, 20)
    loud = read_audio(demo_video)[: 20 * 640]
    quiet = tmp_path / "quiet.mp4"
    write_video(quiet, frames, audio=loud * 10 ** (-60 / 20))
    clips = [Clip("demo", demo_video, "obama", "test", start=0.0, end=0.8), Clip("quiet", quiet, "obama", "test")]
    wav2lip = Consumer("wav2lip", True, MINIMUMS["wav2lip"])
    report = prepare_all(Recipe(Cache(isolated_dirs / "cache")), clips, ["faces"], workers=1, consumers=[wav2lip])
    demo = {g.name: g for g in report.checks["demo"].gates}
    assert [demo[n].status for n in ("media", "audio", "faces", "face_size", "length")] == ["ok"] * 5
    assert demo["faces"].value == 1.0 and demo["face_size"].value > 150 and demo["audio"].value > -35
    q = {g.name: g for g in report.checks["quiet"].gates}
    assert q["audio"].status == "warning" and q["audio"].value == pytest.approx(demo["audio"].value - 60, abs=2.0)
    assert report.ok and len(report) == 0 and report.gate_warnings() == {"quiet": q["audio"].line()}


def test_truncated_media_fails_the_clip_in_prepare(isolated_dirs, demo_video, tmp_path, monkeypatch):
    """A faststart mp4 cut short still claims its full length; normalise reads what is there, the
    media gate names the file truncated and the clip fails (for every method)."""
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.prepare import prepare_all
    from data_recipes.recipe import Recipe

    from tests.reliability.media import ffmpeg

    whole = tmp_path / "whole.mp4"
    ffmpeg("-i", str(demo_video), "-t", "4", "-c", "copy", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.7)])
    clip = Clip("cut", cut, "obama", "test", start=0.0, end=1.0)
    report = prepare_all(Recipe(Cache(isolated_dirs / "cache")), [clip], ["normalise"], workers=1)
    assert not report.failed()                   # every stage ran on the readable part
    assert not report.ok and list(report) == ["cut"]
    assert report["cut"].startswith("media: ") and "truncated or partly corrupt" in report["cut"]
    # the verdict is kept by content: a resumed prepare does not demux the file again
    import data_recipes.media as media

    def no_probe(path):
        raise AssertionError("probed again")

    monkeypatch.setattr(media, "probe", no_probe)
    again = prepare_all(Recipe(Cache(isolated_dirs / "cache")), [clip], ["normalise"], workers=1)
    assert again["cut"] == report["cut"]
