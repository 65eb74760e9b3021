"""Budgets per part, and method parts: parsing, precedence, validation against a method's parts."""

from __future__ import annotations

import pytest

from bench.method import Budget, MethodSpec, PartSpec


def test_per_part_steps_parse_and_win_over_steps_and_preset():
    b = Budget.parse("standard,steps=9,nerf_head.head=20000,wav2lip.generator=50,minutes=2.5")
    assert b.preset == "standard" and b.steps == 9 and b.minutes == 2.5
    w = b.for_method("wav2lip")
    assert w.resolve_steps(1, 2, 3, part="generator") == 50
    assert w.resolve_steps(1, 2, 3, part="expert") == 9            # steps=N for the others
    assert w.resolve_steps(1, 2, 3, part=("expert", "generator")) == 50  # first override found
    assert b.for_method("nerf_head").steps_for(PartSpec("head", "subject", (5, 6, 7))) == 20000
    assert Budget.parse("full").for_method("x").steps_for(PartSpec("head", "subject", (5, 6, 7))) == 7
    assert b.resolve_steps(1, 2, 3, part="generator") == 9         # unbound: no method, no override
    assert w.describe() == "standard,steps=9,wav2lip.generator=50,minutes=2.5"


@pytest.mark.parametrize("bad", ["wav2lip.generator=x", "generator=5", "steps=-1", "fast"])
def test_bad_budget_parts_are_refused(bad):
    with pytest.raises(ValueError, match="bad budget part"):
        Budget.parse(bad)


def test_fit_parts_order_and_budget_names():
    spec = MethodSpec("m", "", dict, parts=(PartSpec("head", "subject", counters=("torso",)),
                                            PartSpec("motion", "dataset")))
    assert [p.name for p in spec.fit_parts()] == ["motion", "head"]
    assert spec.budget_names() == ("motion", "head", "torso")
    legacy = MethodSpec("w", "", dict, fit_scope="dataset")
    assert [(p.name, p.scope) for p in legacy.fit_parts()] == [("model", "dataset")]
    assert MethodSpec("b", "", dict).fit_parts() == ()
    with pytest.raises(ValueError):
        PartSpec("bad name", "dataset")
    with pytest.raises(ValueError):
        PartSpec("x", "clip")  # type: ignore[arg-type]


def test_runner_refuses_unknown_budget_part(tmp_path, isolated_dirs):
    from bench.config import RunConfig
    from bench.progress import Progress
    from bench.runner import RunError, run

    cfg = RunConfig(dataset="demo", methods=("frozen",), metrics=("fps",), runs_dir=tmp_path / "runs",
                    budget="quick,frozen.head=3", report=False, preview_videos=False)
    with pytest.raises(RunError, match="no part or counter 'head'"):
        run(cfg, progress=Progress.off())
    cfg = RunConfig(dataset="demo", methods=("frozen",), metrics=("fps",), runs_dir=tmp_path / "runs",
                    budget="quick,wav2lip.generator=3", report=False, preview_videos=False)
    with pytest.raises(RunError, match="no method named 'wav2lip'"):
        run(cfg, progress=Progress.off())
