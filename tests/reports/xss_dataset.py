"""A dataset for real runs in report tests: two test clips of the embedded demo video, one of them
named like markup, plus a cross-driven pair between them. Registered by the tests that use it."""

from __future__ import annotations

from data_recipes.clip import Clip, CrossPair, Dataset

XSS_CLIP = "<script>alert(1)</script>"
NAME = "xssdemo"


def load(argument, options) -> Dataset:
    from data_recipes.datasets.demo import demo_video

    video = demo_video()
    clips = (
        Clip("obama/test", video, subject="obama", split="test", start=16.0, end=20.0),
        Clip(XSS_CLIP, video, subject="obama", split="test", start=12.0, end=14.0),
    )
    return Dataset(name=NAME, description="demo video, two test clips, one named like an HTML script tag",
                   clips=clips, pairs=(CrossPair("obama/test", XSS_CLIP),), sync_protocol="tracked",
                   source="embedded demo (see data_recipes/assets/demo/ATTRIBUTION.md)")


def spec():
    from data_recipes.datasets import DatasetSpec

    return DatasetSpec(NAME, "report tests: demo clips with a hostile clip name", "tests.reports.xss_dataset:load")
