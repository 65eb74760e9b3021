"""Clips, cross-driving pairs and datasets: what every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# "driving": an audio-only clip that only drives cross-driven requests (never fitted on, never a target)
Split = Literal["train", "val", "test", "driving"]
SyncProtocol = Literal["lrs", "tracked"]


@dataclass(frozen=True)
class Clip:
    """One talking-head clip: a time segment [start, end) of a media file.

    `id` is unique within its dataset and safe to show (it is escaped in reports, never trusted).
    `audio` is a separate audio file when the dataset ships one (CMLR); otherwise the video's track.
    `audio_only`: the clip is a driving audio file with no video (`video` then names the same file as
    `audio`); only audio stages (`recipe.audio_stages`) are prepared for it, and its frame count is
    the number of whole 25 fps frames its audio covers.
    """

    id: str
    video: Path
    subject: str
    split: Split
    audio: Path | None = None
    start: float = 0.0
    end: float | None = None
    audio_only: bool = False


@dataclass(frozen=True)
class CrossPair:
    """A cross-driven request: the identity and frames of `video_clip`, the audio of `audio_clip`."""

    video_clip: str
    audio_clip: str


@dataclass(frozen=True)
class Dataset:
    """A resolved dataset: its clips, cross-driving pairs and the sync-scoring protocol it calls for.

    `sync_protocol` is "lrs" for datasets of face crops (LRS2: whole frame resized to 224) and
    "tracked" for full frames (detect and track the face first).
    """

    name: str
    description: str
    clips: tuple[Clip, ...]
    pairs: tuple[CrossPair, ...] = ()
    sync_protocol: SyncProtocol = "tracked"
    source: str = ""             # attribution / where the media comes from
    notes: tuple[str, ...] = field(default=())

    def split(self, name: str) -> tuple[Clip, ...]:
        return tuple(c for c in self.clips if c.split == name)

    def clip(self, clip_id: str) -> Clip:
        """The clip with this id, in constant time (an index built once: CMLR has 102k clips and a
        run looks up two per cross pair)."""
        try:
            return self._index[clip_id]
        except KeyError:
            raise KeyError(f"no clip {clip_id!r} in dataset {self.name!r}") from None

    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted({c.subject for c in self.clips}))

    def __post_init__(self) -> None:
        index = {c.id: c for c in self.clips}
        if len(index) != len(self.clips):
            from collections import Counter

            dup = sorted(i for i, n in Counter(c.id for c in self.clips).items() if n > 1)
            raise ValueError(f"dataset {self.name!r} has duplicate clip ids: {dup[:5]}")
        object.__setattr__(self, "_index", index)   # frozen: not a field (equality and repr ignore it)
        known = index
        for p in self.pairs:
            for cid in (p.video_clip, p.audio_clip):
                if cid not in known:
                    raise ValueError(f"dataset {self.name!r}: pair refers to unknown clip {cid!r}")


class DatasetError(ValueError):
    """A dataset root or argument is wrong; the message says exactly what is missing."""
