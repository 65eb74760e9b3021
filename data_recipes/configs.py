"""Typed configs of the preparation stages. Plain dataclasses, cheap to import; defaults = the recipe."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NormaliseConfig:
    """Media normalisation.

    fps: output frame rate (frames are picked from the source by timestamp, never re-encoded);
    sample_rate: output audio rate (mono float32);
    max_av_mismatch_s: audio and video lengths may differ by this much (the audio is then padded with
    silence or trimmed to exactly num_frames * sample_rate / fps samples); more is an error.
    """

    fps: int = 25
    sample_rate: int = 16000
    max_av_mismatch_s: float = 0.5
