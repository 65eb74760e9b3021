"""Typed configs: budgets, --set overrides converted by field type, run identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.config import ConfigError, RunConfig, apply_overrides, split_overrides
from bench.method import Budget


@dataclass(frozen=True)
class Opts:
    checkpoint: Path | None = None
    batch_size: int = 128
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    smooth: bool = True
    scale: float = 1.0


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(Opts(), {"checkpoint": "/w/wav2lip.pth", "batch_size": "16", "pads": "0,20,0,0",
                                   "smooth": "false", "scale": "0.5"}, "method x")
    assert cfg == Opts(Path("/w/wav2lip.pth"), 16, (0, 20, 0, 0), False, 0.5)
    assert apply_overrides(Opts(checkpoint=Path("a")), {"checkpoint": "none"}, "m").checkpoint is None


@pytest.mark.parametrize("key,value,match", [
    ("batch_sise", "3", "did you mean 'batch_size'"),
    ("batch_size", "many", "not an integer"),
    ("pads", "1,2", "expected 4"),
    ("smooth", "perhaps", "not a boolean"),
])
def test_bad_overrides_say_what_is_wrong(key, value, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Opts(), {key: value}, "method x")


def test_split_overrides_requires_owner_and_key():
    assert split_overrides((("wav2lip.batch_size", "8"), ("lse.vshift", "15"))) == {
        "wav2lip": {"batch_size": "8"}, "lse": {"vshift": "15"}}
    with pytest.raises(ConfigError):
        split_overrides((("batch_size", "8"),))


def test_budget_parse_and_resolve():
    b = Budget.parse("standard,minutes=30")
    assert (b.preset, b.steps, b.minutes) == ("standard", None, 30.0)
    assert b.resolve_steps(quick=10, standard=100, full=1000) == 100
    assert Budget.parse("steps=7").resolve_steps(1, 2, 3) == 7
    assert Budget.parse("full").describe() == "full"
    with pytest.raises(ValueError, match="bad budget"):
        Budget.parse("forever")


def test_run_identity_ignores_where_files_go_but_not_what_is_computed():
    a = RunConfig(runs_dir=Path("/x"), workers=1, report=False)
    b = RunConfig(runs_dir=Path("/y"), workers=2)
    assert a.identity() == b.identity()
    assert RunConfig(budget="full").identity() != a.identity()
    assert RunConfig(overrides=(("frozen.x", "1"),)).identity() != a.identity()
