"""Fixtures of the reliability tests: small real clips made once per session from the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import media


@pytest.fixture(scope="session")
def reliability_media(tmp_path_factory, demo_video) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reliability-media")
    return {
        "face": media.demo_cut(demo_video, folder / "face.mp4", start=2.0),
        "noface": media.no_face_clip(demo_video, folder / "noface.mp4"),
        "silent": media.silent_clip(demo_video, folder / "silent.mp4"),
        "mp3": media.audio_file(demo_video, folder / "speech.mp3", 10.0, 3.0, 22050, 1),
        "wav44k": media.audio_file(demo_video, folder / "speech 44k+stereo.wav", 14.0, 2.0, 44100, 2),
        "m4a": media.audio_file(demo_video, folder / "speech.m4a", 6.0, 1.0, 48000, 2),
    }
