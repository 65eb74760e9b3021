"""Run preparation stages for many clips, in parallel, resuming from the cache.

Threads, not processes: the heavy work of every stage here runs in native code that releases the
GIL (PyAV decoding, MediaPipe's TFLite graph, OpenCV warps / GrabCut, numpy, torch), so two threads
use both cores without pickling recipes or loading models twice (the recipe's `ModelPool` lends
them to the workers), and the `Recipe`'s per-(clip, stage) locks already make concurrent requests
for the same entry safe. Each clip's stages run in dependency order in one worker; different clips
run side by side.

Torch's intra-op thread count is process-wide, so it is decided here, once, before the workers
start (the cores split between the workers: 1 each for 2 workers on 2 cores) and restored after
they finish; no stage changes it (`bench.threads`).

Resuming: cache entries are written under a temporary name and renamed when complete, so after a
crash every finished (clip, stage) is reused and only the unfinished ones run again. A failing clip
does not stop the others; its error is reported.

Quality gates (`data_recipes.quality`): after its stages, each clip's input checks (truncated media,
silent audio, frames with a face, face size, length against what the consumers need) are read from
the cached outputs, logged when not ok and kept in `PrepareReport.checks`. A gate failing for the
whole clip (truncated media) makes the clip a failure like a stage error; the others are for the
runner to apply per method (`quality.blocking`).
"""

from __future__ import annotations

import time
import traceback
import contextlib
import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Literal, Mapping, Sequence

from bench.progress import Progress
from data_recipes.clip import Clip
from data_recipes.quality import ClipChecks, Consumer, Gate, MediaProbes, QualityConfig, check_clip
from data_recipes.recipe import Recipe, StageUnavailable, stage_order

Status = Literal["cached", "computed", "unavailable", "failed", "skipped"]


@dataclass(frozen=True)
class StageResult:
    clip_id: str
    stage: str
    status: Status
    seconds: float = 0.0
    error: str = ""


@dataclass
class PrepareReport(Mapping[str, str]):
    """What `prepare_all` did, one row per (clip, stage) in run order.

    As a mapping it holds the clips that failed: clip id -> "<stage>: <error>" (empty when all
    succeeded), which is what `bench prepare` prints; a clip whose quality gate fails for every
    method (truncated media) is one of them ("media: <reason>"). `checks` holds every clip's gates.
    """

    results: list[StageResult] = field(default_factory=list)
    checks: dict[str, ClipChecks] = field(default_factory=dict)
    # (rows and checks seen, failures): rebuilt only when rows or checks were added, so reading the
    # mapping is linear (rebuilt per lookup it was quadratic in the failed clips of a CMLR prepare)
    _memo: tuple[tuple[int, int], dict[str, str]] = field(default=((-1, -1), {}), init=False, repr=False,
                                                         compare=False)

    def _failures(self) -> dict[str, str]:
        seen = (len(self.results), len(self.checks))
        if self._memo[0] == seen:
            return self._memo[1]
        out: dict[str, str] = {}
        for r in self.results:
            if r.status in ("failed", "unavailable") and r.clip_id not in out:
                out[r.clip_id] = f"{r.stage}: {r.error.splitlines()[0] if r.error else r.status}"
        for cid, checks in self.checks.items():
            why = checks.clip_failure()
            if why and cid not in out:
                out[cid] = why
        self._memo = (seen, out)
        return out

    def gate_failures(self) -> dict[str, str]:
        """Clips with any failed gate (whomever it stops): clip id -> the failed gates' lines."""
        return {cid: "; ".join(g.line() for g in c.failed()) for cid, c in self.checks.items() if c.failed()}

    def gate_warnings(self) -> dict[str, str]:
        """Clips with warnings: clip id -> the warning gates' lines."""
        return {cid: "; ".join(g.line() for g in c.gates if g.status == "warning")
                for cid, c in self.checks.items() if any(g.status == "warning" for g in c.gates)}

    def __getitem__(self, clip_id: str) -> str:
        return self._failures()[clip_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._failures())

    def __len__(self) -> int:
        return len(self._failures())

    def failed(self) -> list[StageResult]:
        return [r for r in self.results if r.status in ("failed", "unavailable")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        return not self.failed() and not any(c.clip_failure() for c in self.checks.values())


def _checks(recipe: Recipe, clip: Clip, order: Sequence[str], consumers: Sequence[Consumer],
            quality: QualityConfig, probes: MediaProbes) -> ClipChecks | None:
    """The clip's gates; a bug in a gate must not cost the clip, so it becomes a warning."""
    try:
        return check_clip(recipe, clip, consumers, quality, probes, stages=order)
    except Exception as e:
        return ClipChecks(clip.id, (Gate("checks", "warning", f"input checks could not run: {type(e).__name__}: {e}"),))


def _prepare_clip(recipe: Recipe, clip: Clip, order: Sequence[str], consumers: Sequence[Consumer] = (),
                  quality: QualityConfig | None = None,
                  probes: MediaProbes | None = None) -> tuple[list[StageResult], ClipChecks | None]:
    results = _run_stages(recipe, clip, order)
    checks = _checks(recipe, clip, order, consumers, quality or QualityConfig(), probes or MediaProbes())
    return results, checks


def _run_stages(recipe: Recipe, clip: Clip, order: Sequence[str]) -> list[StageResult]:
    results: list[StageResult] = []
    for i, stage in enumerate(order):
        if recipe.is_cached(clip, stage):
            results.append(StageResult(clip.id, stage, "cached"))
            continue
        t0 = time.perf_counter()
        try:
            recipe.output(clip, stage)
        except StageUnavailable as e:
            results.append(StageResult(clip.id, stage, "unavailable", time.perf_counter() - t0, str(e)))
            results.extend(StageResult(clip.id, s, "skipped", 0.0, f"needs {stage}") for s in order[i + 1:])
            break
        except Exception as e:  # report and carry on with the other clips
            msg = f"{type(e).__name__}: {e}"
            tb = traceback.format_exc(limit=3)
            results.append(StageResult(clip.id, stage, "failed", time.perf_counter() - t0, f"{msg}\n{tb}"))
            results.extend(StageResult(clip.id, s, "skipped", 0.0, f"{stage} failed") for s in order[i + 1:])
            break
        results.append(StageResult(clip.id, stage, "computed", time.perf_counter() - t0))
    return results


def worker_threads(workers: int) -> int:
    """Torch threads each of `workers` prepare workers gets (0 = leave torch's setting: one worker)."""
    if workers <= 1:
        return 0
    import torch

    from bench.threads import per_worker

    return per_worker(workers, torch.get_num_threads())


def prepare_all(recipe: Recipe, clips: Sequence[Clip], stages: Sequence[str], workers: int = 2,
                progress: Progress | None = None, threads: int | None = None,
                consumers: Sequence[Consumer] = (), quality: QualityConfig | None = None) -> PrepareReport:
    """Compute (or find cached) `stages` and everything they require for every clip, then its
    quality gates (`PrepareReport.checks`).

    workers: clips prepared at once (threads; 1 runs in the calling thread). Stage-internal
    progress bars (frames of a clip) appear under the overall "prepare" bar. threads: torch
    intra-op threads while the workers run (None: `worker_threads(workers)`; 0: unchanged), set
    before the first worker starts and restored after the last one ends. consumers: the methods
    and metrics that will read the clips (`quality.consumer`), for the length gate.
    """
    progress = progress or Progress.off()
    order = stage_order(list(stages))
    report = PrepareReport()
    if not clips:
        return report
    workers = min(workers, len(clips))
    threads = worker_threads(workers) if threads is None else threads
    quality = quality or QualityConfig()
    probes = MediaProbes(recipe.cache)
    with _torch_threads(threads), \
            progress.task(f"prepare {len(clips)} clips x {len(order)} stages", len(clips)) as bar:
        if workers <= 1:
            for clip in clips:
                res, checks = _prepare_clip(recipe, clip, order, consumers, quality, probes)
                report.results.extend(res)
                if checks is not None:
                    report.checks[clip.id] = checks
                _log_failures(progress, res, checks)
                bar.advance()
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
                futures = {pool.submit(_prepare_clip, recipe, clip, order, consumers, quality, probes): clip
                           for clip in clips}
                by_clip: dict[str, tuple[list[StageResult], ClipChecks | None]] = {}
                try:
                    for fut in as_completed(futures):
                        res, checks = fut.result()
                        by_clip[futures[fut].id] = (res, checks)
                        _log_failures(progress, res, checks)
                        bar.advance()
                except BaseException:
                    # Ctrl-C / SIGTERM: drop the clips not started (the pool's exit would run them
                    # all first); the ones in flight finish and are cached
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                for clip in clips:  # report in clip order, not completion order
                    res, checks = by_clip[clip.id]
                    report.results.extend(res)
                    if checks is not None:
                        report.checks[clip.id] = checks
    return report


def recorded_precisions(recipe: Recipe, items: Iterable[tuple[Clip, Iterable[str]]]) -> dict[str, list[dict]]:
    """What the model stages ran at, as their outputs recorded it: {stage: [distinct
    {"device", "name", "requested", "reason", "slow"}]}, for the run manifest.

    Read from each cached output's meta.json ("precision" and "device" keys), so outputs computed by
    an earlier run and reused from the cache are described too. Stages without a model record
    nothing and are left out.
    """
    out: dict[str, list[dict]] = {}
    seen: set[tuple[str, str]] = set()
    for clip, stages in items:
        for stage in stage_order(sorted(stages)):
            if not recipe.is_cached(clip, stage):
                continue
            output = recipe.output(clip, stage)
            if (stage, output.key) in seen:  # a subject stage is shared by the subject's clips
                continue
            seen.add((stage, output.key))
            path = output.path("meta.json")
            meta = json.loads(path.read_text()) if path.is_file() else {}
            if not isinstance(meta, dict) or not isinstance(meta.get("precision"), dict):
                continue
            entry = {"device": meta.get("device"), **meta["precision"]}
            if entry not in out.setdefault(stage, []):
                out[stage].append(entry)
    return out


def _torch_threads(n: int):
    if n <= 0:
        return contextlib.nullcontext()
    from bench.threads import torch_threads

    return torch_threads(n)


def _log_failures(progress: Progress, results: Sequence[StageResult], checks: ClipChecks | None = None) -> None:
    for r in results:
        if r.status in ("failed", "unavailable"):
            progress.log(f"{r.clip_id}: stage '{r.stage}' {r.status}: {r.error.splitlines()[0]}")
    for g in checks.not_ok() if checks is not None else ():
        progress.log(f"{checks.clip_id}: input check {g.status}: {g.line()}")
