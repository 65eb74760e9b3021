"""bench.malloc: the streaming setting returns freed frame blocks to the system, the training setting
does not map every activation afresh, and the runner trains under the one and streams under the other."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from bench import malloc
from bench.method import FitReport, GenerateResult, Method, MethodSpec, PartSpec

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")

# In a fresh interpreter: how many private anonymous mappings of a 6 MB array's size exist while the
# array lives, under each setting. glibc serves an allocation above the mmap threshold with a mapping
# of its own (size rounded up to a page, plus the chunk header), and the heap otherwise.
_PROBE = """
import sys
import numpy as np
from bench import malloc

def mapped(nbytes):
    n = 0
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if nbytes <= hi - lo <= nbytes + (1 << 16) and len(line.split()) == 5:
            n += 1
    return n

nbytes = 6 << 20
for name in sys.argv[1:]:
    if name == "STREAMING":   # as the runner returns from a fit: streaming setting, freed heap trimmed
        with malloc.training():
            pass
    else:
        malloc.apply(getattr(malloc, name))
    before = mapped(nbytes)
    a = np.ones(nbytes, dtype=np.uint8)
    during = mapped(nbytes)
    del a
    print(name, during - before, mapped(nbytes) - before)
"""


@glibc
def test_streaming_maps_large_blocks_and_training_keeps_them_on_the_heap():
    out = subprocess.run([sys.executable, "-c", _PROBE, "STREAMING", "TRAINING", "STREAMING"], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    rows = [line.split() for line in out if line]
    assert rows[0] == ["STREAMING", "1", "0"]   # its own mapping, unmapped when freed
    assert rows[1] == ["TRAINING", "0", "0"]    # from the heap (no fresh zeroed pages per step)
    assert rows[2] == ["STREAMING", "1", "0"]   # and back after a fit (its freed heap is not reused)


@glibc
def test_apply_sets_both_glibc_thresholds(monkeypatch):
    calls = []
    monkeypatch.setattr(malloc, "_mallopt", lambda: lambda p, v: calls.append((p.value, v.value)) or 1)
    assert malloc.apply(malloc.TRAINING) is True
    assert calls == [(-3, 32 << 20), (-1, 64 << 20)]
    calls.clear()
    with pytest.raises(RuntimeError):
        with malloc.training():
            raise RuntimeError("a fit fails")
    # the streaming setting is back even when the fit raised
    assert calls == [(-3, 32 << 20), (-1, 64 << 20), (-3, 4 << 20), (-1, 128 << 10)]


def test_no_mallopt_changes_nothing(monkeypatch):
    monkeypatch.setattr(malloc, "_mallopt", lambda: None)
    assert malloc.apply(malloc.STREAMING) is False


# ------------------------------------------------------------------------------------ the runner

_SEEN: dict[str, list[str]] = {}


@dataclass(frozen=True)
class NoOptions:
    pass


class Phases(Method):
    """Records the malloc setting in force while it trains and while it generates."""

    spec = MethodSpec(name="phases", description="test method", config=NoOptions, kind="2d", stages=("normalise",),
                      parts=(PartSpec("model", "dataset"),))

    def fit_part(self, part, clips, budget):
        _SEEN.setdefault("fit", []).append(_SEEN["current"][-1])
        return FitReport()

    def generate(self, request):
        _SEEN.setdefault("generate", []).append(_SEEN["current"][-1])
        return GenerateResult(request.target.frames(0, min(request.num_frames, request.target.num_frames)),
                              timings={"model": 0.1})


def test_runner_trains_under_training_and_streams_under_streaming(isolated_dirs, monkeypatch):
    import methods
    from bench.config import RunConfig
    from bench.progress import Progress
    from bench.runner import run

    names = {malloc.STREAMING: "streaming", malloc.TRAINING: "training"}
    _SEEN.clear()
    _SEEN["current"] = ["default"]
    monkeypatch.setattr(malloc, "apply", lambda s: _SEEN["current"].append(names[s]) or True)
    monkeypatch.setitem(methods.BUILTIN_METHODS, "phases", f"{__name__}:Phases")
    cfg = RunConfig(dataset="demo", methods=("phases",), metrics=("psnr",), runs_dir=isolated_dirs / "runs",
                    report=False, preview_videos=False, device="cpu")
    outcome = run(cfg, progress=Progress.off())
    assert outcome.results is not None and len(outcome.results)
    assert _SEEN["fit"] == ["training"]
    assert _SEEN["generate"] and set(_SEEN["generate"]) == {"streaming"}
    assert _SEEN["current"][-1] == "streaming"
