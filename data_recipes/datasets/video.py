"""`video:<path>`: one user's clip split in time into train / val / test.

The split is counted in whole 25 fps frames, so every boundary is a multiple of 0.04 s and no frame
is lost or shared between segments. With N frames in the clip and k frames per held-out segment:
test = the last k frames, val = the k frames before them, train = the rest.

k: `--test-seconds S` gives k = round(25 S) (a value that is not a multiple of 0.04 s is rounded to
the nearest frame, with a note). By default ("auto") k follows AD-NeRF / ER-NeRF's 10:1 time split,
k = N // 11, clamped to [1 s, 4 s]: an 8 s clip holds out 1 s twice, a 44 s or longer clip 4 s
twice (as the earlier fixed default did). Each held-out segment needs at least MIN_HELD_OUT_FRAMES
(half a second: the SyncNet window plus room to shift it) and training at least MIN_TRAIN_FRAMES;
shorter clips are refused with the numbers.

The cross-driven pair drives the test video with the val segment's audio: it is the same speaker and
the same length as the test segment, and it is held out of training, so a person-specific method
cannot have memorised the mouth shapes that go with that audio (driving with train audio would
flatter its sync scores). Clip ids are "<file stem>/<split>".

Driving audio files: `video:<clip>+<audio>[+<audio>...]` adds one cross-driven request per audio
file (wav, mp3, m4a, flac, ...: anything FFmpeg decodes, any rate or channel count; normalised to
16 kHz mono like every clip), each driving the test segment. Each file becomes an audio-only clip
"<file stem>/audio:<audio file name>" in the split "driving": never trained on, never a target; its
length is the whole 25 fps frames it covers (methods loop the test video when the audio is longer).
The argument is split at "+" only where the part before names an existing file, so a path that
itself contains "+" still works; a missing audio file is named in the error.
"""

from __future__ import annotations

from pathlib import Path

from bench.availability import Availability
from data_recipes.clip import Clip, CrossPair, Dataset, DatasetError

FPS = 25
MIN_HELD_OUT_FRAMES = 13     # > half a second
MIN_TRAIN_FRAMES = 50        # 2 s
AUTO_MIN_FRAMES, AUTO_MAX_FRAMES = 25, 100   # auto held-out length: 1 s to 4 s


def held_out_frames(total_frames: int, test_seconds: float | None) -> tuple[int, str]:
    """Frames per held-out segment (val and test) and a note on how they were chosen."""
    if test_seconds is None:
        k = min(max(total_frames // 11, AUTO_MIN_FRAMES), AUTO_MAX_FRAMES)
        return k, f"auto split: {k} frames ({k / FPS:g} s) each for val and test (1/11 of the clip, 1-4 s)"
    if test_seconds <= 0:
        raise DatasetError(f"--test-seconds must be positive, got {test_seconds:g}")
    k = int(round(test_seconds * FPS))
    note = f"--test-seconds {test_seconds:g}: {k} frames ({k / FPS:g} s) each for val and test"
    if abs(k / FPS - test_seconds) > 1e-6:
        note += f" (rounded to whole 25 fps frames from {test_seconds:g} s)"
    return k, note


def split_frames(total_frames: int, test_seconds: float | None, name: str) -> tuple[int, int, str]:
    """(train frames, held-out frames per segment, note); refuses splits too short to be useful."""
    k, note = held_out_frames(total_frames, test_seconds)
    if k < MIN_HELD_OUT_FRAMES:
        raise DatasetError(
            f"--test-seconds {test_seconds:g} gives {k} frames per held-out segment; at least "
            f"{MIN_HELD_OUT_FRAMES} frames ({MIN_HELD_OUT_FRAMES / FPS:g} s) are needed")
    train = total_frames - 2 * k
    if train < MIN_TRAIN_FRAMES:
        need = (2 * k + MIN_TRAIN_FRAMES) / FPS
        raise DatasetError(
            f"{name} lasts {total_frames / FPS:.2f} s ({total_frames} frames); holding out {k / FPS:g} s for "
            f"val and {k / FPS:g} s for test needs at least {need:g} s so that {MIN_TRAIN_FRAMES / FPS:g} s remain "
            "for training (use a longer clip" + (" or a smaller --test-seconds)" if test_seconds else ")"))
    return train, k, note


MIN_DRIVING_FRAMES = MIN_HELD_OUT_FRAMES   # a driving audio file must be scorable like a held-out segment


def split_argument(argument: str) -> tuple[Path, tuple[Path, ...]]:
    """`<video>[+<audio>...]` -> (video, driving audio files), splitting at a "+" only where the text
    before it (since the last split) names an existing file. Raises DatasetError naming what is
    missing."""
    whole = Path(argument).expanduser()
    if whole.is_file() or "+" not in argument:
        return whole, ()
    parts = argument.split("+")
    found: list[Path] = []
    i = 0
    while i < len(parts):
        for j in range(i + 1, len(parts) + 1):
            candidate = Path("+".join(parts[i:j])).expanduser()
            if candidate.is_file():
                found.append(candidate)
                i = j
                break
        else:
            what = "video file" if not found else "driving audio file"
            raise DatasetError(f"{what} {Path(parts[i]).expanduser()} not found "
                               "(--dataset video:<clip>[+<audio file>...])")
    return found[0], tuple(found[1:])


def check(argument: str | None) -> Availability:
    if not argument:
        return Availability.no("needs a video file: --dataset video:<path>")
    try:
        video, _ = split_argument(argument)
    except DatasetError as e:
        return Availability.no(str(e))
    if not video.is_file():
        return Availability.no(f"video file {video} not found")
    return Availability.yes()


def driving_clips(audio_files: tuple[Path, ...], stem: str) -> tuple[Clip, ...]:
    """One audio-only clip per driving audio file; checks each has a decodable audio stream and
    lasts at least MIN_DRIVING_FRAMES frames (when the container says how long)."""
    from data_recipes.media import MediaError, probe

    clips: list[Clip] = []
    names: set[str] = set()
    for path in audio_files:
        path = path.resolve()
        try:
            info = probe(path)
        except MediaError as e:
            raise DatasetError(f"driving audio file {path} cannot be used: {e}") from e
        if info.audio is None:
            raise DatasetError(f"driving audio file {path} has no audio stream")
        if info.audio.duration is not None and info.audio.duration * FPS < MIN_DRIVING_FRAMES:
            raise DatasetError(f"driving audio file {path} lasts {info.audio.duration:.2f} s; at least "
                               f"{MIN_DRIVING_FRAMES / FPS:g} s ({MIN_DRIVING_FRAMES} frames) are needed")
        name = path.name if path.name not in names else f"{path.name}#{len(clips) + 1}"
        names.add(name)
        clips.append(Clip(f"{stem}/audio:{name}", path, subject=f"driving:{name}", split="driving", audio=path,
                          audio_only=True))
    return tuple(clips)


def load(argument: str | None, options) -> Dataset:
    from data_recipes.media import MediaError, probe

    if not argument:
        raise DatasetError("dataset 'video' needs a file: --dataset video:<path to an mp4 with audio>")
    video, audio_files = split_argument(argument)
    path = video.resolve()
    if not path.is_file():
        raise DatasetError(f"video file {path} not found")
    try:
        info = probe(path)
    except MediaError as e:
        raise DatasetError(f"video file {path} cannot be used: {e}") from e
    if info.video is None:
        raise DatasetError(f"{path} has no video stream")
    if info.truncation():
        raise DatasetError(f"{info.truncation()}; re-export or re-download the file")
    if info.audio is None:
        raise DatasetError(f"{path} has no audio track (a talking-head clip needs its speech)")
    duration = info.video.duration
    total = int(duration * FPS + 1e-6)
    n_train, k, split_note = split_frames(total, options.test_seconds, str(path))
    stem = path.stem
    subject = options.subjects[0] if options.subjects else stem
    b1, b2 = n_train / FPS, (n_train + k) / FPS
    driving = driving_clips(audio_files, stem)
    clips = (
        Clip(f"{stem}/train", path, subject=subject, split="train", start=0.0, end=round(b1, 6)),
        Clip(f"{stem}/val", path, subject=subject, split="val", start=round(b1, 6), end=round(b2, 6)),
        Clip(f"{stem}/test", path, subject=subject, split="test", start=round(b2, 6),
             end=round(total / FPS, 6)),
        *driving,
    )
    return Dataset(
        name="video",
        description=f"{path.name}: {duration:.1f} s, {info.video.width}x{info.video.height}; "
                    f"train [0, {b1:.2f}) s, val [{b1:.2f}, {b2:.2f}) s, test [{b2:.2f}, {duration:.2f}) s"
                    + (f"; driving audio: {', '.join(c.audio.name for c in driving if c.audio)}" if driving else ""),
        clips=clips,
        pairs=(CrossPair(video_clip=f"{stem}/test", audio_clip=f"{stem}/val"),
               *(CrossPair(video_clip=f"{stem}/test", audio_clip=c.id) for c in driving)),
        sync_protocol="tracked",
        source=str(path),
        notes=(f"source {info.video.fps:.3g} fps" + (" (variable)" if info.video.variable_frame_rate else "")
               + "; normalised to 25 fps by timestamp", split_note),
    )
