"""Segmentation: known-answer synthetic scene, real-clip sanity, plate helpers against numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_recipes.segmentation import (BACKGROUND, HEAD, TORSO, _masked_median, iter_labels, priors_from_landmarks,
                                       push_pull_fill, read_labels)


def _recipe(isolated_dirs):
    from bench.cache import Cache
    from data_recipes.recipe import Recipe

    return Recipe(Cache(isolated_dirs / "cache"))


def test_masked_median_matches_nanmedian():
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 256, (9, 13, 11, 3), dtype=np.uint8)
    valid = rng.random((9, 13, 11)) > 0.4
    valid[:, 0, 0] = False
    f = vals.astype(float)
    f[~np.broadcast_to(valid[..., None], f.shape)] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmedian(f, axis=0)
    got = _masked_median(vals, valid)
    ok = valid.any(0)
    np.testing.assert_array_equal(got[ok], np.clip(np.round(ref[ok]), 0, 255).astype(np.uint8))
    assert (got[0, 0] == 0).all()


def test_push_pull_keeps_known_and_fills_smoothly():
    rng = np.random.default_rng(1)
    img = np.zeros((40, 50, 3), np.uint8)
    img[:, :25] = (200, 50, 10)
    img[:, 25:] = (20, 60, 220)
    known = np.ones((40, 50), bool)
    known[10:30, 15:35] = False
    noisy = img.copy()
    noisy[~known] = rng.integers(0, 256, (int((~known).sum()), 3))
    out = push_pull_fill(noisy, known)
    np.testing.assert_array_equal(out[known], img[known])
    hole = out[~known].astype(int)
    assert (hole.min(0) >= np.minimum(img[0, 0], img[0, -1]) - 1).all()
    assert (hole.max(0) <= np.maximum(img[0, 0], img[0, -1]) + 1).all()
    # left part of the hole leans to the left colour, right part to the right colour
    assert out[20, 16, 0] > out[20, 33, 0] and out[20, 16, 2] < out[20, 33, 2]


def test_priors_geometry(demo_video):
    from data_recipes.crops.head import apply, plan_crops
    from data_recipes.faces import detect
    from data_recipes.media import read_video_frames

    frames = read_video_frames(demo_video)[:3]
    t = detect(frames)
    a, _ = plan_crops(t.boxes, frames.shape[1:3])
    lm = apply(a[0], t.landmarks478[0])
    p = priors_from_landmarks(lm, 512)
    assert p.face.sum() > 0.1 * 512 * 512
    assert not (p.face & p.background).any() and not (p.head & p.torso).any()
    chin = lm[152]
    assert p.above_jaw[int(chin[1]) - 5, int(chin[0])] and not p.above_jaw[int(chin[1]) + 5, int(chin[0])]
    assert p.background[5, 5] and p.background[5, -5]           # top corners
    assert p.torso_core[-3, 256] and not p.background[-3, 256]  # bottom centre is body


def _synthetic_scene(frames: np.ndarray, lm478: np.ndarray, shifts: np.ndarray):
    """A face cut out along its face-oval hull plus a solid 'torso' below it, moving over a static
    textured background: ground-truth labels and plate are known exactly."""
    import cv2

    from data_recipes.faces.mapping import FACE_OVAL_478

    h, w = frames.shape[1:3]
    rng = np.random.default_rng(3)
    noise = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    background = cv2.GaussianBlur(noise, (0, 0), 3)
    out, gt = [], []
    for frame, lm, dx in zip(frames, lm478, shifts):
        m = np.float32([[1, 0, dx], [0, 1, 0]])
        moved = cv2.warpAffine(frame, m, (w, h))
        pts = lm[list(FACE_OVAL_478), :2] + [dx, 0]
        face = np.zeros((h, w), np.uint8)
        cv2.fillPoly(face, [np.round(pts).astype(np.int32)], 1)
        chin = lm[152, :2] + [dx, 0]
        fw = np.ptp(pts[:, 0])
        torso = np.zeros((h, w), np.uint8)
        top = chin[1] - 0.05 * fw
        poly = np.array([[chin[0] - 0.3 * fw, top], [chin[0] + 0.3 * fw, top],
                         [chin[0] + 1.0 * fw, h], [chin[0] - 1.0 * fw, h]])
        cv2.fillPoly(torso, [np.round(poly).astype(np.int32)], 1)
        torso[face > 0] = 0
        img = background.copy()
        img[torso > 0] = (40, 90, 160)
        img[face > 0] = moved[face > 0]
        out.append(img)
        lab = np.zeros((h, w), np.uint8)
        lab[torso > 0] = TORSO
        lab[face > 0] = HEAD
        gt.append(lab)
    return np.stack(out), np.stack(gt), background


@pytest.mark.slow
def test_segmentation_stage_on_synthetic_scene_with_known_answer(tmp_path, isolated_dirs, demo_video):
    from data_recipes.clip import Clip
    from data_recipes.crops.head import crop_frames
    from data_recipes.faces import detect
    from data_recipes.media import read_video_frames, write_video
    from data_recipes.segmentation import background_for

    frames = read_video_frames(demo_video)[:50]
    t = detect(frames)
    shifts = np.round(60 * np.sin(np.linspace(0, 2 * np.pi, 50))).astype(float)
    video, gt, background = _synthetic_scene(frames, t.landmarks478, shifts)
    path = write_video(tmp_path / "scene.mkv", video, fps=25, lossless=True, audio=np.zeros(50 * 640, np.float32))
    recipe = _recipe(isolated_dirs)
    clip = Clip("scene", path, subject="s", split="test")
    from data_recipes.crops.head import HeadCropConfig

    recipe = type(recipe)(recipe.cache, configs={"head_crops": HeadCropConfig(mode="fixed")})
    out = recipe.output(clip, "segmentation")
    labels = read_labels(out.path("labels.npz"))
    transforms = recipe.output(clip, "head_crops").array("transforms")
    assert labels.shape == (50, 512, 512) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    gt_crop = crop_frames((np.repeat(g[..., None], 3, -1) * 100 for g in gt), transforms, 512)[..., 0]
    gt_crop = np.round(gt_crop / 100.0).astype(np.uint8)
    for lab in (BACKGROUND, HEAD, TORSO):
        a, b = labels == lab, gt_crop == lab
        iou = (a & b).sum() / (a | b).sum()
        assert iou > 0.85, (lab, iou)
    # the plate recovers the true background where the person moved away
    plate = background_for(out, transforms[0])
    true_bg = crop_frames([background], transforms[:1], 512)[0]
    known = ~(gt_crop == HEAD).all(0) & ~(gt_crop == TORSO).all(0)
    err = np.abs(plate.astype(int) - true_bg.astype(int))[known].mean()
    assert err < 6, err
    meta = json.loads(out.path("meta.json").read_text())
    assert meta["num_frames"] == 50 and abs(sum(meta["fractions"].values()) - 1) < 1e-6


def test_segmentation_stage_on_real_clip(isolated_dirs, demo_video):
    from data_recipes.clip import Clip
    from data_recipes.crops.head import apply

    recipe = _recipe(isolated_dirs)
    clip = Clip("obama/seg", demo_video, subject="obama", split="test", start=6.0, end=7.2)
    out = recipe.output(clip, "segmentation")
    labels = read_labels(out.path("labels.npz"))
    assert labels.shape == (30, 512, 512)
    # compact: far below the raw label bytes
    assert out.path("labels.npz").stat().st_size < 0.05 * labels.nbytes
    meta = json.loads(out.path("meta.json").read_text())
    fr = meta["fractions"]
    assert 0.15 < fr["head"] < 0.5 and 0.1 < fr["torso"] < 0.5 and 0.15 < fr["background"] < 0.6
    faces = recipe.output(clip, "faces")
    a = recipe.output(clip, "head_crops").array("transforms")
    lm = apply(a, faces.array("landmarks478"))
    for i in (0, 15, 29):
        lab = labels[i]
        inner = np.round(lm[i, [1, 4, 13, 14, 33, 263, 168], :2]).astype(int)   # nose, lips, eyes
        assert (lab[inner[:, 1], inner[:, 0]] == HEAD).all()
        assert lab[8, 8] == BACKGROUND and lab[8, -8] == BACKGROUND             # top corners
        assert lab[-4, 256] == TORSO                                            # bottom centre
        chin = np.round(lm[i, 152, :2]).astype(int)
        assert lab[chin[1] + 25, chin[0]] == TORSO                              # neck under the chin
    # background plate image in crop space
    import cv2

    bg = cv2.imread(str(out.path("background.png")))
    assert bg.shape == (512, 512, 3)
    assert len(list(iter_labels(out.path("labels.npz"), 10, 12))) == 2
