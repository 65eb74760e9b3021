"""Lazy videos (`data_recipes.frames`) and the streaming writer: the same frames as the arrays they
replace, read in bounded blocks (issue 16)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from bench.cache import Cache
from data_recipes.clip import Clip
from data_recipes.frames import ClipFrames, FileFrames, Frames, RepeatFrames, chunk_pairs, chunks, cyclic, is_video
from data_recipes.media import VideoWriter, read_video_frames, write_video
from data_recipes.recipe import Recipe


def _noise(n: int, h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_file_frames_read_like_the_array(tmp_path):
    frames = _noise(11)
    path = write_video(tmp_path / "v.mkv", frames, lossless=True)
    v = FileFrames(path, 11, 24, 40, lossless=True)
    assert v.shape == (11, 24, 40, 3) and len(v) == 11 and v.dtype == np.uint8 and is_video(v)
    np.testing.assert_array_equal(np.asarray(v), frames)
    np.testing.assert_array_equal(v[3], frames[3])
    np.testing.assert_array_equal(v[-1], frames[10])
    part = v[2:7]
    assert isinstance(part, Frames) and part.shape == (5, 24, 40, 3)
    np.testing.assert_array_equal(np.asarray(part), frames[2:7])
    np.testing.assert_array_equal(np.asarray(part[1:3]), frames[3:5])
    np.testing.assert_array_equal(v.take([9, 0, 9, 4]), frames[[9, 0, 9, 4]])
    with pytest.raises(IndexError):
        v[11]
    with pytest.raises(IndexError):
        v[::2]
    # a file shorter than it claims is an error, not silently fewer frames
    with pytest.raises(ValueError, match="gave 11 of the frames"):
        np.asarray(FileFrames(path, 12, 24, 40))


def test_chunks_of_lazy_and_array_videos_agree(tmp_path):
    frames = _noise(10, seed=1)
    v = FileFrames(write_video(tmp_path / "v.mkv", frames, lossless=True), 10, 24, 40)
    lazy = list(chunks(v, 4))
    eager = list(chunks(frames, 4))
    assert [len(c) for c in lazy] == [len(c) for c in eager] == [4, 4, 2]
    for a, b in zip(lazy, eager):
        np.testing.assert_array_equal(a, b)
    for a, b in chunk_pairs(v, frames, 3):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="differ in length"):
        list(chunk_pairs(v, frames[:9]))


def test_repeat_and_cyclic():
    frame = _noise(1)[0]
    r = RepeatFrames(frame, 5)
    assert r.shape == (5, 24, 40, 3)
    got = list(r)
    assert len(got) == 5 and all(g is got[0] for g in got) and not got[0].flags.writeable
    np.testing.assert_array_equal(r[4], frame)
    frames = _noise(3, seed=2)
    looped = np.stack(list(cyclic(frames, 7)))
    np.testing.assert_array_equal(looped, frames[[0, 1, 2, 0, 1, 2, 0]])


def test_clip_frames_equal_the_prepared_clip_and_stream(isolated_dirs, demo_video):
    recipe = Recipe(Cache(isolated_dirs / "cache"))
    prepared = recipe.prepare(Clip("d", demo_video, subject="s", split="test", start=0.0, end=4.0))
    v = ClipFrames(prepared, 10, 60)
    assert v.shape == (50,) + prepared.size + (3,)
    np.testing.assert_array_equal(np.asarray(v), prepared.frames(10, 60))
    np.testing.assert_array_equal(v.take([49, 0]), prepared.frames(10, 60)[[49, 0]])
    frame_bytes = int(np.prod(v.shape[1:]))
    tracemalloc.start()
    n = 0
    for block in chunks(v, 5):
        n += len(block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 50
    assert peak < 15 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"   # vs 50 if held whole


def test_video_writer_streams_and_leaves_nothing_on_error(tmp_path):
    frames = _noise(6, seed=3)
    with VideoWriter(tmp_path / "w.mkv", lossless=True) as w:
        for f in frames:
            w.write(f)
    assert w.count == 6
    np.testing.assert_array_equal(read_video_frames(tmp_path / "w.mkv"), frames)
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "x.mkv", lossless=True) as w:
            w.write(frames[0])
            raise RuntimeError("boom")
    assert not (tmp_path / "x.mkv").exists() and not list(tmp_path.glob(".x*"))
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "y.mkv", lossless=True):
            pass
    assert not list(tmp_path.glob("*y*"))


def test_owned_file_frames_close_removes_the_folder(tmp_path):
    folder = tmp_path / "owned"
    folder.mkdir()
    path = write_video(folder / "v.mkv", _noise(2), lossless=True)
    v = FileFrames(path, 2, 24, 40, lossless=True, owned=folder)
    assert len(list(v)) == 2
    v.close()
    assert not folder.exists()


def test_owned_folder_goes_with_the_object(tmp_path):
    import gc

    folder = tmp_path / "gone"
    folder.mkdir()
    path = write_video(folder / "v.mkv", _noise(2), lossless=True)
    v = FileFrames(path, 2, 24, 40, lossless=True, owned=folder)
    del v
    gc.collect()
    assert not folder.exists()
