"""Speed of the data-recipe stages on real frames (frames per second = N / mean time).

Run: pytest tests/benchmarks/test_bench_recipes.py --benchmark-only
Numbers and the machine go into docs/BENCHMARKS.md. Each benchmark stores its frame count
in extra_info["frames"]; fps = frames / mean seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

N = 50  # 2 s at 25 fps


@pytest.fixture(scope="module")
def clip_frames(shared_data):
    from data_recipes.media import read_video_frames

    return read_video_frames(shared_data / "clips" / "may_5s.mp4")[:N]   # 512x512


@pytest.fixture(scope="module")
def track(clip_frames):
    from data_recipes.faces import detect

    return detect(clip_frames)


def _run(benchmark, fn, frames, rounds=3):
    benchmark.extra_info["frames"] = frames
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def _recipe(tmp_path):
    from bench.cache import Cache
    from data_recipes.recipe import Recipe

    return Recipe(Cache(tmp_path / f"cache{np.random.randint(1 << 30)}"))


def test_decode_normalised_frames(benchmark, shared_data, tmp_path, isolated_dirs):
    """Streaming decode of the 25 fps frame map (what every consumer of frames pays)."""
    from data_recipes.clip import Clip

    clip = Clip("may", shared_data / "clips" / "may_5s.mp4", subject="may", split="test", end=N / 25)
    prepared = _recipe(tmp_path).prepare(clip)
    prepared.stage("normalise")
    _run(benchmark, lambda: sum(1 for _ in prepared.iter_frames()), N)


def test_normalise_stage(benchmark, shared_data, tmp_path, isolated_dirs):
    from data_recipes.clip import Clip

    clip = Clip("may", shared_data / "clips" / "may_5s.mp4", subject="may", split="test", end=N / 25)
    _run(benchmark, lambda: _recipe(tmp_path).output(clip, "normalise"), N)


@pytest.mark.parametrize("mode", ["video", "image", "hybrid"])
def test_faces(benchmark, clip_frames, mode):
    from data_recipes.faces import detect
    from data_recipes.faces.stage import FacesConfig

    t = _run(benchmark, lambda: detect(clip_frames, FacesConfig(mode=mode)), N)
    assert t.present.all()


def test_head_crops(benchmark, clip_frames, track):
    from data_recipes.crops.head import crop_frames, plan_crops

    def run():
        a, _ = plan_crops(track.boxes, clip_frames.shape[1:3])
        return crop_frames(clip_frames, a, 512)

    _run(benchmark, run, N)


def test_segmentation_stage(benchmark, shared_data, tmp_path, isolated_dirs):
    """Segmentation alone (faces and head crops cached first); includes its GrabCut samples."""
    from data_recipes.clip import Clip

    clip = Clip("may", shared_data / "clips" / "may_5s.mp4", subject="may", split="test", end=N / 25)

    def setup():
        r = _recipe(tmp_path)
        r.output(clip, "head_crops")
        return (r,), {}

    benchmark.extra_info["frames"] = N
    benchmark.pedantic(lambda r: r.output(clip, "segmentation"), setup=setup, rounds=2, iterations=1)


def test_write_lossless(benchmark, clip_frames, tmp_path):
    from data_recipes.media import write_video

    _run(benchmark, lambda: write_video(tmp_path / "x.mkv", clip_frames, lossless=True), N)


def test_write_preview_mp4(benchmark, clip_frames, tmp_path):
    from data_recipes.media import write_video

    _run(benchmark, lambda: write_video(tmp_path / "x.mp4", clip_frames, audio=np.zeros(N * 640, np.float32)), N)


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_all_faces(benchmark, shared_data, tmp_path, isolated_dirs, workers):
    """Two 2 s clips through normalise + faces, serial vs two threads."""
    from data_recipes.clip import Clip
    from data_recipes.prepare import prepare_all

    clips = [Clip(f"c{k}", shared_data / "clips" / name, subject=name, split="test", end=N / 25)
             for k, name in enumerate(["may_5s.mp4", "german_20s.mp4"])]
    benchmark.extra_info["frames"] = 2 * N
    benchmark.pedantic(lambda: prepare_all(_recipe(tmp_path), clips, ["faces"], workers=workers),
                       rounds=2, iterations=1)


def test_segmentation_per_frame(benchmark, clip_frames, track):
    """The per-frame part of segmentation (plate comparison, priors, clean-up), without GrabCut."""
    from data_recipes.crops.head import apply, crop_frames, plan_crops
    from data_recipes.segmentation import segment_frame

    a, _ = plan_crops(track.boxes, clip_frames.shape[1:3])
    crops = crop_frames(clip_frames, a, 512)
    lm = apply(a, track.landmarks478)
    plate = np.median(crops[::5], axis=0).astype(np.uint8)
    known = np.ones((512, 512), bool)
    vote = np.zeros((512, 512), np.float32)
    _run(benchmark, lambda: [segment_frame(c, l, plate, known, vote) for c, l in zip(crops, lm)], N)


def test_segmentation_grabcut_sample(benchmark, clip_frames, track):
    """One GrabCut person mask (192 px, 3 iterations): the stage runs 16 per clip."""
    from data_recipes.crops.head import apply, crop_frame, plan_crops
    from data_recipes.segmentation import grabcut_person, priors_from_landmarks

    a, _ = plan_crops(track.boxes, clip_frames.shape[1:3])
    crop = crop_frame(clip_frames[0], a[0], 512)
    pri = priors_from_landmarks(apply(a[0], track.landmarks478[0]), 512)
    _run(benchmark, lambda: grabcut_person(crop, pri, 192, 3), 1, rounds=5)
