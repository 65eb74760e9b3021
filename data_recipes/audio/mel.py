"""The Wav2Lip mel spectrogram with the official hparams (Rudrabha/Wav2Lip @ 5c90fa9, hparams.py/audio.py).

mel = normalise(amp_to_db(mel_basis @ |stft(preemphasis(wav))|) - ref_level_db), with
sample_rate 16000, n_fft 800, hop 200 (80 mel frames per second), win 800 (Hann), 80 mels, fmin 55,
fmax 7600, preemphasis 0.97, ref_level_db 20, min_level_db -100, symmetric output clipped to [-4, 4].

STFT padding: the original pins librosa 0.7, whose stft pads the centred frames by reflection;
librosa >= 0.10 pads with zeros. Only the first and last two mel frames differ. `pad_mode="reflect"`
(default) reproduces the pinned original; "constant" reproduces the script run with a new librosa.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 80
WINDOW_FRAMES = 16  # mel frames per video-frame window (0.2 s)


@dataclass(frozen=True)
class MelConfig:
    pad_mode: str = "reflect"


@functools.lru_cache(maxsize=2)
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX, dtype=np.float32)


def wav2lip_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """(80, T_mel) float32 mel of 16 kHz mono audio, T_mel = 1 + len(wav) // 200, in the original's
    arithmetic: the STFT is computed in float64 and stored as complex64 (librosa 0.7's default dtype),
    and everything after it stays float32, as numpy 1.17's value-based casting kept float32 arrays
    next to float64 scalars (numpy >= 2 would promote them; the scalars are given as float32). The
    float64 formula differs by up to 2e-7, which flips a few Wav2Lip output pixels by one grey level.
    """
    import librosa
    from scipy import signal

    emphasised = signal.lfilter([1.0, -PREEMPHASIS], [1.0], np.asarray(wav, dtype=np.float64))
    spec = np.abs(librosa.stft(y=emphasised, n_fft=N_FFT, hop_length=HOP, win_length=WIN, pad_mode=pad_mode,
                               dtype=np.complex64))
    f32 = np.float32
    min_level = f32(np.exp(MIN_LEVEL_DB / 20 * np.log(10)))
    db = f32(20) * np.log10(np.maximum(min_level, np.dot(_mel_basis(), spec))) - f32(REF_LEVEL_DB)
    top = f32(MAX_ABS_VALUE)
    norm = (f32(2) * top) * ((db - f32(MIN_LEVEL_DB)) / f32(-MIN_LEVEL_DB)) - top
    return np.clip(norm, -top, top).astype(np.float32, copy=False)


def inference_windows(mel: np.ndarray, fps: float = 25.0) -> list[int]:
    """Start indices of the official inference mel windows; their count is the output frame count.

    Window i starts at int(i * 80 / fps); the loop stops at the first window that would run past the
    end, which is replaced by the last 16 mel frames (so 3.0 s of audio gives 72 windows, not 75).
    """
    total = mel.shape[1]
    if total < WINDOW_FRAMES:
        raise ValueError(f"audio too short for one Wav2Lip window: {total} mel frames < {WINDOW_FRAMES}")
    starts: list[int] = []
    i = 0
    step = MEL_FRAMES_PER_SECOND / fps
    while True:
        s = int(i * step)
        if s + WINDOW_FRAMES > total:
            starts.append(total - WINDOW_FRAMES)
            return starts
        starts.append(s)
        i += 1


def training_window_start(frame_index: int, fps: float = 25.0) -> int:
    """Training-time window start for a video frame: int(80 * (frame / 25))."""
    return int(MEL_FRAMES_PER_SECOND * (frame_index / float(fps)))


def mel_stage(ctx) -> None:
    """Recipe stage "mel": the Wav2Lip mel of the clip's normalised audio."""
    from data_recipes.recipe import save_array, save_json

    mel = wav2lip_mel(ctx.prepared.audio(), ctx.config.pad_mode)
    save_array(ctx.out_dir, "mel", mel)
    save_json(ctx.out_dir, "meta", {"frames_per_second": MEL_FRAMES_PER_SECOND, "pad_mode": ctx.config.pad_mode,
                                    "shape": list(mel.shape)})
