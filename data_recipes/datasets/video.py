"""`video:<path>`: one user's clip split in time into train / val / test.

With T = options.test_seconds and D the clip's duration: test = [D - T, D), val = [D - 2T, D - T),
train = [0, D - 2T). The cross-driven pair drives the test video with the val segment's audio: it is
the same speaker and the same length as the test segment, and it is held out of training, so a
person-specific method cannot have memorised the mouth shapes that go with that audio (driving
with train audio would flatter its sync scores). Clip ids are "<file stem>/<split>".
"""

from __future__ import annotations

from pathlib import Path

from bench.availability import Availability
from data_recipes.clip import Clip, CrossPair, Dataset, DatasetError


def check(argument: str | None) -> Availability:
    if not argument:
        return Availability.no("needs a video file: --dataset video:<path>")
    p = Path(argument).expanduser()
    if not p.is_file():
        return Availability.no(f"video file {p} not found")
    return Availability.yes()


def load(argument: str | None, options) -> Dataset:
    from data_recipes.media import MediaError, probe

    if not argument:
        raise DatasetError("dataset 'video' needs a file: --dataset video:<path to an mp4 with audio>")
    path = Path(argument).expanduser().resolve()
    if not path.is_file():
        raise DatasetError(f"video file {path} not found")
    try:
        info = probe(path)
    except MediaError as e:
        raise DatasetError(f"video file {path} cannot be used: {e}") from e
    if info.video is None:
        raise DatasetError(f"{path} has no video stream")
    if info.audio is None:
        raise DatasetError(f"{path} has no audio track (a talking-head clip needs its speech)")
    duration = info.video.duration
    t = float(options.test_seconds)
    if t <= 0:
        raise DatasetError(f"test_seconds must be positive, got {t}")
    if duration < 3 * t:
        raise DatasetError(
            f"{path} lasts {duration:.2f} s; splitting off {t:g} s test + {t:g} s val needs at least "
            f"{3 * t:g} s so that {t:g} s or more remain for training (use a longer clip or a smaller --test-seconds)")
    stem = path.stem
    subject = options.subjects[0] if options.subjects else stem
    b1, b2 = duration - 2 * t, duration - t
    clips = (
        Clip(f"{stem}/train", path, subject=subject, split="train", start=0.0, end=round(b1, 6)),
        Clip(f"{stem}/val", path, subject=subject, split="val", start=round(b1, 6), end=round(b2, 6)),
        Clip(f"{stem}/test", path, subject=subject, split="test", start=round(b2, 6), end=None),
    )
    return Dataset(
        name="video",
        description=f"{path.name}: {duration:.1f} s, {info.video.width}x{info.video.height}; "
                    f"train [0, {b1:.2f}) s, val [{b1:.2f}, {b2:.2f}) s, test [{b2:.2f}, {duration:.2f}) s",
        clips=clips,
        pairs=(CrossPair(video_clip=f"{stem}/test", audio_clip=f"{stem}/val"),),
        sync_protocol="tracked",
        source=str(path),
        notes=(f"source {info.video.fps:.3g} fps" + (" (variable)" if info.video.variable_frame_rate else "")
               + "; normalised to 25 fps by timestamp",),
    )
