"""Audio-to-motion data from prepared clips: audio front end, f0, and the 3DMM fit's expression.

Per clip (T frames at 25 fps):
- audio features at 50 Hz, (2 T, C): the `hubert` stage (C = 1024, the original's input) or, where
  HuBERT weights are absent, the `mel` stage's 80-band Wav2Lip mel (80 Hz) resampled to the same 50 Hz
  rows (`mel_to_50hz`); which one is the clip's `front_end`;
- f0 (2 T,) Hz from the `f0` stage (Praat, GeneFace++'s settings);
- from the `threedmm` stage: the model's mean / identity offset / expression deformation at the
  landmarks (`ClipGeometry`), turned into expression coefficients of one `ExpressionSpace`;
- mouth amplitude (0.9 quantile of the outer-lip distance of the canonical landmarks) and blink
  units, as Real3DPortrait's Audio2Motion_Dataset computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from methods.nerf_head.motion import ExpressionSpace, blink_units, canonical_lm68, mouth_amplitude, shared_space

if TYPE_CHECKING:
    from data_recipes.recipe import PreparedClip, StageOutput
    from data_recipes.threedmm.model import MorphableModel

FrontEnd = Literal["hubert", "mel"]
FRONT_END_DIMS = {"hubert": 1024, "mel": 80}
MEL_HOP = 200          # Wav2Lip mel hop (80 columns per second)
HUBERT_STRIDE = 320    # 50 Hz rows
HUBERT_CENTRE = 200    # a HuBERT row covers samples [320 r, 320 r + 400): centre 320 r + 200


def resolve_front_end(requested: str, hubert_available: bool) -> FrontEnd:
    """"auto" -> "hubert" when its weights are there, else "mel"; an explicit choice is checked."""
    if requested == "auto":
        return "hubert" if hubert_available else "mel"
    if requested not in FRONT_END_DIMS:
        raise ValueError(f"front_end {requested!r} is not one of auto, hubert, mel")
    if requested == "hubert" and not hubert_available:
        raise ValueError("front_end 'hubert' was asked for but the HuBERT weights are not available "
                         "(see `bench list`); use front_end=auto or mel")
    return requested  # type: ignore[return-value]


def mel_to_50hz(mel: np.ndarray, rows: int) -> np.ndarray:
    """(80, M) Wav2Lip mel (centred frames every 200 samples) -> (rows, 80) at HuBERT's 50 Hz rows.

    Row r is read at the centre of HuBERT row r's window (sample 320 r + 200), i.e. mel column
    1.6 r + 1, by linear interpolation (clamped at the ends).
    """
    mel = np.asarray(mel, np.float32)
    pos = (HUBERT_STRIDE * np.arange(rows) + HUBERT_CENTRE) / MEL_HOP
    pos = np.clip(pos, 0, mel.shape[1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, mel.shape[1] - 1)
    frac = (pos - lo).astype(np.float32)[:, None]
    return np.ascontiguousarray(mel[:, lo].T * (1 - frac) + mel[:, hi].T * frac, dtype=np.float32)


def audio_features(clip: "PreparedClip", front_end: FrontEnd) -> np.ndarray:
    """(2 T, C) float32 features of the clip's normalised audio for the chosen front end."""
    from data_recipes.audio.align import expected_rows_50hz, fit_rows

    rows = expected_rows_50hz(clip.num_frames)
    if front_end == "hubert":
        return fit_rows(clip.stage("hubert").array("hubert").astype(np.float32), rows)
    if front_end == "mel":
        return mel_to_50hz(clip.stage("mel").array("mel"), rows)
    raise ValueError(f"unknown front end {front_end!r}")


def clip_f0(clip: "PreparedClip") -> np.ndarray:
    from data_recipes.audio.align import expected_rows_50hz, fit_rows

    return fit_rows(clip.stage("f0").array("f0").astype(np.float32), expected_rows_50hz(clip.num_frames))


@dataclass(frozen=True)
class ClipGeometry:
    """A clip's 3DMM fit at the landmarks (L = 468 or 68 points, decimetres, model space, no pose).

    model: the stage's model name ("bfm2009-front", "mediapipe-open..."); mean (L, 3); id_offset (L, 3)
    = id_basis . id; exp (T, K) the clip's own coefficients; exp_offsets (T, L, 3) = exp_basis . exp;
    valid (L,) points with a model vertex (BFM in MediaPipe mode lacks a few; like GeneFace++ they read
    vertex 0).
    """

    model: str
    mean: np.ndarray
    id_offset: np.ndarray
    exp: np.ndarray
    exp_offsets: np.ndarray
    valid: np.ndarray
    exp_basis: np.ndarray

    @property
    def is_bfm(self) -> bool:
        return self.model.startswith("bfm")


def clip_geometry(threedmm: "StageOutput", bfm: "MorphableModel | None" = None) -> ClipGeometry:
    """Read a `threedmm` stage folder. The open model stores its per-clip bases there; for BFM fits
    pass the loaded model (`data_recipes.threedmm.bfm.load_bfm`), whose bases are not copied per clip."""
    meta = threedmm.json("meta")
    name = str(meta["model"]["name"])
    idv = threedmm.array("id").astype(np.float32)
    exp = threedmm.array("exp").astype(np.float32)
    if name.startswith("bfm"):
        if bfm is None:
            raise ValueError("this clip was fitted with BFM 2009: pass the loaded model (load_bfm) to read its bases")
        mean, idb, exb = bfm.landmark_arrays()
        valid = np.asarray(bfm.landmark_valid, bool)
    else:
        mean = threedmm.array("model_mean")
        idb = threedmm.array("model_id_basis")
        exb = threedmm.array("model_exp_basis")
        valid = np.ones(len(mean), bool)
    mean, idb, exb = (np.asarray(a, np.float32) for a in (mean, idb, exb))
    id_offset = np.einsum("lck,k->lc", idb, idv).astype(np.float32)
    offsets = np.einsum("lck,tk->tlc", exb, exp).astype(np.float32)
    return ClipGeometry(model=name, mean=mean, id_offset=id_offset, exp=exp, exp_offsets=offsets, valid=valid,
                        exp_basis=exb)


def expression_space(geoms: Sequence[ClipGeometry], max_dim: int = 64, variance_kept: float = 0.999) -> ExpressionSpace:
    """BFM fits share BFM's basis (the official output space); open-model fits get `shared_space`."""
    if not geoms:
        raise ValueError("no training clips to build an expression space from")
    if all(g.is_bfm for g in geoms):
        g = geoms[0]
        return ExpressionSpace(name="bfm2009", basis=g.exp_basis, mean=g.mean)
    if any(g.is_bfm for g in geoms):
        raise ValueError("training clips mix BFM and open-model 3DMM fits; use one 3DMM for the whole dataset")
    return shared_space([g.exp_offsets for g in geoms], geoms[0].mean, max_dim, variance_kept)


def clip_expression(space: ExpressionSpace, geom: ClipGeometry) -> np.ndarray:
    """(T, K) the clip's expression in `space` (BFM: the fitted coefficients as they are)."""
    if space.name == "bfm2009" and geom.is_bfm:
        return geom.exp
    return space.project(geom.exp_offsets)


@dataclass(frozen=True)
class MotionClip:
    """One clip's training data. audio (2 T, C) float32 50 Hz; f0 (2 T,) Hz; exp (T, K) in the space;
    blink (T,) int64; mouth_amp: scalar; id_offset (L, 3) for landmark losses and overlays."""

    clip_id: str
    front_end: str
    audio: np.ndarray
    f0: np.ndarray
    exp: np.ndarray
    blink: np.ndarray
    mouth_amp: float
    id_offset: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.exp.shape[0])


def motion_clip(clip_id: str, front_end: str, audio: np.ndarray, f0: np.ndarray, space: ExpressionSpace,
                geom: ClipGeometry) -> MotionClip:
    """Assemble a MotionClip from arrays (pure: the builder below reads them from stages)."""
    exp = clip_expression(space, geom)
    t = min(len(exp), len(audio) // 2, len(f0) // 2)
    exp = exp[:t]
    canonical = canonical_lm68(space, geom.id_offset, exp)
    return MotionClip(clip_id=clip_id, front_end=front_end, audio=np.asarray(audio[:2 * t], np.float32),
                      f0=np.asarray(f0[:2 * t], np.float32), exp=exp.astype(np.float32),
                      blink=blink_units(canonical), mouth_amp=mouth_amplitude(canonical),
                      id_offset=geom.id_offset)


def build_motion_clips(clips: Sequence["PreparedClip"], front_end: FrontEnd, space: ExpressionSpace | None = None,
                       bfm: "MorphableModel | None" = None) -> tuple[list[MotionClip], ExpressionSpace]:
    """MotionClips of prepared clips (stages `threedmm`, `f0` and the front end's) and the space they use.

    Pass `space` to write held-out clips in the training clips' space; None builds it from `clips`.
    """
    geoms = [clip_geometry(c.stage("threedmm"), bfm) for c in clips]
    space = space or expression_space(geoms)
    out = [motion_clip(c.id, front_end, audio_features(c, front_end), clip_f0(c), space, g)
           for c, g in zip(clips, geoms)]
    return out, space
