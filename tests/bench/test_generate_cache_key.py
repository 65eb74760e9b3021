"""The generated-video cache is keyed by the method's input stages: a recipe change regenerates."""

from __future__ import annotations

import dataclasses

from bench.config import RunConfig
from bench.progress import Progress
from bench.runner import run


def _entries(cache_root):
    folder = cache_root / "generated" / "frozen"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_stage_version_change_regenerates_but_a_new_run_id_reuses(tmp_path, monkeypatch):
    import data_recipes.recipe as recipe

    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TALKBENCH_WEIGHTS", str(tmp_path / "weights"))
    cfg = dict(dataset="demo", methods=("frozen",), metrics=("psnr",), runs_dir=tmp_path / "runs", report=False,
               preview_videos=False)
    run(RunConfig(**cfg, run_id="a"), progress=Progress.off())
    first = _entries(tmp_path / "cache")
    assert len(first) == 2                                   # the self- and the cross-driven request
    run(RunConfig(**cfg, run_id="b"), progress=Progress.off())
    assert _entries(tmp_path / "cache") == first            # same inputs: read from the cache

    spec = recipe.STAGES["normalise"]
    monkeypatch.setitem(recipe.STAGES, "normalise", dataclasses.replace(spec, version=spec.version + "-changed"))
    run(RunConfig(**cfg, run_id="c"), progress=Progress.off())
    after = _entries(tmp_path / "cache")
    assert len(after) == 4 and set(first) < set(after)     # regenerated under new keys
