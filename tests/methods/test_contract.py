"""The method contract battery: every registered method, a tiny config, a tiny budget, a tiny dataset.

Checked for each: it fits within the budget (part by part, as the runner does), generates self- and
cross-driven videos that keep the frame contract (uint8 RGB T x H x W x 3 at the target's size, one
frame per 25 fps frame of the driving audio, or a few fewer where the published algorithm says so),
is deterministic for a seed, is served from the generated-video cache on a rerun, continues training
from its checkpoint when the budget grows (trainable methods), and is unavailable with a reason when
a dependency or weight is missing. `dummy_plugin` comes in through the `talkbench.methods`
entry-point group like a third-party method.

Adding a method is one line in CONTRACTS (its tiny `--set` overrides and how to make it unavailable).
One prepared cache (a 4 s cut of the embedded demo as a `video:` dataset) serves the whole battery.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bench.cache import Cache
from bench.config import RunConfig, apply_overrides
from bench.method import Budget, GenerateRequest, MethodContext
from bench.progress import Progress


@dataclass(frozen=True)
class Contract:
    name: str
    overrides: dict[str, str] = field(default_factory=dict)   # tiny config, as `--set name.key=value`
    trainable: bool = False
    missing: dict[str, str] | None = None   # overrides that point at a missing dependency/weight
    fewer_frames: int = 0                   # frames the published algorithm may drop at the end
    networks: int = 1                       # networks trained per part (each gets the budget's steps)


CONTRACTS = [
    Contract("reference"),
    Contract("frozen"),
    Contract("wav2lip", {"expert_batch_size": "2", "generator_batch_size": "2", "batch_size": "8",
                         "train_precision": "fp32", "precision": "fp32"}, trainable=True,
             missing={"checkpoint": "/nonexistent/wav2lip_gan.pth"}, fewer_frames=4, networks=2),
    Contract("dummy_plugin", trainable=True, missing={"weights": "/nonexistent/shared.json"}),
    Contract("nerf_head", {"renderer_preset": "tiny", "a2m_size": "tiny", "eval_frames": "1"}, trainable=True,
             missing={"audio2motion_checkpoint": "/nonexistent/a2m_official"}, networks=2),
]
IDS = [c.name for c in CONTRACTS]
TEST_SECONDS = 0.8


@pytest.fixture(scope="session")
def battery(tmp_path_factory, demo_video):
    """Session-wide: a fake entry point for the plugin, one cache, and the tiny dataset."""
    from importlib.metadata import EntryPoint

    import bench.registry as registry
    from data_recipes.media import read_video_frames, write_video

    root = tmp_path_factory.mktemp("contract")
    mp = pytest.MonkeyPatch()
    real = registry.entry_points

    def entry_points(group=None, **kw):
        found = list(real(group=group, **kw)) if group else list(real(**kw))
        if group == registry.METHODS_GROUP:
            found.append(EntryPoint("dummy_plugin", "tests.methods.contract_plugin:DummyPlugin", group))
        return found

    mp.setattr(registry, "entry_points", entry_points)
    mp.setenv("TALKBENCH_CACHE", str(root / "cache"))
    mp.setenv("TALKBENCH_WEIGHTS", str(root / "weights"))
    frames = read_video_frames(demo_video)[:100]
    from data_recipes.media import read_audio

    audio = read_audio(demo_video, 16000)[: 100 * 640]
    video = write_video(root / "tiny.mp4", frames, fps=25, audio=audio)
    yield {"root": root, "video": video}
    mp.undo()


@pytest.fixture(scope="session")
def dataset(battery):
    from data_recipes.datasets import DatasetOptions, load

    return load(f"video:{battery['video']}", DatasetOptions(test_seconds=TEST_SECONDS))


def _resolve(contract: Contract, overrides: dict[str, str] | None = None):
    from bench.registry import method_registry

    cls = method_registry().load(contract.name)
    config = apply_overrides(cls.spec.config(), overrides if overrides is not None else contract.overrides,
                             f"method {contract.name}")
    return cls, config


def _fit_all(cls, config, recipe, dataset, budget: Budget, work: Path):
    """What the runner does, in small: one instance; dataset parts on every subject's train + val clips,
    then subject parts per subject (one subject here). Returns the instance and the reports by part."""
    clips = [recipe.prepare(c) for c in (*dataset.split("train"), *dataset.split("val"))]
    ctx = MethodContext(work_dir=work / "none", cache=Cache(), progress=Progress.off(), device="cpu", seed=0)
    method = cls(config, ctx)
    budget = budget.for_method(cls.spec.name)
    reports = {}
    if not cls.spec.fit_parts():
        reports["none"] = method.fit([], budget)
    for part in cls.spec.fit_parts():
        method.context = dataclasses.replace(ctx, work_dir=work / part.name)
        method.context.work_dir.mkdir(parents=True, exist_ok=True)
        if cls.spec.parts:
            reports[part.name] = method.fit_part(part, clips, budget)
        else:
            reports[part.name] = method.fit(clips, budget)
    return method, reports


def _requests(cls, recipe, dataset):
    test = dataset.split("test")[0]
    out = [GenerateRequest("self", "self", recipe.prepare(test), recipe.prepare(test), seed=3)]
    if cls.spec.cross_driven:
        pair = dataset.pairs[0]
        out.append(GenerateRequest("cross", "cross", recipe.prepare(dataset.clip(pair.video_clip)),
                                   recipe.prepare(dataset.clip(pair.audio_clip)), seed=3))
    return out


@pytest.fixture(scope="session")
def recipe(battery, dataset):
    from data_recipes.recipe import Recipe

    return Recipe(Cache(), clips=dataset.clips)


@pytest.mark.parametrize("contract", CONTRACTS, ids=IDS)
def test_registered_and_available(contract, battery):
    from bench.registry import method_registry

    assert contract.name in method_registry().names()
    cls, config = _resolve(contract)
    assert cls.spec.name == contract.name
    a = cls.availability(config)
    assert a.ok, a.reason
    if contract.trainable:
        assert cls.spec.fit_parts(), "a trainable method declares what it fits"


@pytest.mark.parametrize("contract", CONTRACTS, ids=IDS)
def test_fit_generate_frame_contract_and_determinism(contract, battery, dataset, recipe):
    from data_recipes.frames import Frames

    cls, config = _resolve(contract)
    # the session's work folder: the continue test below starts from this fit instead of refitting
    method, reports = _fit_all(cls, config, recipe, dataset, Budget(steps=1), battery["root"] / "work" / contract.name)
    for name, report in reports.items():   # within the budget: one step per network
        assert report.steps <= contract.networks, (name, report.steps)
    for request in _requests(cls, recipe, dataset):
        result = method.generate(request)
        f = result.frames
        h, w = request.target.size
        assert f.dtype == np.uint8 and f.ndim == 4 and f.shape[1:] == (h, w, 3), f.shape
        assert request.num_frames - contract.fewer_frames <= len(f) <= request.num_frames
        # an array, or a lazy video (data_recipes.frames) for outputs not held in memory (issue 16)
        assert f.flags.c_contiguous if isinstance(f, np.ndarray) else isinstance(f, Frames), type(f)
        assert all(isinstance(v, float) and v >= 0 for v in result.timings.values())
        again = method.generate(request).frames
        np.testing.assert_array_equal(np.asarray(again), np.asarray(f),
                                      err_msg=f"{contract.name}: not deterministic for a seed")
        for video in (f, again):   # a method's temporary output file
            if isinstance(video, Frames):
                video.close()


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.trainable], ids=[c.name for c in CONTRACTS if c.trainable])
def test_larger_budget_continues_from_the_checkpoint(contract, battery, dataset, recipe, tmp_path):
    cls, config = _resolve(contract)
    work = tmp_path / "work"
    fitted = battery["root"] / "work" / contract.name   # from the fit test above; absent when run alone
    if fitted.is_dir():
        shutil.copytree(fitted, work, dirs_exist_ok=True)
    _, first = _fit_all(cls, config, recipe, dataset, Budget(steps=1), work)
    _, more = _fit_all(cls, config, recipe, dataset, Budget(steps=2), work)
    for name in first:
        assert more[name].steps == 2 * first[name].steps > 0, (name, first[name].steps, more[name].steps)
        if more[name].resumed_from:   # methods that say where they continued from must say the truth
            assert sum(more[name].resumed_from.values()) == first[name].steps
    # a straight run to the same budget gives the same weights as the continued one (the plugin's
    # steps are exact; Wav2Lip's continue-vs-straight comparison lives with the shared trainer's tests)
    if contract.name == "dummy_plugin":
        _, straight = _fit_all(cls, config, recipe, dataset, Budget(steps=2), tmp_path / "straight")
        for name in more:
            assert [w.sha256 for w in more[name].weights] == [w.sha256 for w in straight[name].weights]


@pytest.mark.parametrize("contract", CONTRACTS, ids=IDS)
def test_unavailable_with_a_reason(contract, battery):
    if contract.missing is None:
        pytest.skip(f"{contract.name} needs no dependency or weight beyond the suite's own")
    cls, config = _resolve(contract, {**contract.overrides, **contract.missing})
    a = cls.availability(config)
    assert not a.ok and a.reason
    assert any(Path(v).name in a.reason for v in contract.missing.values()), a.reason


@pytest.mark.parametrize("contract", CONTRACTS, ids=IDS)
def test_rerun_is_served_from_the_cache(contract, battery, tmp_path, monkeypatch):
    from bench.results import load_run
    from bench.runner import run

    cls, _ = _resolve(contract)
    calls: list[str] = []
    real = cls.generate

    def counting(self, request):
        calls.append(request.id)
        return real(self, request)

    monkeypatch.setattr(cls, "generate", counting)
    overrides = tuple((f"{contract.name}.{k}", v) for k, v in contract.overrides.items())

    def config(run_id: str) -> RunConfig:
        return RunConfig(dataset=f"video:{battery['video']}", test_seconds=TEST_SECONDS, methods=(contract.name,),
                         metrics=("fps",), budget="steps=1", overrides=overrides, runs_dir=tmp_path / "runs",
                         run_id=run_id, report=False, preview_videos=False)

    first = run(config("first"), progress=Progress.off())
    n = len(calls)
    assert n == (2 if cls.spec.cross_driven else 1)
    second = run(config("second"), progress=Progress.off())
    assert len(calls) == n, "the second run regenerated instead of reading the generated-video cache"
    a, b = load_run(first.run_dir), load_run(second.run_dir)
    assert set(a.status) <= {"ok", "not_applicable"} and len(a) == len(b) == n
    import json

    m = json.loads((first.run_dir / "manifest.json").read_text())
    fits = m["methods"][contract.name]["fits"]
    assert fits and all("steps" in f and "part" in f for f in fits)
    assert {f["part"] for f in fits} == ({p.name for p in cls.spec.fit_parts()} or {""})
