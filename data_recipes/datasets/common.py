"""Helpers shared by the dataset loaders: split lists, limits, missing-file reports, cross pairs."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Sequence

from bench.availability import Availability
from data_recipes.clip import Clip, CrossPair, DatasetError


def read_id_list(path: Path, pattern: re.Pattern[str]) -> list[str]:
    """Ids from a split list, in file order, without duplicates.

    Accepts one id per line ("<id>" or "<id> NF"), or a csv/tsv with the id in any column (a header
    row is skipped because it does not match). An id is the first token on the line that matches
    `pattern`; a file extension after it (".mp4") is dropped. Blank lines and '#' comments are ignored.
    """
    ids: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for token in re.split(r"[,\t ;]+", line):
            m = pattern.fullmatch(token.strip().strip('"').strip("'"))
            if m:
                cid = m.group("id")
                if cid not in seen:
                    seen.add(cid)
                    ids.append(cid)
                break
    return ids


def limit_counts(counts: dict[str, int], limit: int | None) -> dict[str, int]:
    """How many clips to keep per split: `limit` test clips, other splits cut in proportion."""
    if limit is None:
        return dict(counts)
    if limit <= 0:
        raise DatasetError(f"--limit must be positive, got {limit}")
    test = counts.get("test", 0)
    ratio = min(1.0, limit / test) if test else 1.0
    out = {}
    for split, n in counts.items():
        out[split] = min(n, limit) if split == "test" else min(n, max(1, math.ceil(n * ratio)) if n else 0)
    return out


def missing_report(what: str, paths: Sequence[Path], root: Path, show: int = 5) -> str:
    """'N <what> missing under <root>, e.g. a, b, c' for error messages."""
    rel = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths[:show]]
    more = f" (and {len(paths) - show} more)" if len(paths) > show else ""
    return f"{len(paths)} {what} missing under {root}: " + ", ".join(rel) + more


def check_files(clips: Iterable[Clip], root: Path, dataset: str) -> None:
    """Raise DatasetError naming the missing media files of the selected clips."""
    missing_v = [c.video for c in clips if not c.video.is_file()]
    missing_a = [c.audio for c in clips if c.audio is not None and not c.audio.is_file()]
    problems = []
    if missing_v:
        problems.append(missing_report("video files", missing_v, root))
    if missing_a:
        problems.append(missing_report("audio files", missing_a, root))
    if problems:
        raise DatasetError(f"{dataset}: " + "; ".join(problems))


def rotate_pairs(clips: Sequence[Clip]) -> tuple[CrossPair, ...]:
    """Cross pairs for datasets without an official list: clip i's video with the audio of clip
    (i + n // 2) mod n, in list order (deterministic; a different sentence for every n >= 2)."""
    n = len(clips)
    if n < 2:
        return ()
    return tuple(CrossPair(video_clip=clips[i].id, audio_clip=clips[(i + n // 2) % n].id) for i in range(n))


def root_availability(argument: str | None, required: Sequence[str], dataset: str) -> Availability:
    """Cheap layout check for `bench list`: the root and its required entries exist."""
    if not argument:
        return Availability.no(f"needs a root folder: --dataset {dataset}:<root>")
    root = Path(argument).expanduser()
    if not root.is_dir():
        return Availability.no(f"{dataset} root {root} is not a folder")
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        return Availability.no(f"{dataset} root {root} lacks " + ", ".join(missing))
    return Availability.yes()
