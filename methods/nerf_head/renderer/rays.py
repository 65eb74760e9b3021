"""Cameras, rays, the occupancy grid and ray marching of the head field, in plain PyTorch.

Camera (GeneFace++ data_gen/runs/binarizer_nerf.py + modules/radnerfs/utils.py):
- a 3DMM pose in the Deep3DFaceRecon convention (X' = R X + t, R = Rz Ry Rx, camera 10 units away on
  +z looking down -z) becomes an OpenGL camera-to-world [R^T | -R^T t'] with t' = (t - (0, 0, 10)) / 10,
  then instant-ngp's axes (`nerf_matrix_to_ngp`: rows (y, z, x), camera y and z columns negated,
  translation x 4 `camera_scale`): world = model / 10 x 4 after the permutation;
- intrinsics fx = fy = 1015 x (H / 2) / 112 at render height H (principal point at the centre for a
  centred crop; any crop transform moves it);
- a ray per pixel centre (+0.5), OpenCV camera directions ((i - cx) / fx, (j - cy) / fy, 1), normalised,
  rotated by the c2w.
Marching (raymarching.cu, one cascade for bound 1): AABB x [-1, 1], y [-0.5, 0.5], z [-1, 1], near
clamped to min_near 0.05; step dt = clamp(t dt_gamma, 2 sqrt(3) / G, 2 sqrt(3) / G) = 2 sqrt(3) / G for
a G^3 grid; a sample is taken only in occupied cells, at most `max_steps` (16) per ray; alpha =
1 - exp(-sigma dt); a ray stops contributing after transmittance < T_thresh (1e-4).
Occupancy (renderer.py update_extra_state): density at every cell centre jittered by half a cell,
with one random training condition; 6-neighbour max dilation; EMA max(decay x old, new) with decay
0.95 where both are valid (cells no training camera sees are -1, `mark_untrained_grid`); threshold
min(mean density, 10); packed into a Morton-ordered bitfield.

Deviation (pure PyTorch, no per-ray loops): candidate samples lie on a regular lattice
t = near + (k + u) dt along each ray; the first `max_steps` that fall in occupied cells are kept. The
CUDA kernel jumps to the next cell boundary across empty space, which shifts the phase of later samples
by a fraction of dt; the sample spacing, the cap and the occupied-only rule are the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch

FOCAL_224 = 1015.0
CENTER_224 = 112.0
CAMERA_DISTANCE = 10.0
CAMERA_SCALE = 4.0


# ------------------------------------------------------------------------------------ camera


def euler_to_rotation(euler: np.ndarray) -> np.ndarray:
    """(T, 3) (pitch, yaw, roll) radians -> (T, 3, 3) R = Rz Ry Rx (Deep3D / GeneFace++ compute_rotation,
    column-vector form)."""
    e = np.asarray(euler, np.float64).reshape(-1, 3)
    x, y, z = e[:, 0], e[:, 1], e[:, 2]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rx = np.stack([one, zero, zero, zero, np.cos(x), -np.sin(x), zero, np.sin(x), np.cos(x)], -1).reshape(-1, 3, 3)
    ry = np.stack([np.cos(y), zero, np.sin(y), zero, one, zero, -np.sin(y), zero, np.cos(y)], -1).reshape(-1, 3, 3)
    rz = np.stack([np.cos(z), -np.sin(z), zero, np.sin(z), np.cos(z), zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def poses_from_3dmm(rotation: np.ndarray, trans: np.ndarray, camera_distance: float = CAMERA_DISTANCE,
                    camera_scale: float = CAMERA_SCALE) -> np.ndarray:
    """(T, 3, 3) R and (T, 3) t of the threedmm stage -> (T, 4, 4) float32 camera-to-world in the
    renderer's (instant-ngp) world."""
    rot = np.asarray(rotation, np.float64).reshape(-1, 3, 3)
    t = np.asarray(trans, np.float64).reshape(-1, 3).copy()
    t[:, 2] -= camera_distance
    t /= camera_distance
    rinv = np.transpose(rot, (0, 2, 1))
    c2w = np.zeros((rot.shape[0], 4, 4))
    c2w[:, :3, :3] = rinv
    c2w[:, :3, 3] = -(rinv @ t[:, :, None])[:, :, 0]
    c2w[:, 3, 3] = 1.0
    out = np.zeros_like(c2w)
    for new_row, old_row in enumerate((1, 2, 0)):
        out[:, new_row, 0] = c2w[:, old_row, 0]
        out[:, new_row, 1] = -c2w[:, old_row, 1]
        out[:, new_row, 2] = -c2w[:, old_row, 2]
        out[:, new_row, 3] = c2w[:, old_row, 3] * camera_scale
    out[:, 3, 3] = 1.0
    return out.astype(np.float32)


def model_to_world(points: np.ndarray, camera_distance: float = CAMERA_DISTANCE,
                   camera_scale: float = CAMERA_SCALE) -> np.ndarray:
    """3DMM model-space points (..., 3) -> renderer world (the same map the cameras use)."""
    p = np.asarray(points, np.float64) / camera_distance * camera_scale
    return np.stack([p[..., 1], p[..., 2], p[..., 0]], -1)


def geneface_intrinsics(size: int) -> np.ndarray:
    """(fx, fy, cx, cy) of GeneFace++'s camera for a centred square frame of `size` pixels."""
    f = FOCAL_224 * (size / 2) / CENTER_224
    return np.array([f, f, size / 2, size / 2], dtype=np.float32)


def intrinsics_in_crop(focal: float, cx: float, cy: float, transform: np.ndarray, crop_size: int,
                       render_size: int) -> np.ndarray:
    """Intrinsics of the full frame's camera seen through a head-crop similarity (x_crop = s x + t,
    data_recipes.crops.head) and resized from the crop to the render size: (fx, fy, cx, cy)."""
    a = np.asarray(transform, np.float64)
    s = a[0, 0] * render_size / crop_size
    return np.array([focal * s, focal * s, (cx * a[0, 0] + a[0, 2]) * render_size / crop_size,
                     (cy * a[1, 1] + a[1, 2]) * render_size / crop_size], dtype=np.float32)


def scale_intrinsics(intrinsics, factor: float):
    return np.asarray(intrinsics, np.float32) * np.float32(factor)


def pixel_rays(c2w: torch.Tensor, intrinsics, height: int, width: int,
               inds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres: c2w (4, 4), intrinsics (fx, fy, cx, cy); inds (N,) flat pixel
    indices (row-major) or None for all. Returns origins and unit directions, (N, 3) each."""
    fx, fy, cx, cy = [float(v) for v in intrinsics]
    dev = c2w.device
    if inds is None:
        inds = torch.arange(height * width, device=dev)
    i = (inds % width).float() + 0.5
    j = torch.div(inds, width, rounding_mode="floor").float() + 0.5
    d = torch.stack([(i - cx) / fx, (j - cy) / fy, torch.ones_like(i)], -1)
    d = d / d.norm(dim=-1, keepdim=True)
    rays_d = d @ c2w[:3, :3].t()
    rays_o = c2w[:3, 3].expand_as(rays_d)
    return rays_o, rays_d


def bg_coords(height: int, width: int, device=None) -> torch.Tensor:
    """(H W, 2) pixel coordinates in [-1, 1]: (row, column) as the original's get_bg_coords."""
    r = torch.arange(height, device=device) / (height - 1) * 2 - 1
    c = torch.arange(width, device=device) / (width - 1) * 2 - 1
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    return torch.stack([rr.reshape(-1), cc.reshape(-1)], -1)


def near_far_from_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor,
                       min_near: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test; rays that miss get near = far = float max (the kernel's value)."""
    inv = 1.0 / rays_d
    t0 = (aabb[:3] - rays_o) * inv
    t1 = (aabb[3:] - rays_o) * inv
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    miss = near > far
    big = torch.finfo(rays_o.dtype).max
    near = torch.where(miss, torch.full_like(near, big), near.clamp(min=min_near))
    far = torch.where(miss, torch.full_like(far, big), far)
    return near, far


# ------------------------------------------------------------------------------ occupancy grid


def _expand_bits(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64)
    v = (v * 0x00010001) & 0xFF0000FF
    v = (v * 0x00000101) & 0x0F00F00F
    v = (v * 0x00000011) & 0xC30C30C3
    v = (v * 0x00000005) & 0x49249249
    return v


def morton3d(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return (_expand_bits(x) | (_expand_bits(y) << 1) | (_expand_bits(z) << 2)).astype(np.int64)


def morton_table(grid_size: int) -> np.ndarray:
    """(G, G, G) int64: Morton index of cell (x, y, z) (the density grid's storage order)."""
    ax = np.arange(grid_size)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    return morton3d(x, y, z)


def cell_centres(grid_size: int, bound: float = 1.0) -> torch.Tensor:
    """(G^3, 3) cell positions 2 c / (G - 1) - 1 scaled by (bound - half cell), ordered x, y, z (ij)."""
    ax = torch.arange(grid_size, dtype=torch.float32)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    xyz = torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], -1)
    half = bound / grid_size
    return (2 * xyz / (grid_size - 1) - 1) * (bound - half)


def dilate_cross(dense: torch.Tensor) -> torch.Tensor:
    """Max over each cell and its 6 neighbours (morton3D_dilation), on a dense (G, G, G) grid."""
    out = dense.clone()
    for dim in range(3):
        for shift in (1, -1):
            rolled = torch.roll(dense, shifts=shift, dims=dim)
            idx = [slice(None)] * 3
            idx[dim] = slice(0, 1) if shift == 1 else slice(-1, None)
            rolled[tuple(idx)] = -float("inf")   # no wrap-around
            out = torch.maximum(out, rolled)
    return out


def packbits(morton_grid: torch.Tensor, thresh: float) -> torch.Tensor:
    """(N,) density in Morton order -> (N / 8,) uint8, bit i of byte n = cell 8 n + i > thresh."""
    bits = (morton_grid > thresh).view(-1, 8).to(torch.uint8)
    weights = (2 ** torch.arange(8, device=bits.device)).to(torch.uint8)
    return (bits * weights).sum(-1).to(torch.uint8)


def unpack_dense(bitfield: torch.Tensor, morton: torch.Tensor) -> torch.Tensor:
    """Bitfield -> dense (G, G, G) bool via the Morton table."""
    shifts = torch.arange(8, device=bitfield.device, dtype=torch.uint8)
    bits = ((bitfield.unsqueeze(-1) >> shifts) & 1).reshape(-1).bool()
    return bits[morton]


# ---------------------------------------------------------------------------------- marching


def march(rays_o: torch.Tensor, rays_d: torch.Tensor, nears: torch.Tensor, fars: torch.Tensor,
          occupied: torch.Tensor, *, bound: float, max_steps: int, perturb: bool,
          generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Samples of every ray in occupied cells (at most `max_steps`).

    occupied: dense (G, G, G) bool. Returns xyzs (N, S, 3), ts (N, S) (distance after the sample, for
    depth), dt (scalar), valid (N, S) bool, with S = max_steps.
    """
    n = rays_o.shape[0]
    g = occupied.shape[0]
    dev = rays_o.device
    dt = 2 * math.sqrt(3) / g
    hit = fars < torch.finfo(fars.dtype).max
    length = torch.where(hit, fars - nears, torch.zeros_like(fars))
    k_max = max(1, int(math.ceil(float(length.max().item()) / dt)) + 1) if n else 1
    if perturb:
        u = torch.rand(n, device=dev, generator=generator)
    else:
        u = torch.zeros(n, device=dev)
    start = torch.where(hit, nears, torch.zeros_like(nears))
    k = torch.arange(k_max, device=dev, dtype=rays_o.dtype)
    t = start[:, None] + (k[None, :] + u[:, None]) * dt                      # (N, K)
    inside = (t < fars[:, None]) & hit[:, None]
    pts = (rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]).clamp(-bound, bound)
    cell = ((0.5 * (pts / bound + 1) * g).clamp(0, g - 1)).long()
    occ = occupied[cell[..., 0], cell[..., 1], cell[..., 2]] & inside
    rank = occ.long().cumsum(-1)
    keep = occ & (rank <= max_steps)
    # pack the kept candidates into the first S slots of each ray, in order
    slot = torch.where(keep, rank - 1, torch.full_like(rank, max_steps))     # dump slot S
    xyzs = torch.zeros(n, max_steps + 1, 3, device=dev, dtype=rays_o.dtype)
    ts = torch.zeros(n, max_steps + 1, device=dev, dtype=rays_o.dtype)
    valid = torch.zeros(n, max_steps + 1, device=dev, dtype=torch.bool)
    xyzs.scatter_(1, slot[..., None].expand(-1, -1, 3), pts)
    ts.scatter_(1, slot, t + dt)
    valid.scatter_(1, slot, keep)
    return {"xyzs": xyzs[:, :max_steps], "ts": ts[:, :max_steps], "valid": valid[:, :max_steps],
            "dt": torch.tensor(dt, device=dev)}


def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, dt: torch.Tensor, valid: torch.Tensor,
              ts: torch.Tensor, t_thresh: float) -> dict[str, torch.Tensor]:
    """Front-to-back compositing of (N, S) samples. A sample counts while the transmittance before it
    is >= t_thresh (the kernel's break after T < thresh). Returns weights_sum (N,), image (N, 3),
    depth (N,), counted (N, S) bool."""
    alpha = torch.where(valid, 1 - torch.exp(-sigmas * dt), torch.zeros_like(sigmas))
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    # the kernel adds sample i, then stops once T < t_thresh: sample i counts iff the transmittance
    # before it is still >= t_thresh (T only falls along the ray)
    counted = valid & (trans >= t_thresh)
    w = torch.where(counted, alpha * trans, torch.zeros_like(alpha))
    return {"weights_sum": w.sum(1), "image": (w[..., None] * rgbs).sum(1), "depth": (w * ts).sum(1),
            "counted": counted}
