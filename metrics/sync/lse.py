"""LSE-D / LSE-C exactly as syncnet_python computes them (joonson/syncnet_python @ 6efbb1c,
SyncNetInstance.evaluate / calc_pdist; Wav2Lip's evaluation/scores_LSE copy of it).

The pure core of the metric. Inputs are what the official code has in hand after its own file
conversions (see `metrics.sync.inputs` for those): 224x224 BGR uint8 frames, 16 kHz int16 audio.

- audio: `python_speech_features.mfcc` with its defaults on the unscaled int16 samples -> 13
  coefficients at 100 frames/s, i.e. MFCC_PER_FRAME = 4 per video frame;
- usable length U = min(frames, floor(samples / 640)); windows W = U - 5 (the official loop stops
  one window early: the window starting at U - 5 would fit but is not used);
- window v: frames [v, v + 5) and MFCC frames [4v, 4v + 20), v = 0 .. W - 1;
- calc_pdist with VSHIFT = 15 (the command-line value; the function's own default is 10):
  d[v, j] = ||lip[v] - aud_padded[v + j] + 1e-6||_2, j = 0..30, the audio features zero-padded by
  15 rows at both ends, so shifts past the ends compare against zeros and count in the mean;
- curve = mean over v (31 values); LSE-D = min(curve); LSE-C = median(curve) - min(curve);
  AV offset = VSHIFT - argmin(curve), the first minimum winning.

Sign of the offset: the minimum at column j means that video window v matches audio window
v + (j - VSHIFT); the offset is VSHIFT - j, so audio that is delayed by k frames against the video
gives offset -k and audio that runs k frames early gives +k.

Every constant is a module attribute read at call time, so tests can show that each one matters.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from bench.progress import Progress
    from metrics.sync.model import SyncNetModel

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS      # 640: "floor(len(audio) / 640)"
SYNCNET_SIZE = 224                          # frames are resized to 224x224 before the lip tower
VIDEO_WINDOW = 5                            # windows = usable - 5 ("lastframe = min_length - 5")
LIP_FRAMES = 5                              # frames per lip window: the lip tower's temporal kernel
MFCC_PER_FRAME = 4                          # MFCC frames per video frame: the "4v" of the audio window
AUDIO_WINDOW = 20                           # MFCC frames per audio window: "[4v, 4v + 20)"
VSHIFT = 15                                 # run_syncnet.py / calculate_scores_*.py --vshift default
DIST_EPS = 1e-6                             # torch.nn.functional.pairwise_distance's eps
BATCH_SIZE = 20                             # --batch_size default; does not change the numbers
# python_speech_features.mfcc defaults (the official code passes only the signal and the rate)
MFCC_WINLEN = 0.025
MFCC_WINSTEP = 0.01
MFCC_NUMCEP = 13


def _const(name: str) -> object:
    """A module constant read at call time (so a patched constant reaches every function)."""
    return getattr(sys.modules[__name__], name)


def usable_length(num_frames: int, num_samples: int) -> int:
    """min(frames, floor(samples / 640)), as the official code trims audio and video."""
    return min(int(num_frames), int(math.floor(num_samples / _const("SAMPLES_PER_FRAME"))))


def num_windows(num_frames: int, num_samples: int) -> int:
    """Number of 5-frame windows scored: usable length - 5 (may be <= 0 for very short clips)."""
    return usable_length(num_frames, num_samples) - _const("VIDEO_WINDOW")


def mfcc(pcm16: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(13, M) float32 MFCC of int16 mono samples, python_speech_features defaults, no scaling.

    M = 1 + ceil((N - 400) / 160) frames for N samples (the last frame zero-padded), 4T - 1 for
    T whole video frames of audio.
    """
    import python_speech_features

    if pcm16.dtype != np.int16 or pcm16.ndim != 1:
        raise TypeError(f"expected mono int16 samples, got {pcm16.dtype} {pcm16.shape}")
    feats = python_speech_features.mfcc(pcm16, sample_rate, winlen=_const("MFCC_WINLEN"),
                                        winstep=_const("MFCC_WINSTEP"), numcep=_const("MFCC_NUMCEP"))
    # the official code goes float64 -> float32 (`.astype(float)` then `.float()`)
    return np.ascontiguousarray(feats.T, dtype=np.float32)


def audio_windows(mfcc_feats: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """(N, 1, 13, AUDIO_WINDOW) float32: MFCC frames [4v, 4v + 20) for each video frame v in `starts`."""
    step, width = _const("MFCC_PER_FRAME"), _const("AUDIO_WINDOW")
    out = np.empty((len(starts), 1, mfcc_feats.shape[0], width), dtype=np.float32)
    for n, v in enumerate(starts):
        a = step * int(v)
        if a < 0 or a + width > mfcc_feats.shape[1]:
            raise ValueError(f"audio window for frame {v} needs MFCC frames [{a}, {a + width}) "
                             f"of {mfcc_feats.shape[1]}")
        out[n, 0] = mfcc_feats[:, a:a + width]
    return out


def frames_to_tensor(frames_bgr: np.ndarray) -> "torch.Tensor":
    """(T, 224, 224, 3) uint8 BGR -> (1, 3, T, 224, 224) float32 raw 0..255, the official layout."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames_bgr.transpose(3, 0, 1, 2))[None].astype(np.float32))


FrameSource = Callable[[int, int], np.ndarray]
"""A function (start, stop) -> uint8 BGR frames [start, stop) of shape (n, 224, 224, 3)."""


@dataclass(frozen=True)
class Embeddings:
    """One lip and one audio embedding per window: both (W, 1024) float32."""

    lip: np.ndarray
    audio: np.ndarray


def embed(model: "SyncNetModel", frames: FrameSource, num_frames: int, mfcc_feats: np.ndarray,
          num_samples: int, batch_size: int | None = None, device: str = "cpu",
          progress: "Progress | None" = None) -> Embeddings:
    """Lip and audio embeddings of every scored window, computed `batch_size` windows at a time.

    Memory stays bounded: only batch_size + 4 frames are in float form at once. Batching does not
    change the numbers (eval-mode BatchNorm, no cross-window terms).
    """
    import torch

    batch = int(batch_size or _const("BATCH_SIZE"))
    windows = num_windows(num_frames, num_samples)
    if windows <= 0:
        raise ValueError(f"{num_frames} frames / {num_samples} samples give no window")
    span = LIP_FRAMES - 1  # fixed by the architecture, not a tunable
    lips, auds = [], []
    starts = range(0, windows, batch)
    if progress is not None:
        starts = progress.track(starts, "sync: embed windows", total=math.ceil(windows / batch))
    model.eval()
    with torch.inference_mode():
        for i in starts:
            j = min(windows, i + batch)
            clip = frames_to_tensor(frames(i, j + span)).to(device)
            lips.append(model.forward_lip_clip(clip).float().cpu())
            aud = torch.from_numpy(audio_windows(mfcc_feats, range(i, j))).to(device)
            auds.append(model.forward_aud(aud).float().cpu())
    return Embeddings(torch.cat(lips).numpy(), torch.cat(auds).numpy())


def calc_pdist(lip: np.ndarray, aud: np.ndarray, vshift: int | None = None) -> np.ndarray:
    """(W, 2 * vshift + 1) float32 distances ||lip[v] - aud_padded[v + j] + 1e-6||_2.

    The audio features are zero-padded by `vshift` rows at both ends (as F.pad does in the original).
    """
    import torch

    vshift = int(_const("VSHIFT") if vshift is None else vshift)
    lip_t = torch.as_tensor(np.asarray(lip, dtype=np.float32))
    aud_t = torch.as_tensor(np.asarray(aud, dtype=np.float32))
    padded = torch.nn.functional.pad(aud_t, (0, 0, vshift, vshift))
    # (W, 2 * vshift + 1, D): the audio rows each video window is compared with
    shifted = padded.unfold(0, 2 * vshift + 1, 1)[: len(lip_t)].transpose(1, 2)
    diff = lip_t[:, None, :] - shifted + _const("DIST_EPS")
    return torch.linalg.vector_norm(diff, dim=2).numpy()


@dataclass(frozen=True)
class SyncResult:
    """LSE-D (min of the curve), LSE-C (median - min), AV offset (frames), the 31-value curve."""

    distance: float
    confidence: float
    offset: int
    curve: np.ndarray          # (2 * vshift + 1,) float32, index j = audio shifted by j - vshift
    windows: int
    vshift: int

    def as_extra(self) -> dict[str, object]:
        return {"curve": [float(x) for x in self.curve], "windows": self.windows, "vshift": self.vshift}


def sync_scores(dists: np.ndarray, vshift: int | None = None) -> SyncResult:
    """Scores from the (W, 2 * vshift + 1) distance matrix, as the official evaluate() reduces it."""
    import torch

    vshift = int(_const("VSHIFT") if vshift is None else vshift)
    d = torch.as_tensor(np.asarray(dists, dtype=np.float32))
    curve = d.mean(dim=0)                 # torch.mean(torch.stack(dists, 1), 1) in the original
    minval, minidx = torch.min(curve, 0)  # first minimum wins
    conf = torch.median(curve) - minval   # 2 * vshift + 1 values: a true median
    return SyncResult(float(minval), float(conf), int(vshift - int(minidx)), curve.numpy().copy(),
                      int(d.shape[0]), vshift)


def score_embeddings(emb: Embeddings, vshift: int | None = None) -> SyncResult:
    return sync_scores(calc_pdist(emb.lip, emb.audio, vshift), vshift)
