"""glibc malloc settings for the two kinds of work a run does: streaming and training.

Streaming (prepare, generate, score) allocates one block of frames or one metric's float planes at a
time (1-30 MB each). Under glibc's dynamic mmap threshold those blocks soon come from the heap, and the
small long-lived allocations of decoder and face-tracker threads made between them keep the heap from
shrinking: on a 40 s 512x512 request the peak grew by 2.4 MB per scored frame (1.6 GB over 400 frames),
against one batch's size (0.74 GB) with a fixed 4 MB threshold (issue 16, docs/BENCHMARKS.md "Memory").

Training allocates and frees the same activations every step. With the 4 MB threshold each of them is a
fresh mapping of zeroed pages: measured 55 % slower nerf_head steps and 21 % slower Wav2Lip steps (more
than twice the system time). A 32 MB threshold with a 64 MB trim threshold (where glibc's dynamic mode
ends up) costs the same as the dynamic default.

The settings are process-wide and glibc has no way back to its dynamic mode, so the runner names the
setting for each phase: `STREAMING` when a run starts, `training()` around every fit. Elsewhere than
glibc nothing is changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from dataclasses import dataclass
from typing import Iterator

# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3   # setting it also turns the dynamic threshold off


@dataclass(frozen=True)
class MallocSetting:
    mmap_threshold: int    # allocations of at least this many bytes get their own mapping
    trim_threshold: int    # free heap top above this many bytes goes back to the system


STREAMING = MallocSetting(mmap_threshold=4 << 20, trim_threshold=128 << 10)   # 128 KiB: glibc's default trim
TRAINING = MallocSetting(mmap_threshold=32 << 20, trim_threshold=64 << 20)


def _libc_function(name: str):
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def _mallopt():
    return _libc_function("mallopt")


def apply(setting: MallocSetting) -> bool:
    """Set both thresholds; False where there is no glibc mallopt (nothing changed)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(setting.mmap_threshold))
    ok &= mallopt(ctypes.c_int(_M_TRIM_THRESHOLD), ctypes.c_int(setting.trim_threshold))
    return bool(ok)


@contextlib.contextmanager
def training() -> Iterator[None]:
    """`TRAINING` inside the block, `STREAMING` (the runner's setting outside fits) once it ends. On
    the way out the heap the fit freed is returned to the system (`malloc_trim`): under the training
    trim threshold it stays mapped, and streaming blocks would be carved out of it again."""
    apply(TRAINING)
    try:
        yield
    finally:
        apply(STREAMING)
        trim = _libc_function("malloc_trim")
        if trim is not None:
            trim(ctypes.c_size_t(0))
