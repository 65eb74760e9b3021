"""Videos that are read as streams, not held: lazy, read-only (T, H, W, 3) uint8 frame sequences.

Why: one 1080x1920 RGB frame is 6.2 MB, so a whole clip held at full resolution (the generated
video, its ground truth, a float copy inside a metric) grows with length and resolution without
bound (issue 16 measured 7 GB on a portrait clip). Where the suite used to pass a whole-video array
(`GenerateResult.frames`, `Sample.generated`, `Sample.ground_truth`) it may pass a `Frames`
instead: it has the array's `shape`, `dtype`, `ndim` and `len()`, `v[i]` decodes one frame,
`v[a:b]` is another lazy view, `v.take(indices)` decodes a few frames in one pass, and the frames
come out as a stream: `iter(v)` one frame at a time, `chunks(v, n)` (n, H, W, 3) blocks. Only
`np.asarray(v)` materialises the whole video: code that does so is the part that still grows.

Kinds: `ClipFrames` (a prepared clip's normalised frames, decoded from its source file),
`FileFrames` (a video file, e.g. the lossless generated-video cache), `RepeatFrames` (one frame
shown T times: the frozen baseline). The helpers (`chunks`, `chunk_pairs`, `iter_frames`) take a
plain numpy array too, so code written for both costs nothing on short in-memory clips.
"""

from __future__ import annotations

import operator
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    from data_recipes.recipe import PreparedClip

# Frames per block handed to a chunked consumer: 16 frames of 1080x1920 are 100 MB of uint8 (and a
# metric's float32 working copy a few times that); small enough for any clip, large enough to batch.
CHUNK = 16


class Frames:
    """A lazy, read-only video of `length` frames of (height, width, 3) uint8 RGB.

    Subclasses implement `_frames(start, stop)`, yielding the frames [start, stop) in order (each
    yielded array is read-only for the consumer; copy before modifying)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, length: int, height: int, width: int):
        if length < 0 or height <= 0 or width <= 0:
            raise ValueError(f"a video needs length >= 0 and a positive size, got {length} x {height} x {width}")
        self._length, self._height, self._width = int(length), int(height), int(width)

    def _frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self._length, self._height, self._width, 3)

    @property
    def nbytes(self) -> int:
        """What the whole video would take in memory (it never does here)."""
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._checked(0, self._length)

    def _checked(self, start: int, stop: int) -> Iterator[np.ndarray]:
        if stop <= start:
            return
        n = 0
        for frame in self._frames(start, stop):
            if frame.shape != (self._height, self._width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"{self!r}: frame {start + n} is {frame.dtype} {frame.shape}, expected uint8 "
                                 f"{(self._height, self._width, 3)}")
            yield frame
            n += 1
            if n == stop - start:
                return
        if n != stop - start:
            raise ValueError(f"{self!r}: gave {n} of the frames [{start}, {stop})")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            if step != 1:
                raise IndexError("a lazy video takes contiguous slices only; use take(indices)")
            return FrameRange(self, start, max(stop, start))
        if isinstance(key, tuple):
            raise IndexError("a lazy video is indexed by frame only (v[i] then index the frame)")
        try:
            i = operator.index(key)
        except TypeError:
            return self.take(key)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"frame {key} of a {self._length}-frame video")
        return np.array(next(self._checked(i, i + 1)))

    def take(self, indices: Iterable[int]) -> np.ndarray:
        """The frames at `indices` (any order, repeats allowed) as one array, decoded in one pass
        from the smallest index to the largest (only the wanted frames are kept)."""
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self._length, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= self._length):
            raise IndexError(f"frame indices {idx.min()}..{idx.max()} of a {self._length}-frame video")
        out = np.empty((len(idx), self._height, self._width, 3), np.uint8)
        if not len(idx):
            return out
        lo, hi = int(idx.min()), int(idx.max()) + 1
        wanted = set(idx.tolist())
        for i, frame in enumerate(self._checked(lo, hi), start=lo):
            if i in wanted:
                out[idx == i] = frame
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        # the whole video in memory: what this class exists to avoid; kept so that code not yet
        # converted still works (and is what a memory test would catch)
        out = np.empty(self.shape, np.uint8)
        for i, frame in enumerate(self):
            out[i] = frame
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        """Release what the video owns (a temporary file); reading afterwards fails."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._length} x {self._height} x {self._width})"


class FrameRange(Frames):
    """Frames [start, stop) of another lazy video."""

    def __init__(self, base: Frames, start: int, stop: int):
        super().__init__(stop - start, base.shape[1], base.shape[2])
        self.base, self.start = base, start

    def _frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        return self.base._frames(self.start + start, self.start + stop)


class ClipFrames(Frames):
    """The normalised frames [start, stop) of a prepared clip, decoded from its source on demand."""

    def __init__(self, prepared: "PreparedClip", start: int = 0, stop: int | None = None):
        n = prepared.num_frames
        stop = n if stop is None else min(int(stop), n)
        h, w = prepared.size
        super().__init__(max(stop - start, 0), h, w)
        self.prepared, self.start = prepared, int(start)

    def _frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        return self.prepared.iter_frames(self.start + start, self.start + stop)

    def __repr__(self) -> str:
        return f"ClipFrames({self.prepared.id!r}, {self.start}, {self.start + len(self)})"


class FileFrames(Frames):
    """Every frame of a video file (its first video stream, presentation order), decoded on demand.

    `owned`: a temporary folder holding the file, removed by `close()` or, at the latest, when the
    object is garbage collected (a method's output written outside the cache). `lossless`: the file
    is the bit-exact lossless format of `data_recipes.media.write_video(..., lossless=True)`, so it
    can be copied instead of re-encoded."""

    def __init__(self, path: Path, length: int, height: int, width: int, lossless: bool = False,
                 owned: Path | None = None):
        import weakref

        super().__init__(length, height, width)
        self.path, self.lossless, self.owned = Path(path), bool(lossless), owned
        self._cleanup = weakref.finalize(self, shutil.rmtree, owned, True) if owned is not None else None

    def _frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        from data_recipes.media import iter_video_frames

        for i, frame in enumerate(iter_video_frames(self.path)):
            if i >= stop:
                return
            if i >= start:
                yield frame

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()   # removes the owned folder once (ignore_errors)

    def __repr__(self) -> str:
        return f"FileFrames({str(self.path)!r}, {len(self)} x {self._height} x {self._width})"


class RepeatFrames(Frames):
    """One frame shown `length` times (the same read-only array object each time)."""

    def __init__(self, frame: np.ndarray, length: int):
        frame = np.array(frame, dtype=np.uint8)   # own copy, made read-only below
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"a frame is (H, W, 3), got {frame.shape}")
        super().__init__(length, frame.shape[0], frame.shape[1])
        frame.flags.writeable = False
        self.frame = frame

    def _frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        for _ in range(start, stop):
            yield self.frame


# ------------------------------------------------------------------------------------------ helpers


def is_video(x: Any) -> bool:
    """A (T, H, W, 3) uint8 video: an array or a lazy `Frames`."""
    if isinstance(x, Frames):
        return True
    return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] == 3


def iter_frames(video: "np.ndarray | Frames") -> Iterator[np.ndarray]:
    """The frames one at a time (rows of an array, or decoded)."""
    return iter(video)


def chunks(video: "np.ndarray | Frames", size: int = CHUNK) -> Iterator[np.ndarray]:
    """(n <= size, H, W, 3) blocks in order: views of an array, freshly stacked for a lazy video."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    if isinstance(video, np.ndarray):
        for s in range(0, len(video), size):
            yield video[s:s + size]
        return
    h, w = video.shape[1:3]
    block = np.empty((size, h, w, 3), np.uint8)
    n = 0
    for frame in video:
        block[n] = frame
        n += 1
        if n == size:
            yield block          # the consumer uses a block before asking for the next one
            block = np.empty_like(block)
            n = 0
    if n:
        yield block[:n]


def chunk_pairs(a: "np.ndarray | Frames", b: "np.ndarray | Frames",
                size: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Aligned blocks of two videos of the same length."""
    if len(a) != len(b):
        raise ValueError(f"videos differ in length: {len(a)} vs {len(b)}")
    yield from zip(chunks(a, size), chunks(b, size))


def cyclic(video: "np.ndarray | Frames", count: int) -> Iterator[np.ndarray]:
    """Frames i % T for i in [0, count): the video looped under longer audio, decoded pass by pass."""
    t = len(video)
    if t == 0 and count > 0:
        raise ValueError("cannot loop a video without frames")
    done = 0
    while done < count:
        part = video[: min(t, count - done)]
        for frame in part:
            yield frame
            done += 1


def open_video(path: Path) -> FileFrames:
    """A whole video file as lazy frames: size and frame count from demuxing, frames decoded only when
    read (a count the decoder does not deliver is an error when read, never a short video)."""
    from data_recipes.media import MediaError, probe

    info = probe(Path(path)).video
    if info is None or info.frames == 0:
        raise MediaError(f"{path}: has no video frames")
    return FileFrames(Path(path), info.frames, info.height, info.width)
