"""Head crops: placement on real frames, invertibility (paste-back), stability, the stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_recipes.crops.head import (HeadCropConfig, apply, crop_frames, invert, paste_back, plan_crops,
                                     transform_from_box)


@pytest.fixture(scope="module")
def obama(demo_video):
    from data_recipes.faces import detect
    from data_recipes.media import read_video_frames

    frames = read_video_frames(demo_video)[:200:8]
    return frames, detect(frames)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_face_is_centred_in_real_crops(obama):
    frames, track = obama
    cfg = HeadCropConfig()
    A, report = plan_crops(track.boxes, frames.shape[1:3], cfg)
    assert A.shape == (len(frames), 2, 3) and A.dtype == np.float32
    assert report["mode"] == "fixed"                   # a seated speaker: one crop for the clip
    # face box centre mapped into the crop: horizontally centred, vertically at face_y
    centres = np.stack([(track.boxes[:, 0] + track.boxes[:, 2]) / 2, (track.boxes[:, 1] + track.boxes[:, 3]) / 2], 1)
    c = apply(A, centres[:, None])[:, 0] / cfg.size
    assert np.all(np.abs(c[:, 0] - 0.5) < 0.1) and abs(np.median(c[:, 0]) - 0.5) < 0.03
    assert np.all(np.abs(c[:, 1] - cfg.face_y) < 0.12)
    # the whole 478-point mesh lies inside the crop, and the face spans about 1 / scale of it
    lm = apply(A, track.landmarks478)
    assert lm.min() > 0 and lm.max() < cfg.size
    width = np.ptp(lm[..., 0], axis=-1) / cfg.size
    assert np.all(np.abs(width - 1 / cfg.scale) < 0.12)
    # the same mapping moves pixels: the nose tip pixel of the frame lands where `apply` says
    crops = crop_frames(frames[:2], A[:2], cfg.size)
    x, y = track.landmarks478[0, 4, :2]
    u, v = apply(A[0], np.array([[x, y]]))[0]
    patch_f = frames[0, int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3].mean(axis=(0, 1))
    s = A[0, 0, 0]
    patch_c = crops[0, int(v - 2 * s):int(v + 2 * s) + 1, int(u - 2 * s):int(u + 2 * s) + 1].mean(axis=(0, 1))
    assert np.abs(patch_f - patch_c).max() < 12


def test_crop_then_paste_back_restores_head_region(obama):
    frames, track = obama
    A, _ = plan_crops(track.boxes, frames.shape[1:3])
    crops = crop_frames(frames, A, 512)
    restored = paste_back(frames * 0, crops, A)           # paste into black frames: nothing leaks in
    head = np.round(track.boxes).astype(int)
    for f, r, (x1, y1, x2, y2) in zip(frames, restored, head):
        assert _psnr(f[y1:y2, x1:x2], r[y1:y2, x1:x2]) > 40
    # the crop square covers the region it came from and nothing outside it
    inv = invert(A[0])
    corners = apply(inv, np.array([[0, 0], [512, 512]], float))
    x0, y0 = np.ceil(corners[0] + 1).astype(int)
    x1, y1 = np.floor(corners[1] - 1).astype(int)
    assert _psnr(frames[0][y0:y1, x0:x1], restored[0][y0:y1, x0:x1]) > 38
    mask = np.ones(frames.shape[1:3], bool)
    mask[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = False
    assert restored[0][mask].max() == 0


def test_paste_back_with_mask_keeps_frame_outside_mask(obama):
    frames, track = obama
    A, _ = plan_crops(track.boxes[:1], frames.shape[1:3])
    crop = np.full((512, 512, 3), 255, np.uint8)
    mask = np.zeros((512, 512), np.float32)
    mask[200:300, 200:300] = 1
    out = paste_back(frames[:1], crop[None], A, masks=[mask])[0]
    inv = invert(A[0])
    (cx, cy), = apply(inv, np.array([[250.0, 250.0]]))
    assert (out[int(cy), int(cx)] == 255).all()
    far = apply(inv, np.array([[50.0, 50.0]]))[0].astype(int)
    np.testing.assert_array_equal(out[far[1], far[0]], frames[0][far[1], far[0]])


def test_transform_algebra():
    a = transform_from_box(10.0, 20.0, 256.0, 512)
    np.testing.assert_allclose(apply(a, np.array([[10.0, 20.0], [266.0, 276.0]])), [[0, 0], [512, 512]])
    pts = np.random.default_rng(0).uniform(0, 500, (7, 2))
    np.testing.assert_allclose(apply(invert(a), apply(a, pts)), pts, atol=1e-9)


def _synthetic_boxes(n, jitter, drift, seed=0):
    rng = np.random.default_rng(seed)
    cx = 640 + np.linspace(0, drift, n) + rng.normal(0, jitter, n)
    cy = 300 + rng.normal(0, jitter, n)
    w = 200 + rng.normal(0, jitter, n)
    return np.stack([cx - w / 2, cy - 0.6 * w, cx + w / 2, cy + 0.6 * w], 1)


def test_auto_mode_fixed_for_still_smooth_for_moving_heads():
    still = _synthetic_boxes(100, jitter=2.0, drift=0.0)
    A, rep = plan_crops(still, (720, 1280))
    assert rep["mode"] == "fixed" and np.ptp(A[:, :, 2], axis=0).max() == 0
    moving = _synthetic_boxes(200, jitter=3.0, drift=300.0)
    A, rep = plan_crops(moving, (720, 1280))
    assert rep["mode"] == "smooth"
    # the crop follows the drift but not the jitter: frame-to-frame motion of the crop centre is
    # far below the raw box jitter
    centre = apply(invert(A), np.array([[256.0, 256.0]]))[:, 0, 0]
    raw = (moving[:, 0] + moving[:, 2]) / 2
    assert np.std(np.diff(centre)) < 0.2 * np.std(np.diff(raw))
    assert abs((centre[-1] - centre[0]) - 300) < 60


def test_missing_faces_hold_and_no_face_fallback():
    boxes = _synthetic_boxes(20, 1.0, 0.0)
    boxes[5:12] = np.nan
    A, rep = plan_crops(boxes, (720, 1280), HeadCropConfig(mode="smooth"))
    assert np.isfinite(A).all() and rep["frames_without_face"] == 7
    A, rep = plan_crops(np.full((4, 4), np.nan), (100, 160))
    np.testing.assert_allclose(apply(A[0], np.array([[30.0, 0.0], [130.0, 100.0]])), [[0, 0], [512, 512]], atol=1e-3)
    assert rep["frames_without_face"] == 4


def test_clamping_keeps_crop_inside_frame():
    boxes = np.array([[0.0, 0.0, 150.0, 180.0]] * 3)       # face in the corner of a 400x400 frame
    A, rep = plan_crops(boxes, (400, 400))
    corners = apply(invert(A[0]), np.array([[0.0, 0.0], [512.0, 512.0]]))
    assert corners.min() >= -1e-6 and corners.max() <= 400 + 1e-6
    assert rep["outside_fraction"] < 1e-9


def test_head_crops_stage(isolated_dirs, demo_video):
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    recipe = Recipe(Cache(isolated_dirs / "cache"))
    clip = Clip("obama/s", demo_video, subject="obama", split="test", start=3.0, end=4.0)
    out = recipe.output(clip, "head_crops")
    A = out.array("transforms")
    meta = json.loads((out.folder / "meta.json").read_text())
    assert A.shape == (25, 2, 3) and meta["size"] == 512 and meta["mode"] in ("fixed", "smooth")
    crops = crop_frames(recipe.prepare(clip).iter_frames(), A, meta["size"])
    assert crops.shape == (25, 512, 512, 3) and crops.mean() > 20
