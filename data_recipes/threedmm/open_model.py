"""The open default morphable model: MediaPipe's canonical face + bases learned from the clip itself.

It is NOT the Basel Face Model. What it is, exactly:
- mean shape: MediaPipe's canonical face mesh (468 vertices, Apache-2.0, inside the Face Landmarker
  bundle the suite ships), converted from centimetres to decimetres and recentred on its vertex
  centroid (as GeneFace++ recentres BFM); vertex i is MediaPipe landmark i, so every one of the 468
  landmarks has an exact correspondence;
- pose normalisation: each frame's 468 MediaPipe landmarks (x, y in pixels, z = MediaPipe's relative
  depth times the frame width, flipped to y up / z towards the viewer) are aligned to the canonical
  mean by a weighted similarity Procrustes on MediaPipe's own rigid "procrustes landmark basis"
  (the points and weights its geometry pipeline uses for head pose), so mouth and jaw motion do not
  move the alignment;
- identity basis (K_id = 4): the clip's mean aligned shape minus the canonical mean (coefficient 1 =
  this person's average face) and three axis stretches of the canonical mean (x, y, z; coefficient
  1 = 10 %), which let the perspective fit correct proportions that MediaPipe's weak-perspective depth
  gets wrong;
- expression basis (K_exp <= 32): PCA of the aligned shapes minus their mean, each component scaled
  by its standard deviation over the clip (coefficients have unit variance, like BFM's basis scaled
  by its eigenvalues), keeping components up to 99.9 % of the variance.
Consequences, stated plainly: coefficients of two clips live in different bases (fine for a
person-specific renderer trained and driven on one subject's clip; not comparable across subjects),
and identity is one global vector per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_recipes.threedmm.model import MorphableModel

CM_TO_DM = 0.1
STRETCH = 0.1  # identity stretch modes: coefficient 1 = 10 % along one axis


@dataclass(frozen=True)
class OpenModelConfig:
    """Open model options: max expression components and the variance fraction they must keep."""

    num_exp: int = 32
    variance_kept: float = 0.999


def weighted_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, T) minimising sum_i w_i |s R src_i + T - dst_i|^2 (Umeyama, no reflections).

    src, dst: (N, 3); weights: (N,) >= 0. R is a proper rotation (det +1).
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag(d) @ vt
    var_s = float(w @ (a * a).sum(axis=1))
    scale = float((sig * d).sum() / var_s)
    return scale, rot, mu_d - scale * rot @ mu_s


def screen_points(landmarks478: np.ndarray, width: int) -> np.ndarray:
    """(T, 478, 3) FaceTrack landmarks -> (T, 468, 3) float64 pixels with y up and z towards the viewer.

    MediaPipe's z is normalised like x (by the frame width) and grows away from the camera.
    """
    lm = np.asarray(landmarks478[:, :468], dtype=np.float64)
    return np.stack([lm[..., 0], -lm[..., 1], -lm[..., 2] * width], axis=-1)


def align_to_canonical(points: np.ndarray, canonical: np.ndarray, ids: np.ndarray, weights: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pose-normalise frames: points (T, N, 3) screen space -> (shapes (T, N, 3) in model units,
    scale (T,), rotation (T, 3, 3), offset (T, 3)) with points ~ scale * R @ shape + offset."""
    t = len(points)
    shapes = np.empty_like(points, dtype=np.float64)
    scale, rot, off = np.empty(t), np.empty((t, 3, 3)), np.empty((t, 3))
    for i in range(t):
        s, r, o = weighted_similarity(canonical[ids], points[i, ids], weights)
        scale[i], rot[i], off[i] = s, r, o
        shapes[i] = ((points[i] - o) @ r) / s
    return shapes, scale, rot, off


def canonical_mean(mesh) -> np.ndarray:
    """(468, 3) float64 canonical vertices in decimetres, recentred on their centroid."""
    v = np.asarray(mesh.vertices, np.float64) * CM_TO_DM
    return v - v.mean(axis=0, keepdims=True)


def build_open_model(landmarks478: np.ndarray, present: np.ndarray, width: int, mesh,
                     config: OpenModelConfig = OpenModelConfig()) -> tuple[MorphableModel, dict]:
    """The clip's open morphable model and the per-frame alignment (used to initialise the fit).

    landmarks478: (T, 478, 3) FaceTrack landmarks; present: (T,) bool; mesh: `CanonicalMesh`.
    Returns (model, init) with init = {"scale", "rotation", "offset"} for the present frames (NaN elsewhere).
    """
    present = np.asarray(present, bool)
    if present.sum() < 2:
        raise ValueError(f"the open model needs at least 2 frames with a face, got {int(present.sum())}")
    mean = canonical_mean(mesh)
    ids, weights = np.asarray(mesh.procrustes_ids), np.asarray(mesh.procrustes_weights, np.float64)
    pts = screen_points(landmarks478[present], width)
    shapes, scale, rot, off = align_to_canonical(pts, mean, ids, weights)
    avg = shapes.mean(axis=0)
    id_cols = [avg - mean] + [mean * np.eye(3)[k] * STRETCH for k in range(3)]
    id_basis = np.stack(id_cols, axis=-1)
    resid = (shapes - avg).reshape(len(shapes), -1)
    sig, vt = _principal_axes(resid)
    var = sig ** 2
    total = var.sum()
    if total <= 0:
        keep = 1
    else:
        keep = int(np.searchsorted(np.cumsum(var) / total, config.variance_kept) + 1)
    keep = max(1, min(keep, config.num_exp, len(var)))
    std = sig[:keep] / np.sqrt(max(len(shapes) - 1, 1))
    exp_basis = (vt[:keep] * std[:, None]).T.reshape(mean.shape[0], 3, keep)
    n_lm = mean.shape[0]
    model = MorphableModel(
        name="mediapipe-canonical-clip-pca", mean=mean.astype(np.float32), id_basis=id_basis.astype(np.float32),
        exp_basis=exp_basis.astype(np.float32), landmark_vertex=np.arange(n_lm, dtype=np.int64),
        landmark_valid=np.ones(n_lm, bool), keypoint_mode="mediapipe",
        source="MediaPipe canonical face mesh (Face Landmarker bundle, Apache-2.0) + identity/expression "
               "bases learned from this clip's pose-normalised landmarks (not BFM)",
        info={"variance_kept": float(np.cumsum(var)[keep - 1] / total) if total > 0 else 1.0,
              "num_frames_used": int(len(shapes)), "procrustes_points": int(len(ids))},
    )
    full = lambda a: _scatter(a, present)  # noqa: E731
    return model, {"scale": full(scale), "rotation": full(rot), "offset": full(off)}


def _principal_axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors of (N, D) x, via torch (numpy's threaded LAPACK SVD
    of a 500 x 1404 matrix took 11 s on a busy 2-core machine, torch 0.2 s at 1 thread). Torch's
    thread count is the prepare pool's (`bench.threads`): 1 per worker when workers fill the cores."""
    import torch

    _, sig, vt = torch.linalg.svd(torch.from_numpy(np.ascontiguousarray(x, np.float64)), full_matrices=False)
    return sig.numpy(), vt.numpy()


def _scatter(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.full((len(present),) + values.shape[1:], np.nan)
    out[present] = values
    return out
