"""The embedded demo: one real 20 s clip shipped with the package, split in time."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from data_recipes.clip import Clip, CrossPair, Dataset


def demo_video() -> Path:
    return Path(str(resources.files("data_recipes").joinpath("assets/demo/obama_20s.mp4")))


def load(argument: str | None, options) -> Dataset:
    video = demo_video()
    clips = (
        Clip("obama/train", video, subject="obama", split="train", start=0.0, end=12.0),
        Clip("obama/val", video, subject="obama", split="val", start=12.0, end=16.0),
        Clip("obama/test", video, subject="obama", split="test", start=16.0, end=20.0),
    )
    return Dataset(
        name="demo",
        description="20 s frontal address, 450x450, one speaker; train [0,12) s, val [12,16) s, test [16,20) s",
        clips=clips,
        pairs=(CrossPair(video_clip="obama/test", audio_clip="obama/val"),),
        sync_protocol="tracked",
        source="tanshuai0219/EDTalk @ 06a9a96 test_data/uncrop_Obama.mp4 (Apache-2.0); see data_recipes/assets/demo/ATTRIBUTION.md",
    )
