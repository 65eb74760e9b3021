"""Where things live inside a run folder `runs/<run-id>/`. The runner writes it; reports/ reads it.

    manifest.json                        see bench.manifest (config, hardware, versions, hashes, phases)
    results.parquet, results.csv         see bench.results (one row per clip x method x metric value)
    parts/<method>/<request_key>.parquet rows of one (method, request), written as soon as scored
    samples/<method>/<request_key>/      what reports show for one generated video:
        sample.json                      {"request_id", "kind", "clip_id", "audio_clip", "method",
                                          "frame_indices": [...], "files": [...png], "video": "video.mp4"
                                          or null, "mouth_boxes": {frame index: [x1, y1, x2, y2]}}
        frame_<index>.png                full frames at `frame_indices` (same indices for every method)
        video.mp4                        browser-playable h264/aac preview with the driving audio
    samples/ground_truth/<request_key>/  the same for the real video of self-driven requests
        (strips, preview and sample.json only for the requests the report shows: the first
        `--samples` (default 4) in the report's order, self-driven first with at least one
        cross-driven, over the whole run's requests, plus any request with a failed or degenerate
        result; every other request keeps only delivered.mp4, the file LSE scored)
    report/report.html + report/assets/  written by `bench report`
    cache-refs.gz                        the cache entries the run used ("namespace<TAB>key" lines,
                                         gzip members appended per phase): what `bench cache --prune`
                                         keeps
    .lock                                held by the `bench run` writing the folder (bench.locks);
                                         gone when it ends
Shards (`bench run --shard i/N`) write `runs/<run-id>.shard-<i>-of-<N>/` with this same layout;
`bench merge` combines them into `runs/<run-id>/` (bench.shard).

`request_key` is a file-safe digest of the request id (ids are user data: clip names may hold anything).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GROUND_TRUTH = "ground_truth"


def request_key(request_id: str) -> str:
    return hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def results_parquet(self) -> Path:
        return self.root / "results.parquet"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    def part(self, method: str, request_id: str) -> Path:
        return self.root / "parts" / method / f"{request_key(request_id)}.parquet"

    def samples(self, method: str, request_id: str) -> Path:
        return self.root / "samples" / method / request_key(request_id)

    def sample_dirs(self) -> list[Path]:
        return sorted(p.parent for p in (self.root / "samples").glob("*/*/sample.json"))

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def cache_refs(self) -> Path:
        return self.root / "cache-refs.gz"


def sampled_requests(requests: list[tuple[str, str]], n: int | None) -> set[str]:
    """The request ids whose strips and previews the runner writes: what `reports.media.
    choose_requests` shows for `n` (max_requests): self-driven first in sorted order, at least one
    cross-driven (a quarter of n), filled up with more cross-driven ones. requests: (id, kind) of the
    whole run (every shard computes the same set); n None: every request."""
    if n is None:
        return {rid for rid, _ in requests}
    selfs = sorted({rid for rid, kind in requests if kind == "self"})
    cross = sorted({rid for rid, kind in requests if kind != "self"})
    n_cross = min(len(cross), max(1, n // 4)) if cross else 0
    chosen = selfs[: max(n - n_cross, 0)] + cross[:n_cross]
    if len(chosen) < n:
        chosen += cross[n_cross:][: n - len(chosen)]
    return set(chosen)
