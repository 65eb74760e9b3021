"""One rule that maps every audio feature stream onto 25 fps video frame indices.

The normalise stage gives T video frames and exactly T * 640 samples of 16 kHz audio (40 ms per frame).
Each stream is stored so that its rows for frame i are found by arithmetic, never by searching:

- mel (Wav2Lip, 80 mel frames/s, stored (80, 1 + 640 T // 200) = (80, 3.2 T + 1)): frame i uses the
  16-column window starting at column ``int(80 * (i / 25))`` (Wav2Lip's training rule, color_syncnet
  and wav2lip_train ``crop_audio_window``); the official inference script uses ``int(i * 80 / 25)``
  and takes the last 16 columns for windows that would run past the end (see
  `data_recipes.audio.mel.inference_windows`). Both rules are exposed here.
- hubert (50 Hz, stored (2 T, 1024)): frame i uses rows [2 i, 2 i + 2). HuBERT itself gives
  ``(n - 80) // 320`` rows for n samples (a 400-sample receptive field with a 320-sample stride), i.e.
  2 T - 1 rows for T frames; the stage appends a copy of the last row so that every frame has two.
- f0 (50 Hz, stored (2 T,)): frame i uses rows [2 i, 2 i + 2). GeneFace++ trims Praat's contour to
  its own mel length ``1 + (n - 512) // 320`` = 2 T - 1; the stage appends a copy of the last value.

GeneFace++ at inference additionally zero-pads HuBERT (and f0 to the same length) to a multiple of 8
rows before audio2motion (which halves the rate to 25 Hz); `pad_rows_to_multiple` reproduces that,
and the frames it adds beyond the audio must be dropped by the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MEL_PER_SECOND = 80
MEL_WINDOW = 16
ROWS_PER_FRAME_50HZ = 2  # HuBERT and f0 run at 50 Hz = 2 rows per 25 fps frame


@dataclass(frozen=True)
class FrameRows:
    """Where frame i's features live in each stored stream: half-open [start, stop) row ranges.

    `mel` indexes columns of the (80, T_mel) Wav2Lip mel; `hubert` and `f0` index rows of the 50 Hz
    streams.
    """

    frame: int
    mel: tuple[int, int]
    hubert: tuple[int, int]
    f0: tuple[int, int]


def mel_window_start(frame: int, fps: float = FPS) -> int:
    """Wav2Lip training-time mel window start for a frame: int(80 * (frame / fps))."""
    return int(MEL_PER_SECOND * (frame / float(fps)))


def frame_rows(frame: int, fps: float = FPS) -> FrameRows:
    """Row ranges of every stream for video frame `frame` (see the module docstring for the rule)."""
    if frame < 0:
        raise ValueError(f"frame index must be >= 0, got {frame}")
    m = mel_window_start(frame, fps)
    r = ROWS_PER_FRAME_50HZ * frame
    return FrameRows(frame, (m, m + MEL_WINDOW), (r, r + ROWS_PER_FRAME_50HZ), (r, r + ROWS_PER_FRAME_50HZ))


def expected_rows_50hz(num_frames: int) -> int:
    """Rows every stored 50 Hz stream has for a clip of `num_frames` 25 fps frames."""
    return ROWS_PER_FRAME_50HZ * num_frames


def mel_columns(num_samples: int, hop: int = 200) -> int:
    """Columns of the centred Wav2Lip STFT mel for `num_samples` samples: 1 + n // hop."""
    return 1 + num_samples // hop


def fit_rows(features: np.ndarray, rows: int) -> np.ndarray:
    """Trim or edge-pad (repeat the last row) `features` along axis 0 to exactly `rows` rows.

    Edge padding (not zeros) because the rows added here are the tail of real audio that the
    network's receptive field or Praat's window did not cover, not silence.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    n = features.shape[0]
    if n >= rows:
        return features[:rows]
    if n == 0:
        raise ValueError("cannot edge-pad an empty feature stream")
    pad = np.repeat(features[-1:], rows - n, axis=0)
    return np.concatenate([features, pad], axis=0)


def pad_rows_to_multiple(features: np.ndarray, multiple: int = 8) -> np.ndarray:
    """Zero-pad axis 0 to a multiple of `multiple` rows, as GeneFace++ does to HuBERT at inference."""
    if multiple <= 0:
        raise ValueError(f"multiple must be > 0, got {multiple}")
    extra = (-features.shape[0]) % multiple
    if extra == 0:
        return features
    widths = [(0, extra)] + [(0, 0)] * (features.ndim - 1)
    return np.pad(features, widths)


def frame_features_50hz(features: np.ndarray, frame: int) -> np.ndarray:
    """The two 50 Hz rows of `frame` from a stored (2 T, ...) stream."""
    start, stop = frame_rows(frame).hubert
    if stop > features.shape[0]:
        raise IndexError(f"frame {frame} needs rows [{start}, {stop}) but the stream has {features.shape[0]}")
    return features[start:stop]


def frame_mel_window(mel: np.ndarray, frame: int, fps: float = FPS, clamp_end: bool = False) -> np.ndarray:
    """(80, 16) training-rule mel window of `frame` from an (80, T_mel) Wav2Lip mel.

    The windows of the last ~4 frames of a clip run past the end of the mel (a window spans 0.2 s).
    Wav2Lip's training loader skips such frames (the default here raises IndexError);
    `clamp_end=True` takes the last 16 columns instead, as the official inference script does.
    """
    start, stop = frame_rows(frame, fps).mel
    if stop > mel.shape[1]:
        if not clamp_end:
            raise IndexError(f"frame {frame} needs mel columns [{start}, {stop}) but the mel has {mel.shape[1]}")
        start, stop = mel.shape[1] - MEL_WINDOW, mel.shape[1]
    return mel[:, start:stop]
