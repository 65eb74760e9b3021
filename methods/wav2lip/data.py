"""Training data for both Wav2Lip stages, sampled as the official scripts do.

Official preprocessing (preprocess.py) stores, per video, one JPEG per frame with a face (the detector
box cut out, no pads, no smoothing) and the audio; frames without a face have no file, so every
window touching them is rejected. Training scripts read the JPEGs back (BGR), resize to 96x96 and
compute the mel of the whole utterance. Here `ClipData` holds the same things in memory:
crops (T, 96, 96, 3) uint8 BGR, a per-frame `valid` mask, and the mel transposed to (M, 80).

Sampling facts (color_syncnet_train.py, wav2lip_train.py, hq_wav2lip_train.py):
- a clip is drawn uniformly; clips with <= 3 * 5 frames are skipped;
- `img` and a different `wrong` frame are drawn uniformly among the clip's frames;
- a window is frames f..f+4, all of which must exist;
- expert: label 1 (window at img) or 0 (window at wrong) with equal chance; the audio window is
  always img's, starting at int(80 * (img + 1) / 25) (the +1 is the original's "0 -> 1 indexing");
  input = the 5 crops stacked on channels / 255, lower half -> (15, 48, 96);
- generator: audio window of img at int(80 * img / 25) for the sync loss; per-frame windows for
  frames img..img+4 start at int(80 * (img + k - 1) / 25), k = 0..4 (rejected when img + 1 - 2 < 0);
  input = [window at img with rows 48.. zeroed, window at wrong] on channels -> (6, 5, 96, 96);
  target = the unmasked window at img -> (3, 5, 96, 96); all / 255.
Randomness comes from an explicit numpy Generator (no global state); the trainers seed it from
(seed, stage, step) so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from data_recipes.audio.mel import WINDOW_FRAMES
from data_recipes.crops.wav2lip import CROP_SIZE

if TYPE_CHECKING:
    from bench.progress import Progress
    from data_recipes.recipe import PreparedClip

SYNC_T = 5
MEL_FPS = 80.0
VIDEO_FPS = 25.0


@dataclass(frozen=True)
class ClipData:
    """One training video in memory. crops: (T, 96, 96, 3) uint8 BGR; valid: (T,) bool; mel: (M, 80)."""

    clip_id: str
    crops: np.ndarray
    valid: np.ndarray
    mel: np.ndarray

    @property
    def frame_ids(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def restrict(self, start: int, stop: int) -> "ClipData":
        """The same clip with only frames [start, stop) usable (for a time-split held-out part)."""
        valid = self.valid.copy()
        valid[:start] = False
        valid[stop:] = False
        return replace(self, valid=valid)


def training_crop(frame_rgb: np.ndarray, box_xyxy, jpeg: bool = True, size: int = CROP_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 BGR: the box cut out, optionally through the preprocessing's JPEG file
    (cv2.imwrite default quality 95, read back with cv2.imread), then resized with INTER_LINEAR."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    face = np.ascontiguousarray(frame_rgb[y1:y2, x1:x2, ::-1])
    if jpeg:
        ok, buf = cv2.imencode(".jpg", face)
        if not ok:
            raise RuntimeError("cv2 could not encode a face crop as JPEG")
        face = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)


def prepare_clip(prepared: "PreparedClip", jpeg: bool = True, box_source: str = "detector",
                 progress: "Progress | None" = None) -> ClipData:
    """Crops and mel of one clip from its recipe stages ("wav2lip_crops", "mel"), streaming frames.

    box_source: "detector" = the detector's box without pads or smoothing (official preprocess.py);
    "inference" = the padded, smoothed boxes the inference uses.
    """
    crops_stage = prepared.stage("wav2lip_crops")
    boxes = crops_stage.array("detector_boxes" if box_source == "detector" else "boxes")
    valid = crops_stage.array("has_face").astype(bool)
    # A degenerate box (zero width or height) cannot be cut; treat it like a missed detection.
    valid &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    mel = prepared.stage("mel").array("mel").T.astype(np.float32)
    n = len(valid)
    crops = np.zeros((n, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    frames: Iterable[np.ndarray] = prepared.iter_frames(0, n)
    if progress is not None:
        frames = progress.track(frames, f"wav2lip: crops {prepared.id}", total=n)
    for i, frame in enumerate(frames):
        if valid[i]:
            crops[i] = training_crop(frame, boxes[i], jpeg)
    return ClipData(prepared.id, crops, valid, mel)


def _window_ok(clip: ClipData, start: int) -> bool:
    return start >= 0 and start + SYNC_T <= len(clip.valid) and bool(clip.valid[start:start + SYNC_T].all())


def mel_window(mel_t: np.ndarray, frame_num: int) -> np.ndarray | None:
    """(80, 16) window starting at int(80 * frame_num / 25), or None when it runs past the end."""
    start = int(MEL_FPS * (frame_num / VIDEO_FPS))
    w = mel_t[start:start + WINDOW_FRAMES]
    return w.T if len(w) == WINDOW_FRAMES else None


def _pick_pair(clip: ClipData, rng: np.random.Generator) -> tuple[int, int] | None:
    ids = clip.frame_ids
    if len(ids) <= 3 * SYNC_T:
        return None
    img = int(ids[rng.integers(len(ids))])
    wrong = img
    while wrong == img:
        wrong = int(ids[rng.integers(len(ids))])
    return img, wrong


def usable(clips: Sequence[ClipData]) -> list[ClipData]:
    """Clips the official samplers can draw from (more than 15 frames with a face)."""
    return [c for c in clips if len(c.frame_ids) > 3 * SYNC_T]


def no_usable_clip(clips: Sequence[ClipData]) -> str:
    """Why no clip can be sampled: each clip's frames with a face against the sampler's need."""
    shown = ", ".join(f"{c.clip_id!r}: {len(c.frame_ids)} of {len(c.valid)}" for c in clips[:5])
    more = f" and {len(clips) - 5} more" if len(clips) > 5 else ""
    return (f"wav2lip: no training clip has more than {3 * SYNC_T} frames with a detected face "
            f"(frames with a face: {shown or 'no clips'}{more}); training needs faces")


def expert_sample(clips: Sequence[ClipData], rng: np.random.Generator, max_tries: int = 10000):
    """One expert example: x (15, 48, 96) float32, mel (1, 80, 16) float32, y (1,) float32."""
    for _ in range(max_tries):
        clip = clips[int(rng.integers(len(clips)))]
        pair = _pick_pair(clip, rng)
        if pair is None:
            continue
        img, wrong = pair
        positive = bool(rng.integers(2))
        chosen = img if positive else wrong
        if not _window_ok(clip, chosen):
            continue
        mel = mel_window(clip.mel, img + 1)
        if mel is None:
            continue
        window = clip.crops[chosen:chosen + SYNC_T]                      # (5, 96, 96, 3)
        x = np.concatenate(list(window), axis=2).transpose(2, 0, 1) / 255.0  # (15, 96, 96)
        x = x[:, x.shape[1] // 2:]
        return (x.astype(np.float32), mel[None].astype(np.float32),
                np.array([1.0 if positive else 0.0], np.float32))
    raise RuntimeError("no usable expert training window found: every clip needs more than 15 consecutive-"
                       "enough frames with a face and audio covering them")


def generator_sample(clips: Sequence[ClipData], rng: np.random.Generator, max_tries: int = 10000):
    """One generator example: x (6, 5, 96, 96), indiv_mels (5, 1, 80, 16), mel (1, 80, 16), gt (3, 5, 96, 96)."""
    for _ in range(max_tries):
        clip = clips[int(rng.integers(len(clips)))]
        pair = _pick_pair(clip, rng)
        if pair is None:
            continue
        img, wrong = pair
        if not (_window_ok(clip, img) and _window_ok(clip, wrong)):
            continue
        mel = mel_window(clip.mel, img)
        if mel is None:
            continue
        first = img + 1
        if first - 2 < 0:
            continue
        indiv = [mel_window(clip.mel, i - 2) for i in range(first, first + SYNC_T)]
        if any(m is None for m in indiv):
            continue
        window = clip.crops[img:img + SYNC_T].transpose(3, 0, 1, 2) / 255.0       # (3, 5, 96, 96)
        gt = window.copy()
        window[:, :, window.shape[2] // 2:] = 0.0
        wrong_window = clip.crops[wrong:wrong + SYNC_T].transpose(3, 0, 1, 2) / 255.0
        x = np.concatenate([window, wrong_window], axis=0)
        return (x.astype(np.float32), np.stack(indiv)[:, None].astype(np.float32),
                mel[None].astype(np.float32), gt.astype(np.float32))
    raise RuntimeError("no usable generator training window found: clips need more than 15 frames with a "
                       "face, in runs of 5, with audio covering them")


def batch(sample_fn, clips: Sequence[ClipData], rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    """Stack `size` samples into arrays (the DataLoader's default collate)."""
    items = [sample_fn(clips, rng) for _ in range(size)]
    return tuple(np.stack(parts) for parts in zip(*items))


def split_train_eval(train: Sequence[ClipData], held_out: Sequence[ClipData],
                     fraction: float = 0.2) -> tuple[list[ClipData], list[ClipData], str]:
    """Training and evaluation clips, and a sentence saying how the evaluation split was made.

    The dataset's val clips are used when given. Otherwise one clip in ten is held out, or, with a
    single clip, its last `fraction` of frames (a time split; windows near the cut may share audio).
    """
    train = list(train)
    if not train:
        from data_recipes.quality import InputUnusable

        raise InputUnusable("wav2lip: no training clip to split for evaluation")
    if held_out:
        return train, list(held_out), "evaluated on the dataset's val clips"
    if len(train) >= 2:
        held = set(range(0, len(train), 10)) if len(train) >= 10 else {len(train) - 1}
        ev = [c for i, c in enumerate(train) if i in held]
        rest = [c for i, c in enumerate(train) if i not in held]
        return rest, ev, f"no val clips: {len(ev)} of {len(train)} training clips held out for evaluation"
    only = train[0]
    cut = int(round(len(only.valid) * (1.0 - fraction)))
    return ([only.restrict(0, cut)], [only.restrict(cut, len(only.valid))],
            f"no val clips: the last {fraction:.0%} of the only training clip held out for evaluation")
