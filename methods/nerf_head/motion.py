"""From predicted expression to the renderer's condition, as GeneFace++ does it (pure numpy functions).

Facts from yerfor/GeneFacePlusPlus @ 6c35651 (inference/genefacepp_infer.py `forward_audio2secc`,
data_util/face3d_helper.py `reconstruct_idexp_lm3d`, modules/postnet/lle.py) and Real3DPortrait @
a9d70c7 (tasks/os_avatar/dataset_utils/audio2motion_dataset.py `get_mouth_amp`, `get_blink`):

1. landmarks: idexp_lm3d = (id_basis . id + exp_basis . exp) x 10 at the 468 MediaPipe-matched model
   vertices (no mean shape, no pose), then the 68-point subset (`LM68_FROM_LM478`) -> 204 numbers;
2. LLE: the K = 10 nearest training frames (Euclidean on the 204-vector), weights summing to one
   from least squares, output = blend x projection + (1 - blend) x prediction, blend 0.2;
3. normalise each of the 204 numbers by the training frames' mean and (unbiased) std and clamp to the
   3 % / 97 % quantiles of the normalised training frames.

The expression basis is an `ExpressionSpace`: BFM 2009's own 64-d basis (the official model's output
space, shared by every subject), or, with the suite's open 3DMM (whose expression bases are learned
per clip and so differ between clips), one basis learned from the training clips' expression
deformations (`shared_space`) so that every clip's expression is written in the same coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LM_SCALE = 10.0  # reconstruct_idexp_lm3d multiplies by 10
LLE_K = 10
LLE_BLEND = 0.2
CLAMP_QUANTILES = (0.03, 0.97)
# 68-point indices (300-W) the original reads for the mouth amplitude (upper / lower outer lip centre)
# and the eye openings of the blink unit.
MOUTH_AMP_POINTS_68 = (51, 57)
EYE_PAIRS_68 = ((41, 37), (40, 38), (47, 43), (46, 44))
INNER_LIP_POINTS_68 = (62, 66)  # inner lip centres: the mouth opening used by tests and overlays


@dataclass(frozen=True)
class ExpressionSpace:
    """A linear map from expression coefficients to landmark offsets (decimetres, model space).

    name: "bfm2009" (the official model's space) or "open-shared-pca" (learned from training clips);
    basis: (L, 3, K) float32 at L = 468 MediaPipe points (or 68 for a BFM fitted in lm68 mode);
    mean: (L, 3) float32 model mean shape at those points (for canonical landmarks and overlays).
    """

    name: str
    basis: np.ndarray
    mean: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.basis.shape[2])

    @property
    def num_points(self) -> int:
        return int(self.basis.shape[0])

    def offsets(self, exp: np.ndarray) -> np.ndarray:
        """(T, K) -> (T, L, 3) landmark offsets in decimetres."""
        return np.einsum("lck,tk->tlc", self.basis, np.asarray(exp, np.float32)).astype(np.float32)

    def project(self, offsets: np.ndarray) -> np.ndarray:
        """(T, L, 3) offsets -> (T, K) least-squares coefficients in this space."""
        a = self.basis.reshape(-1, self.dim).astype(np.float64)
        b = np.asarray(offsets, np.float64).reshape(len(offsets), -1).T
        return np.linalg.lstsq(a, b, rcond=None)[0].T.astype(np.float32)


def to_lm68(points: np.ndarray) -> np.ndarray:
    """(..., 468 or 478, 3) -> (..., 68, 3) through GeneFace++'s index table; 68 points pass through."""
    from data_recipes.faces.mapping import LM68_FROM_LM478

    n = points.shape[-2]
    if n == 68:
        return points
    if n in (468, 478):
        return points[..., list(LM68_FROM_LM478), :]
    raise ValueError(f"expected 68, 468 or 478 points, got {n}")


def idexp_lm68(space: ExpressionSpace, id_offset: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """(id_offset (L, 3) + basis . exp) x 10 at the 68 points: (T, 68, 3) float32 (GeneFace++'s idexp_lm3d)."""
    pts = (np.asarray(id_offset, np.float32)[None] + space.offsets(exp)) * LM_SCALE
    return to_lm68(pts).astype(np.float32)


def canonical_lm68(space: ExpressionSpace, id_offset: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """mean + id + exp (decimetres, no x10) at the 68 points: (T, 68, 3), the shape the overlay projects."""
    pts = space.mean[None] + np.asarray(id_offset, np.float32)[None] + space.offsets(exp)
    return to_lm68(pts).astype(np.float32)


# ---------------------------------------------------------------- LLE

def knn_indices(feats: np.ndarray, database: np.ndarray, k: int = LLE_K) -> np.ndarray:
    """(N, C), (M, C) -> (N, k) indices of the k nearest database rows (squared Euclidean), nearest first."""
    feats = np.asarray(feats, np.float64)
    db = np.asarray(database, np.float64)
    k = min(k, len(db))
    d = (feats ** 2).sum(1)[:, None] + (db ** 2).sum(1)[None] - 2.0 * feats @ db.T
    idx = np.argpartition(d, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(d, idx, 1).argsort(1, kind="stable")
    return np.take_along_axis(idx, order, 1)


def lle_weights(feat: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Sum-to-one weights w (N, K) minimising |feat - w . base| for feat (N, C), base (N, K, C).

    As the original: w_0 = 1 - sum(w_1..), and (w_1..) solve the normal equations of
    feat - base_0 = sum_j w_j (base_j - base_0). Where those equations are singular (duplicate
    neighbours, fewer independent neighbours than K - 1) the original's matrix inverse fails;
    here the minimum-norm least-squares solution is used instead (same result where it is regular).
    """
    feat = np.asarray(feat, np.float64)
    base = np.asarray(base, np.float64)
    n, k, _ = base.shape
    w = np.zeros((n, k))
    if k == 1:
        w[:, 0] = 1.0
        return w
    b = feat - base[:, 0]
    a = np.transpose(base[:, 1:] - base[:, :1], (0, 2, 1))  # (N, C, K-1)
    for i in range(n):
        x = np.linalg.lstsq(a[i], b[i], rcond=None)[0]
        w[i, 1:] = x
        w[i, 0] = 1.0 - x.sum()
    return w


def lle_project(feats: np.ndarray, database: np.ndarray, k: int = LLE_K) -> np.ndarray:
    """(N, C) -> (N, C): each row rebuilt from its k nearest database rows (GeneFace++ compute_LLE_projection)."""
    feats = np.asarray(feats, np.float64)
    db = np.asarray(database, np.float64)
    idx = knn_indices(feats, db, k)
    base = db[idx]
    w = lle_weights(feats, base)
    return np.einsum("nk,nkc->nc", w, base)


def lle_blend(pred: np.ndarray, database: np.ndarray, blend: float = LLE_BLEND, k: int = LLE_K) -> np.ndarray:
    """(T, 68, 3) predicted idexp landmarks, (N, 68, 3) training ones -> blend x LLE + (1 - blend) x pred."""
    pred = np.asarray(pred, np.float64)
    flat = pred.reshape(len(pred), -1)
    proj = lle_project(flat, np.asarray(database, np.float64).reshape(len(database), -1), k)
    return (blend * proj + (1.0 - blend) * flat).reshape(pred.shape).astype(np.float32)


# ---------------------------------------------------------------- normalisation

@dataclass(frozen=True)
class ConditionStats:
    """Per-number statistics of the subject's training landmarks (68, 3) each: mean, std (unbiased, as
    torch.std), and lower / upper = the 3 % / 97 % quantiles of the normalised training frames."""

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def condition_stats(train_lm68: np.ndarray, quantiles: tuple[float, float] = CLAMP_QUANTILES) -> ConditionStats:
    x = np.asarray(train_lm68, np.float64)
    if len(x) < 2:
        raise ValueError("normalisation needs at least two training frames")
    mean = x.mean(0)
    std = x.std(0, ddof=1)
    std = np.where(std > 0, std, 1.0)  # a constant coordinate would divide by zero; it normalises to 0
    z = (x - mean) / std
    lower, upper = np.quantile(z, quantiles[0], axis=0), np.quantile(z, quantiles[1], axis=0)
    return ConditionStats(*(a.astype(np.float32) for a in (mean, std, lower, upper)))


def normalise(lm68: np.ndarray, stats: ConditionStats, clamp: bool = True) -> np.ndarray:
    """(T, 68, 3) -> (T, 68, 3) normalised (and clamped) condition."""
    z = (np.asarray(lm68, np.float32) - stats.mean) / stats.std
    return np.clip(z, stats.lower, stats.upper) if clamp else z


def renderer_condition(pred_lm68: np.ndarray, train_lm68: np.ndarray, *, blend: float = LLE_BLEND, k: int = LLE_K,
                       stats: ConditionStats | None = None, clamp: bool = True) -> np.ndarray:
    """Predicted idexp landmarks (T, 68, 3) -> the renderer's (T, 204) condition: LLE blend, normalise, clamp."""
    stats = stats or condition_stats(train_lm68)
    mixed = lle_blend(pred_lm68, train_lm68, blend, k) if blend > 0 else np.asarray(pred_lm68, np.float32)
    return normalise(mixed, stats, clamp).reshape(len(mixed), -1).astype(np.float32)


# ---------------------------------------------------------------- per-clip scalars of the training data

def mouth_amplitude(canonical_lm68_frames: np.ndarray) -> float:
    """0.9 quantile over frames of the L1 distance between the outer lip centres (68 pts 51 / 57) of the
    canonical landmarks (mean + id + exp, decimetres, no x10), as Real3DPortrait's get_mouth_amp."""
    lm = np.asarray(canonical_lm68_frames, np.float64)
    a, b = MOUTH_AMP_POINTS_68
    d = np.abs(lm[:, a] - lm[:, b]).sum(-1)
    return float(np.quantile(d[np.isfinite(d)], 0.9))


def _erode_runs(x: np.ndarray) -> np.ndarray:
    """Keep one frame per run of ones: its middle; a run that reaches the end is dropped (as the original)."""
    out = np.zeros_like(x)
    start = None
    for i, v in enumerate(list(x) + [0]):
        if v == 1 and start is None:
            start = i
        elif v != 1 and start is not None:
            if i < len(x):
                out[start + (i - start) // 2] = 1
            start = None
    return out


def blink_units(canonical_lm68_frames: np.ndarray) -> np.ndarray:
    """(T,) int64 blink unit per frame (Real3DPortrait get_blink): eye opening (sum of four 68-point lid
    distances, L1 in xyz) below 0.85 x its 0.75 quantile, eroded to one frame per closed-eye run."""
    lm = np.asarray(canonical_lm68_frames, np.float64)
    d = sum(np.abs(lm[:, a] - lm[:, b]).sum(-1) for a, b in EYE_PAIRS_68)
    q = np.quantile(d, 0.75)
    closed = (d / q < 0.85).astype(np.int64) if q > 0 else np.zeros(len(d), np.int64)
    return _erode_runs(closed)


def mouth_opening(lm68: np.ndarray) -> np.ndarray:
    """(T, 68, 3) -> (T,) Euclidean distance between the inner lip centres (68 pts 62 / 66)."""
    lm = np.asarray(lm68, np.float64)
    a, b = INNER_LIP_POINTS_68
    return np.linalg.norm(lm[:, a] - lm[:, b], axis=-1)


# ---------------------------------------------------------------- shared space for per-clip bases

def shared_space(offsets: list[np.ndarray], mean: np.ndarray, max_dim: int = 64, variance_kept: float = 0.999,
                 name: str = "open-shared-pca") -> ExpressionSpace:
    """One expression basis for clips whose own bases differ (the open 3DMM learns one per clip).

    offsets: per training clip, (T_c, L, 3) expression deformations (exp_basis_c . exp_c, decimetres);
    PCA without centring (zero coefficients = zero deformation, as in BFM), components scaled by their
    RMS over the training frames so coefficients have about unit scale; up to `max_dim` components,
    fewer when `variance_kept` of the energy is reached first.
    """
    x = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in offsets], axis=0)
    x = x[np.isfinite(x).all(1)]
    if len(x) < 2:
        raise ValueError("a shared expression space needs at least two training frames")
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    energy = np.cumsum(s ** 2) / max((s ** 2).sum(), 1e-30)
    k = int(min(max_dim, np.searchsorted(energy, variance_kept) + 1, len(s)))
    scale = s[:k] / np.sqrt(len(x))
    basis = (vt[:k] * scale[:, None]).T.reshape(-1, 3, k)
    return ExpressionSpace(name=name, basis=basis.astype(np.float32), mean=np.asarray(mean, np.float32))
