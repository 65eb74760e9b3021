"""A linear morphable model restricted to the points the fit sees, and the camera it is seen through.

Coordinates follow Deep3DFaceRecon / GeneFace++ (deep_3drecon_models/bfm.py): model space in
decimetres, x to the image right for a frontal face, y up, z towards the viewer. A frame's pose is
`X' = R X + t` with R = Rz(roll) Ry(yaw) Rx(pitch) (GeneFace++'s `compute_rotation`, column-vector
form; the original stores the transpose and multiplies row vectors). The camera sits on the +z axis
at `camera_distance` (10 dm) looking towards -z: depth = camera_distance - z', and
`u = cx + f x' / depth`, `v = cy - f y' / depth` in image pixels (v down). GeneFace++ fits in a
224 x 224 frame with f = 1015, c = 112 and scales landmarks into it; here f = 1015 * H / 224 and
c = (W / 2, H / 2) in the frame's own pixels, which is the same camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

KeypointMode = Literal["mediapipe", "lm68"]

GENEFACE_FOCAL_224 = 1015.0
GENEFACE_CAMERA_DISTANCE = 10.0
GENEFACE_FRAME = 224.0


@dataclass(frozen=True)
class MorphableModel:
    """Landmark-level morphable model.

    mean: (V, 3) float32 mean shape of the model's vertices (decimetres);
    id_basis: (V, 3, K_id) float32, exp_basis: (V, 3, K_exp) float32 (columns scaled so that
        coefficients are about unit variance);
    landmark_vertex: (L,) int64 vertex of each target landmark (L = 468 MediaPipe points for
        keypoint_mode "mediapipe", 68 iBUG points for "lm68"); landmark_valid: (L,) bool, False where
        the model has no vertex for that landmark (its loss weight is zero);
    name / source: what the model is and where it came from (written to meta.json).
    """

    name: str
    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    landmark_vertex: np.ndarray
    landmark_valid: np.ndarray
    keypoint_mode: KeypointMode
    source: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.mean.shape[0]
        if self.mean.shape != (v, 3) or self.id_basis.shape[:2] != (v, 3) or self.exp_basis.shape[:2] != (v, 3):
            raise ValueError(f"inconsistent model shapes: mean {self.mean.shape}, id {self.id_basis.shape}, "
                             f"exp {self.exp_basis.shape}")
        if self.landmark_vertex.shape != self.landmark_valid.shape:
            raise ValueError("landmark_vertex and landmark_valid differ in shape")
        if self.landmark_valid.any() and self.landmark_vertex[self.landmark_valid].max() >= v:
            raise ValueError("landmark_vertex points outside the model")

    @property
    def num_id(self) -> int:
        return int(self.id_basis.shape[2])

    @property
    def num_exp(self) -> int:
        return int(self.exp_basis.shape[2])

    @property
    def num_landmarks(self) -> int:
        return int(self.landmark_vertex.shape[0])

    def landmark_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean (L, 3), id_basis (L, 3, K_id), exp_basis (L, 3, K_exp)) at the target landmarks
        (rows of invalid landmarks point at vertex 0 and must carry zero loss weight)."""
        idx = np.where(self.landmark_valid, self.landmark_vertex, 0)
        return self.mean[idx], self.id_basis[idx], self.exp_basis[idx]

    def shape(self, id_coeff: np.ndarray, exp_coeff: np.ndarray) -> np.ndarray:
        """(T, V, 3) shapes for id (K_id,) or (T, K_id) and exp (T, K_exp)."""
        id_coeff = np.broadcast_to(np.asarray(id_coeff, np.float32), (len(exp_coeff), self.num_id))
        return (self.mean[None] + np.einsum("vck,tk->tvc", self.id_basis, id_coeff)
                + np.einsum("vck,tk->tvc", self.exp_basis, np.asarray(exp_coeff, np.float32)))


@dataclass(frozen=True)
class Camera:
    """Pinhole camera of the fit, in the frame's pixels (see the module docstring for conventions)."""

    focal: float
    cx: float
    cy: float
    camera_distance: float = GENEFACE_CAMERA_DISTANCE
    width: int = 0
    height: int = 0

    @classmethod
    def geneface(cls, width: int, height: int, focal_224: float = GENEFACE_FOCAL_224,
                 camera_distance: float = GENEFACE_CAMERA_DISTANCE) -> "Camera":
        """GeneFace++'s camera (f = 1015 in a 224-pixel frame) scaled to a width x height frame."""
        return cls(focal=focal_224 * height / GENEFACE_FRAME, cx=width / 2.0, cy=height / 2.0,
                   camera_distance=camera_distance, width=width, height=height)

    def intrinsics(self) -> np.ndarray:
        """(3, 3) K for OpenCV camera coordinates (x right, y down, z forward); see `opencv_extrinsics`."""
        return np.array([[self.focal, 0, self.cx], [0, self.focal, self.cy], [0, 0, 1]], dtype=np.float64)


def _is_torch(x) -> bool:
    # without importing torch for numpy callers
    return type(x).__module__.split(".")[0] == "torch"


def euler_to_rotation(euler):
    """(..., 3) radians (pitch about x, yaw about y, roll about z) -> (..., 3, 3) R = Rz Ry Rx.

    Works on numpy arrays and torch tensors (torch keeps gradients).
    """
    is_torch = _is_torch(euler)
    if is_torch:
        import torch
    lib = torch if is_torch else np
    a, b, c = euler[..., 0], euler[..., 1], euler[..., 2]
    ca, sa, cb, sb, cc, sc = lib.cos(a), lib.sin(a), lib.cos(b), lib.sin(b), lib.cos(c), lib.sin(c)
    rows = [
        [cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa],
        [sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa],
        [-sb, cb * sa, cb * ca],
    ]
    if is_torch:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotation_to_euler(rot: np.ndarray) -> np.ndarray:
    """Inverse of `euler_to_rotation` for |yaw| < 90 degrees: (..., 3, 3) -> (..., 3) radians."""
    rot = np.asarray(rot, dtype=np.float64)
    pitch = np.arctan2(rot[..., 2, 1], rot[..., 2, 2])
    yaw = np.arctan2(-rot[..., 2, 0], np.hypot(rot[..., 0, 0], rot[..., 1, 0]))
    roll = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])
    return np.stack([pitch, yaw, roll], axis=-1)


def project(points, rot, trans, camera: Camera):
    """Project model points: (T, L, 3), rot (T, 3, 3), trans (T, 3) -> (T, L, 2) pixels (u right, v down).

    numpy or torch (same type as `points`).
    """
    u, v = project_uv(points, rot, trans, camera)
    if _is_torch(points):
        import torch

        return torch.stack([u, v], dim=-1)
    return np.stack([u, v], axis=-1)


def project_uv(points, rot, trans, camera: Camera):
    """`project` as two (T, L) arrays (u, v)."""
    # rows of R X + t written out: a batched matmul with an inner size of 3 is slower on CPU
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    r = rot[..., None, :, :]
    t = trans[..., None, :]
    px = r[..., 0, 0] * x + r[..., 0, 1] * y + r[..., 0, 2] * z + t[..., 0]
    py = r[..., 1, 0] * x + r[..., 1, 1] * y + r[..., 1, 2] * z + t[..., 1]
    pz = r[..., 2, 0] * x + r[..., 2, 1] * y + r[..., 2, 2] * z + t[..., 2]
    inv_depth = 1.0 / (camera.camera_distance - pz)
    u = camera.cx + camera.focal * px * inv_depth
    v = camera.cy - camera.focal * py * inv_depth
    return u, v


def opencv_extrinsics(rot: np.ndarray, trans: np.ndarray, camera_distance: float) -> np.ndarray:
    """(T, 4, 4) model -> OpenCV camera transforms: with K = Camera.intrinsics(), K @ (E @ [X; 1])[:3]
    gives the same pixels as `project` (the y and z axes flip and the camera sits at z = d)."""
    flip = np.diag([1.0, -1.0, -1.0])
    out = np.zeros(rot.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :3] = flip @ rot
    shifted = np.asarray(trans, np.float64) - np.array([0.0, 0.0, camera_distance])
    out[..., :3, 3] = shifted @ flip.T
    out[..., 3, 3] = 1.0
    return out
