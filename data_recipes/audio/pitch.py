"""f0 by Praat autocorrelation with GeneFace++'s settings, aligned to 25 fps frames.

Faithful to yerfor/GeneFacePlusPlus @ 6c35651, data_gen/utils/process_audio/extract_mel_f0.py:
- the waveform is zero-padded on the right to (n // 320 + 1) * 320 samples;
- `parselmouth.Sound(wav, 16000).to_pitch_ac(time_step=0.02, voicing_threshold=0.6,
  pitch_floor=80, pitch_ceiling=750)`, `selected_array['frequency']` (Hz, 0 where unvoiced);
  Praat centres its 20 ms frames in the signal (first frame at 20 ms for these lengths);
- the contour is fitted to GeneFace++'s own mel length 1 + (n - 512) // 320 (n_fft 512, hop 320,
  no centring): trimmed, or padded by repeating the last value;
- f0_coarse: GeneFace++'s `f0_to_coarse` (256 mel-spaced bins over 50-1100 Hz, 1 = unvoiced).
Alignment (this suite's rule, `data_recipes.audio.align`): n = 640 T samples give 2 T - 1 values;
the last is repeated once so that frame i owns rows [2 i, 2 i + 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
HOP = 320
GENEFACE_MEL_FFT = 512
F0_BIN = 256
F0_COARSE_MIN = 50.0
F0_COARSE_MAX = 1100.0


@dataclass(frozen=True)
class PitchConfig:
    """Praat autocorrelation pitch (GeneFace++ values).

    time_step_s: analysis step (hop 320 / 16 kHz = 20 ms, 50 Hz); pitch_floor / pitch_ceiling in Hz;
    voicing_threshold: Praat's voicing threshold (GeneFace++ 0.6; Praat's default is 0.45).
    """

    time_step_s: float = HOP / SAMPLE_RATE
    pitch_floor: float = 80.0
    pitch_ceiling: float = 750.0
    voicing_threshold: float = 0.6


def geneface_mel_length(num_samples: int) -> int:
    """Frames of GeneFace++'s uncentred mel (n_fft 512, hop 320): 1 + (n - 512) // 320."""
    return max(1 + (num_samples - GENEFACE_MEL_FFT) // HOP, 0)


def praat_f0(wav: np.ndarray, config: PitchConfig = PitchConfig(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Raw Praat contour (Hz, 0 = unvoiced) of the right-padded waveform, one value per time step."""
    import parselmouth

    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    hop = int(round(config.time_step_s * sample_rate))
    pad = (len(wav) // hop + 1) * hop - len(wav)
    padded = np.pad(wav, (0, pad))
    pitch = parselmouth.Sound(padded, sampling_frequency=sample_rate).to_pitch_ac(
        time_step=config.time_step_s, voicing_threshold=config.voicing_threshold,
        pitch_floor=config.pitch_floor, pitch_ceiling=config.pitch_ceiling)
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def geneface_f0(wav: np.ndarray, config: PitchConfig = PitchConfig()) -> np.ndarray:
    """f0 exactly as GeneFace++ stores it: Praat contour fitted to its mel length (float64, Hz)."""
    from data_recipes.audio.align import fit_rows

    f0 = praat_f0(wav, config)
    length = geneface_mel_length(len(np.asarray(wav).reshape(-1)))
    if length == 0:
        return f0[:0]
    if abs(length - len(f0)) > 8:  # the original asserts the same bound
        raise ValueError(f"Praat gave {len(f0)} f0 frames for a mel of {length}; expected a difference <= 8")
    return fit_rows(f0, length)


def f0_to_coarse(f0: np.ndarray) -> np.ndarray:
    """GeneFace++'s quantisation: int64 bins 1..255 on a mel scale over 50-1100 Hz, 1 for unvoiced."""
    f0 = np.asarray(f0, dtype=np.float64)
    mel_min = 1127.0 * np.log(1.0 + F0_COARSE_MIN / 700.0)
    mel_max = 1127.0 * np.log(1.0 + F0_COARSE_MAX / 700.0)
    mel = 1127.0 * np.log(1.0 + f0 / 700.0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - mel_min) * (F0_BIN - 2) / (mel_max - mel_min) + 1.0
    mel = np.clip(mel, 1.0, F0_BIN - 1)
    return np.rint(mel).astype(np.int64)


def f0_stage(ctx) -> None:
    """Recipe stage "f0": (2 T,) float32 Hz (0 = unvoiced) and (2 T,) int64 coarse bins."""
    from data_recipes.audio.align import SAMPLES_PER_FRAME, expected_rows_50hz, fit_rows
    from data_recipes.recipe import save_array, save_json

    cfg: PitchConfig = ctx.config
    audio = ctx.prepared.audio()
    num_frames = len(audio) // SAMPLES_PER_FRAME
    raw = geneface_f0(audio, cfg)
    rows = expected_rows_50hz(num_frames)
    f0 = fit_rows(raw, rows).astype(np.float32)
    save_array(ctx.out_dir, "f0", f0)
    save_array(ctx.out_dir, "f0_coarse", f0_to_coarse(f0))
    voiced = f0 > 0
    save_json(ctx.out_dir, "meta", {
        "shape": list(f0.shape), "rows_per_second": 50, "rows_per_frame": 2, "num_frames": num_frames,
        "raw_rows": int(len(raw)), "edge_padded_rows": int(max(rows - len(raw), 0)),
        "voiced_fraction": float(voiced.mean()) if len(f0) else 0.0,
        "median_voiced_hz": float(np.median(f0[voiced])) if voiced.any() else None,
        "time_step_s": cfg.time_step_s, "pitch_floor": cfg.pitch_floor, "pitch_ceiling": cfg.pitch_ceiling,
        "voicing_threshold": cfg.voicing_threshold,
    })
