"""Content-addressed cache: hits, invalidation on config/code/content change, atomic entries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from bench.cache import Cache, content_key
from data_recipes import recipe as recipe_mod
from data_recipes.clip import Clip
from data_recipes.recipe import Recipe, StageSpec, save_array

CALLS: list[tuple[str, int]] = []


@dataclass(frozen=True)
class CountConfig:
    factor: int = 2


def counting_stage(ctx) -> None:
    """Doubles the normalised audio length; records each real computation."""
    CALLS.append((ctx.clip.id, ctx.config.factor))
    save_array(ctx.out_dir, "value", np.array([ctx.prepared.num_frames * ctx.config.factor]))


@pytest.fixture()
def counting(monkeypatch):
    CALLS.clear()
    monkeypatch.setitem(recipe_mod.STAGES, "count", StageSpec(
        "count", "test stage", f"{__name__}:counting_stage", f"{__name__}:CountConfig", requires=("normalise",)))
    return CALLS


def test_key_is_stable_and_order_independent():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_stage_hits_cache_and_recomputes_on_config_change(tmp_path, demo_video, counting):
    cache = Cache(tmp_path)
    clip = Clip("c", demo_video, "s", "test", start=0.0, end=2.0)
    r = Recipe(cache)
    assert r.output(clip, "count").array("value")[0] == 100
    assert Recipe(cache).output(clip, "count").array("value")[0] == 100  # a new process would see the same
    assert counting == [("c", 2)]
    r3 = Recipe(cache, configs={"count": CountConfig(factor=3)})
    assert r3.output(clip, "count").array("value")[0] == 150
    assert counting == [("c", 2), ("c", 3)]


def test_upstream_change_invalidates_downstream(tmp_path, demo_video, counting):
    from data_recipes.configs import NormaliseConfig

    cache = Cache(tmp_path)
    clip = Clip("c", demo_video, "s", "test", start=0.0, end=2.0)
    Recipe(cache).output(clip, "count")
    Recipe(cache, configs={"normalise": NormaliseConfig(max_av_mismatch_s=0.25)}).output(clip, "count")
    assert len(counting) == 2
    # A different segment of the same file is different content.
    Recipe(cache).output(dataclasses.replace(clip, end=1.0), "count")
    assert len(counting) == 3


def test_code_version_bump_invalidates(tmp_path, demo_video, counting, monkeypatch):
    cache = Cache(tmp_path)
    clip = Clip("c", demo_video, "s", "test", start=0.0, end=1.0)
    Recipe(cache).output(clip, "count")
    monkeypatch.setitem(recipe_mod.STAGES, "count", dataclasses.replace(recipe_mod.STAGES["count"], version="2"))
    Recipe(cache).output(clip, "count")
    assert len(counting) == 2


def test_failed_stage_publishes_nothing(tmp_path, demo_video, monkeypatch):
    def broken(ctx):
        (ctx.out_dir / "half.npy").write_bytes(b"partial")
        raise RuntimeError("crash mid-write")

    monkeypatch.setitem(recipe_mod.STAGES, "broken", StageSpec(
        "broken", "test", f"{__name__}:BROKEN", "data_recipes.recipe:NoConfig"))
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "BROKEN", broken, raising=False)
    cache = Cache(tmp_path)
    clip = Clip("c", demo_video, "s", "test", start=0.0, end=1.0)
    with pytest.raises(RuntimeError):
        Recipe(cache).output(clip, "broken")
    assert not Recipe(cache).is_cached(clip, "broken")
    leftovers = list((tmp_path / "stages" / "broken").rglob("*"))
    assert not [p for p in leftovers if p.is_file()]
