"""Models loaded once per recipe and reused across clips; no thread-count changes while workers run.

The multi-clip prepare uses the real loaders: a HuBERT folder with seeded random weights in the
official layout (as tests/recipes/test_hubert.py builds it) and the bundled MediaPipe landmarker.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bench.cache import Cache
from data_recipes.clip import Clip
from data_recipes.models import ModelPool
from data_recipes.prepare import prepare_all
from data_recipes.recipe import Recipe
from tests.conftest import first_frames
from tests.recipes.test_hubert import _save_folder

# ------------------------------------------------------------------------------------- the pool


def test_shared_model_is_built_once_under_concurrent_first_use():
    pool = ModelPool()
    built = []

    def build():
        time.sleep(0.05)  # long enough for every thread to arrive while the first build runs
        built.append(object())
        return built[-1]

    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.shared(("m", 1), build))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and all(g is built[0] for g in got) and pool.constructions == {"m": 1}
    assert pool.shared(("m", 2), build) is not built[0] and pool.constructions == {"m": 2}


def test_lease_reuses_idle_instances_and_builds_one_per_concurrent_user():
    pool = ModelPool()
    closed = []
    key = ("backend", "cfg")
    build = iter(range(100)).__next__
    with pool.lease(key, build, closed.append) as a:
        with pool.lease(key, build, closed.append) as b:
            assert a != b  # two users at once: two instances
    for _ in range(3):  # later users get the idle ones back
        with pool.lease(key, build, closed.append) as c:
            assert c in (a, b)
    assert pool.constructions == {"backend": 2}
    with pytest.raises(RuntimeError):
        with pool.lease(key, build, closed.append) as broken:
            raise RuntimeError("mid-clip failure")
    assert broken in (a, b) and closed == [broken]  # a failed instance is closed, never lent again
    with pool.lease(key, build, closed.append) as d, pool.lease(key, build, closed.append) as e:
        assert broken not in (d, e)
    assert pool.constructions == {"backend": 3}  # the broken one was replaced
    pool.close()
    assert sorted(closed) == [0, 1, 2]  # every instance closed exactly once


# ------------------------------------------------------------------------- the landmarker, reused


def test_reused_landmarker_gives_the_landmarks_of_a_fresh_one(shared_data):
    """VIDEO-mode tracking state must not leak from one clip into the next (see MediaPipeBackend)."""
    from data_recipes.faces.pipeline import detect_with_report

    a = first_frames(shared_data / "clips" / "may_5s.mp4", 12)
    b = first_frames(shared_data / "clips" / "obama_20s.mp4", 12)
    fresh_a = detect_with_report(a)[0]
    fresh_b = detect_with_report(b)[0]
    pool = ModelPool()
    reused = [detect_with_report(x, models=pool)[0] for x in (b, a, a[:5], b, a)]
    assert pool.constructions == {"face-backend": 1}
    for got, want in zip(reused, (fresh_b, fresh_a, None, fresh_b, fresh_a)):
        if want is not None:
            np.testing.assert_array_equal(got.landmarks478, want.landmarks478)
            np.testing.assert_array_equal(got.blendshapes, want.blendshapes)
    pool.close()


# ------------------------------------------------------------------- a multi-clip, two-worker prepare


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    from data_recipes.audio import hubert as hub

    folder = tmp_path_factory.mktemp("w") / hub.MODEL_FOLDER
    _save_folder(folder, seed=7)
    return folder


@pytest.fixture()
def counted(monkeypatch):
    """Counts every HuBERT load and every MediaPipe landmarker construction, by the real functions."""
    from data_recipes.audio import hubert as hub
    from data_recipes.faces.backends import MediaPipeBackend

    calls = {"hubert": 0, "landmarker": 0}
    real_load, real_create = hub.load_hubert, MediaPipeBackend._create

    def load(folder):
        calls["hubert"] += 1
        return real_load(folder)

    def create(self, mode):
        calls["landmarker"] += 1
        return real_create(self, mode)

    monkeypatch.setattr(hub, "load_hubert", load)
    monkeypatch.setattr(MediaPipeBackend, "_create", create)
    return calls


@pytest.fixture()
def thread_log(monkeypatch):
    """Every torch.set_num_threads call, with whether a prepare worker thread was alive at the time;
    and torch's thread count as each HuBERT forward saw it."""
    import torch

    from data_recipes.audio import hubert as hub

    log = {"set": [], "seen": []}
    real_set, real_features = torch.set_num_threads, hub.hubert_features

    def recording_set(n):
        workers = [t.name for t in threading.enumerate() if t.name.startswith("prepare")]
        log["set"].append((n, threading.current_thread().name, workers))
        real_set(n)

    def features(*a, **k):
        log["seen"].append(torch.get_num_threads())
        return real_features(*a, **k)

    before = torch.get_num_threads()
    real_set(2)  # a known budget to split, whatever the environment set
    monkeypatch.setattr(torch, "set_num_threads", recording_set)
    monkeypatch.setattr(hub, "hubert_features", features)
    yield log
    real_set(before)


def _clips(video):
    # one subject, three segments: the landmarker and HuBERT would be built three times per clip loop
    return [Clip(f"obama/{k}", video, subject="obama", split="test", start=float(k), end=float(k) + 0.6)
            for k in range(3)]


def _recipe(root, folder, workers_tag):
    from data_recipes.audio.hubert import HubertConfig
    from data_recipes.threedmm.fit import FitConfig
    from data_recipes.threedmm.stage import ThreeDMMConfig

    configs = {"hubert": HubertConfig(model_dir=str(folder)),
               "threedmm": ThreeDMMConfig(fit=FitConfig(pose_steps=10, id_steps=10, frame_steps=10))}
    return Recipe(Cache(root / f"cache-{workers_tag}"), configs=configs)


STAGES = ["faces", "hubert", "threedmm"]


def test_models_built_once_and_two_workers_match_one_without_thread_changes(isolated_dirs, demo_video, tiny_hubert,
                                                                      counted, thread_log):
    import torch

    clips = _clips(demo_video)
    serial = _recipe(isolated_dirs, tiny_hubert, "one")
    rep = prepare_all(serial, clips, STAGES, workers=1)
    assert rep.ok, rep.failed()
    # three clips, one HuBERT load and one landmarker (the old code built both once per clip)
    assert counted == {"hubert": 1, "landmarker": 1}
    assert serial.models.constructions == {"hubert": 1, "face-backend": 1}
    meta = serial.output(clips[0], "hubert").json()
    assert meta["device"] == "cpu" and meta["precision"]["name"] == "fp32"
    assert serial.output(clips[0], "threedmm").json()["precision"]["name"] == "fp32"
    assert thread_log["set"] == [] and set(thread_log["seen"]) == {2}  # one worker: torch's count untouched
    counted.update(hubert=0, landmarker=0)
    thread_log["seen"].clear()

    parallel = _recipe(isolated_dirs, tiny_hubert, "two")
    rep = prepare_all(parallel, clips, STAGES, workers=2)
    assert rep.ok, rep.failed()
    # one HuBERT for both workers; at most one landmarker per worker
    assert counted["hubert"] == 1 and 1 <= counted["landmarker"] <= 2
    # the count was split before the workers started (2 cores / 2 workers) and restored after they
    # ended: every change happened with no worker alive, and every forward ran at the split count
    assert [n for n, _, _ in thread_log["set"]] == [1, 2]
    assert all(workers == [] for _, _, workers in thread_log["set"]), thread_log["set"]
    assert set(thread_log["seen"]) == {1} and torch.get_num_threads() == 2
    for c in clips:
        np.testing.assert_array_equal(serial.output(c, "faces").array("landmarks478"),
                                      parallel.output(c, "faces").array("landmarks478"))
        # one thread vs two may sum a matmul in another order: float32 rounding, nothing more
        np.testing.assert_allclose(serial.output(c, "hubert").array("hubert"),
                                   parallel.output(c, "hubert").array("hubert"), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(serial.output(c, "threedmm").array("exp"),
                                   parallel.output(c, "threedmm").array("exp"), rtol=1e-4, atol=1e-4)
