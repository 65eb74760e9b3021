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
    report/report.html + report/assets/  written by `bench report`

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
