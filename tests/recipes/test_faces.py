"""Face tracking on real frames: the FaceTrack contract, the 478 -> 68 mapping, boxes and gaps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_recipes.faces import FaceTrack
from data_recipes.faces.boxes import box_from_landmarks478, runs, smooth_boxes
from data_recipes.faces.mapping import LM68_FROM_LM478, lm68_from_lm478
from data_recipes.faces.track import fill_gaps
from tests.conftest import first_frames


@pytest.fixture(scope="module")
def obama_frames(demo_video):
    return first_frames(demo_video, 40)


@pytest.fixture(scope="module")
def obama_track(obama_frames):
    from data_recipes.faces import detect

    return detect(obama_frames)


def test_detect_contract_on_real_frames(obama_frames, obama_track):
    t = obama_track
    n, h, w = len(obama_frames), obama_frames.shape[1], obama_frames.shape[2]
    assert isinstance(t, FaceTrack) and len(t) == n
    assert t.boxes.shape == (n, 4) and t.boxes.dtype == np.float32
    assert t.landmarks478.shape == (n, 478, 3) and t.landmarks68.shape == (n, 68, 2)
    assert t.pose.shape == (n, 4, 4) and t.blendshapes.shape == (n, 52)
    assert t.present.all() and not t.interpolated.any()
    # landmarks in pixels inside the frame; the mesh's 68 subset is exactly the mapped points
    assert (t.landmarks478[..., 0] > 0).all() and (t.landmarks478[..., 0] < w).all()
    assert (t.landmarks478[..., 1] > 0).all() and (t.landmarks478[..., 1] < h).all()
    np.testing.assert_array_equal(t.landmarks68, t.landmarks478[:, list(LM68_FROM_LM478), :2])
    # pose: a rigid transform (rotation block orthonormal), blendshapes are probabilities
    rot = t.pose[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=2e-2)
    assert (t.blendshapes >= 0).all() and (t.blendshapes <= 1).all()


def test_mapped_68_points_follow_300w_geometry(obama_track):
    lm = obama_track.landmarks68.mean(axis=0)  # a frontal speaker: average over frames
    x, y = lm[:, 0], lm[:, 1]
    mouth_cx = lm[48:60, 0].mean()
    assert x[48] < mouth_cx < x[54]                        # mouth corners left / right of centre
    assert y[57] > y[51]                                   # lower lip below upper lip
    assert y[66] >= y[62]                                  # inner lower lip below inner upper lip
    assert lm[36:48, 1].max() < lm[48:68, 1].min()         # eyes above the mouth
    assert lm[17:27, 1].mean() < lm[36:48, 1].mean()       # brows above the eyes
    assert np.all(np.diff(x[0:9]) > 0) and np.all(np.diff(x[8:17]) > 0)  # jaw runs left to right
    assert y[8] == lm[0:17, 1].max()                       # point 8 is the chin, lowest jaw point
    assert x[36] < x[39] < x[42] < x[45]                   # eye corners ordered left to right
    assert np.all(np.diff(y[27:31]) > 0)                   # nose bridge runs downward
    assert x[31] < x[33] < x[35]                           # nostrils left to right
    assert lm[36:42, 0].mean() < x[30] < lm[42:48, 0].mean()  # nose tip between the eyes


def test_box_is_detector_like_and_agrees_with_yunet(shared_data, obama_frames, obama_track):
    """The derived box should match an independent WIDER-FACE detector (YuNet) on the face."""
    import cv2

    det = cv2.FaceDetectorYN.create(str(shared_data / "weights/yunet_n_dynamic.onnx"), "", (320, 320), 0.6, 0.3)
    ious = []
    for frame, box in zip(obama_frames[::8], obama_track.boxes[::8]):
        bgr = np.ascontiguousarray(frame[..., ::-1])
        det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = det.detect(bgr)
        x, y, w, h = faces[0][:4]
        ious.append(_iou(box, np.array([x, y, x + w, y + h])))
        lm = obama_track.landmarks68[0]
    assert min(ious) > 0.7, ious
    b = obama_track.boxes[0]
    lm = obama_track.landmarks68[0]
    # brows to chin, ear to ear: all 68 points but the jaw ends lie inside, the chin on the bottom edge
    assert b[1] < lm[17:27, 1].min() and abs(b[3] - lm[8, 1]) < 0.05 * (b[3] - b[1])
    assert 1.0 < (b[3] - b[1]) / (b[2] - b[0]) < 1.4


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_frames_without_face_short_gap_interpolated_long_gap_missing(obama_frames, obama_track):
    from data_recipes.faces import detect

    frames = obama_frames.copy()
    frames[5:8] = 0        # 3 blank frames: filled
    frames[15:27] = 0      # 12 blank frames: missing
    t = detect(frames)
    assert t.interpolated[5:8].all() and t.present[5:8].all()
    assert not t.present[15:27].any() and np.isnan(t.boxes[15:27]).all() and np.isnan(t.landmarks68[15:27]).all()
    assert t.present[:5].all() and t.present[27:].all() and not t.interpolated[27:].any()
    # the fill lies between the neighbours it was interpolated from
    lo = np.minimum(t.boxes[4], t.boxes[8]) - 1e-3
    hi = np.maximum(t.boxes[4], t.boxes[8]) + 1e-3
    assert ((t.boxes[5:8] >= lo) & (t.boxes[5:8] <= hi)).all()


def test_no_face_at_all_is_not_a_crash():
    from data_recipes.faces import detect

    t = detect(np.zeros((6, 64, 64, 3), np.uint8))
    assert len(t) == 6 and not t.present.any() and np.isnan(t.boxes).all()
    assert t.landmarks478.shape == (6, 478, 3) and t.blendshapes.shape == (6, 0)


def test_padded_rows_are_made_contiguous(obama_frames):
    """A strided view (as PyAV can give) must still find the face."""
    from data_recipes.faces import detect

    wide = np.zeros((2, obama_frames.shape[1], obama_frames.shape[2] + 14, 3), np.uint8)
    wide[:, :, : obama_frames.shape[2]] = obama_frames[:2]
    view = wide[:, :, : obama_frames.shape[2]]
    assert not view[0].flags.c_contiguous
    assert detect(list(view)).present.all()


def test_fill_gaps_linear_and_edges():
    v = np.arange(12, dtype=np.float32).reshape(12, 1) * 2.0
    det = np.ones(12, bool)
    det[[0, 4, 5]] = False   # edge gap (held) and interior gap of 2 (linear)
    det[8:12] = False        # trailing gap of 4 > max_gap 3: missing
    v[~det] = np.nan
    out, present, interp, rep = fill_gaps({"v": v}, det, max_gap=3)
    np.testing.assert_allclose(out["v"][4:6, 0], [8.0, 10.0])   # exact line between 6 and 12
    assert out["v"][0, 0] == 2.0                                 # held from frame 1
    assert np.isnan(out["v"][8:]).all() and not present[8:].any()
    assert rep.interpolated_ranges == ((0, 1), (4, 6)) and rep.missing_ranges == ((8, 12),)
    assert rep.detected + rep.interpolated + rep.missing == 12


def test_smooth_boxes_segmentwise():
    b = np.zeros((9, 4), np.float32)
    b[:, 0] = [0, 10, 0, 10, 0, 100, 100, 100, 100]
    present = np.ones(9, bool)
    present[4] = False
    s = smooth_boxes(b, present, window=3)
    assert np.isnan(s[4]).all()
    np.testing.assert_allclose(s[1, 0], 10 / 3, rtol=1e-6)     # mean of 0, 10, 0
    np.testing.assert_allclose(s[3, 0], 5.0)                   # run end: mean of 0, 10 only
    np.testing.assert_allclose(s[5:, 0], 100.0)                # never mixed across the gap
    assert runs(present) == [(0, 4), (5, 9)]


def test_lm68_mapping_table_is_a_valid_selection():
    assert len(LM68_FROM_LM478) == 68 and len(set(LM68_FROM_LM478)) == 68
    assert all(0 <= i < 468 for i in LM68_FROM_LM478)  # mesh points, no iris points
    pts = np.random.default_rng(0).normal(size=(3, 478, 3))
    np.testing.assert_array_equal(lm68_from_lm478(pts)[:, 30], pts[:, 4, :2])  # nose tip = mesh 4
    b = box_from_landmarks478(pts[0])
    assert b.shape == (4,) and b[0] < b[2] and b[1] < b[3]


def test_faces_stage_writes_track_and_meta(isolated_dirs, demo_video):
    from bench.cache import Cache
    from data_recipes.clip import Clip
    from data_recipes.recipe import Recipe

    recipe = Recipe(Cache(isolated_dirs / "cache"))
    clip = Clip("obama/short", demo_video, subject="obama", split="test", start=1.0, end=2.2)
    out = recipe.output(clip, "faces")
    track = FaceTrack.load(out.folder)
    assert len(track) == 30 and track.present.all()
    meta = json.loads((out.folder / "meta.json").read_text())
    assert meta["frames"]["detected"] == 30 and meta["frames"]["missing_ranges"] == []
    assert meta["model_sha256"].startswith("64184e22") and meta["backend"] == "mediapipe"
    smooth = out.array("boxes_smooth")
    assert smooth.shape == (30, 4) and np.abs(smooth - track.boxes).max() < 0.1 * (track.boxes[0, 2] - track.boxes[0, 0])
    # the stage's frames are the normalised frames: landmarks computed directly agree
    from data_recipes.faces import detect

    direct = detect(recipe.prepare(clip).frames())
    np.testing.assert_allclose(direct.landmarks68, track.landmarks68, atol=1e-3)


# ------------------------------------------------------------------------------------------ FAN


def test_fan_heatmap_decoding_recovers_known_points():
    """Peaks placed at the heatmap position of known image points decode back to those points."""
    from data_recipes.faces.fan import center_scale, crop_transform, decode_heatmaps

    box = np.array([100.0, 80.0, 300.0, 330.0])
    center, scale = center_scale(box)
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(130, 270, 68), rng.uniform(110, 300, 68)], 1)
    t = crop_transform(center, scale, 64)
    hm_xy = (t[:2, :2] @ pts.T).T + t[:2, 2]        # continuous heatmap coordinates (pixel corners)
    yy, xx = np.mgrid[0:64, 0:64]
    # a Gaussian centred on the pixel whose centre is nearest: decoding's -0.5 / +1 conventions
    # must then land within the quantisation of one heatmap pixel (4 px of a 256 crop)
    hm = np.exp(-(((xx[None] + 0.5 - hm_xy[:, 0, None, None]) ** 2 + (yy[None] + 0.5 - hm_xy[:, 1, None, None]) ** 2)
                  / (2 * 1.5 ** 2))).astype(np.float32)
    _, orig = decode_heatmaps(hm, center, scale)
    px_per_cell = 200 * scale / 64
    assert np.abs(orig - pts).max() < 0.5 * px_per_cell + 1.0     # half a cell + integer truncation
    assert np.allclose(orig, np.round(orig))                      # integer pixels, as face-alignment returns


def test_fan_crop_follows_the_transform(demo_video):
    from data_recipes.faces.fan import center_scale, crop, crop_transform

    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx % 256, yy % 256, (xx // 256) * 100 + (yy // 256) * 10], -1).astype(np.uint8)
    center, scale = center_scale(np.array([150.0, 60.0, 290.0, 230.0]))
    c = crop(img, center, scale)
    t = np.linalg.inv(crop_transform(center, scale, 256))
    for u, v in [(40, 40), (128, 128), (200, 90)]:
        x, y = (t @ [u + 0.5, v + 0.5, 1])[:2]
        # channels hold x mod 256 and y mod 256 (the sample points avoid the wrap-around)
        assert abs(int(c[v, u, 0]) - x % 256) <= 2.5 and abs(int(c[v, u, 1]) - y % 256) <= 2.5


@pytest.mark.slow
def test_fan_backend_loads_local_torchscript_with_random_weights(isolated_dirs, obama_frames):
    from data_recipes.faces import detect
    from data_recipes.faces.stage import FacesConfig, faces_availability
    from tests.recipes.fan_arch import save_random_fan

    cfg = FacesConfig(backend="fan")
    a = faces_availability(cfg)
    assert not a.ok and "2DFAN4-cd938726ad.zip" in a.reason and str(isolated_dirs / "weights") in a.reason
    (isolated_dirs / "weights").mkdir()
    save_random_fan(isolated_dirs / "weights" / "2DFAN4-cd938726ad.zip")
    assert faces_availability(cfg).ok
    t = detect(obama_frames[:1], cfg)   # one frame: a 4-stack FAN takes seconds on this CPU
    assert t.landmarks68.shape == (1, 68, 2) and np.isfinite(t.landmarks68).all()
    assert np.allclose(t.landmarks68, np.round(t.landmarks68))
    assert t.landmarks478.shape == (1, 478, 3) and t.present.all()
    from data_recipes.faces.boxes import box_from_landmarks68

    np.testing.assert_allclose(t.boxes, box_from_landmarks68(t.landmarks68), atol=1e-3)
