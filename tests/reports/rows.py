"""Tiny helpers to write result rows for unit tests (bench.results schema)."""

from __future__ import annotations

import math

from bench.results import ResultRow, extra_json, to_frame

UNITS = {"PSNR": ("psnr", "dB", "higher"), "SSIM": ("ssim", "", "higher"), "LSE-D": ("lse", "", "lower"),
         "LSE-C": ("lse", "", "higher"), "AV-offset": ("lse", "frames", "zero"), "fps": ("fps", "frames/s", "higher"),
         "SyncDist": ("sync_suite", "", "lower")}


def row(method: str, metric: str, value: float = math.nan, *, clip: str = "c0", kind: str = "self",
        status: str = "ok", reason: str = "", hardware: str = "hw1", run_id: str = "r1", audio: str | None = None,
        published: bool | None = None, extra: dict | None = None, dataset: str = "demo",
        variant: str = "") -> ResultRow:
    family, unit, better = UNITS[metric]
    if status != "ok":
        value = math.nan
        reason = reason or "because"
    audio = audio or (clip if kind == "self" else "other")
    rid = clip if kind == "self" else f"{clip} <- {audio}"
    return ResultRow(run_id=run_id, dataset=dataset, split="test", request_id=rid, kind=kind, clip_id=clip,
                     audio_clip=audio, subject="s", method=method, metric=metric, family=family, value=value,
                     status=status, reason=reason, unit=unit, better=better,
                     published=(family != "sync_suite") if published is None else published,
                     n_frames=100, hardware=hardware, extra=extra_json(extra or {}), variant=variant)


def frame(rows):
    return to_frame(rows)
