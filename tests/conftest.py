"""Shared fixtures. Tests that need ../shared/data skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TALKBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $TALKBENCH_SHARED_DATA); skips the test when it is not there."""
    if not (SHARED_DATA / "clips").is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set TALKBENCH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture()
def isolated_dirs(tmp_path, monkeypatch) -> Path:
    """Point the suite's cache and weights folders at a temporary folder for this test."""
    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TALKBENCH_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path


def first_frames(path: Path, n: int, step: int = 1):
    """Frames 0, step, 2 step, ... of a video (n of them at most) as uint8 RGB (n, H, W, 3), decoded
    with the suite's own reader and stopped early."""
    import itertools

    import numpy as np

    from data_recipes.media import iter_video_frames

    return np.stack(list(itertools.islice(iter_video_frames(path), 0, n * step, step)))


@pytest.fixture(scope="session")
def demo_video() -> Path:
    from data_recipes.datasets.demo import demo_video

    return demo_video()
