"""Motion -> renderer condition: landmarks from expression, LLE projection, normalisation and clamping,
the per-clip mouth amplitude and blink units, the shared expression space, and the mel front end's rows."""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.faces.mapping import LM68_FROM_LM478
from methods.nerf_head import motion
from methods.nerf_head.audio2motion.data import mel_to_50hz, resolve_front_end


def _space(k: int = 5, seed: int = 0) -> motion.ExpressionSpace:
    rng = np.random.default_rng(seed)
    return motion.ExpressionSpace("test", rng.standard_normal((468, 3, k)).astype(np.float32) * 0.01,
                                  rng.standard_normal((468, 3)).astype(np.float32))


def test_idexp_landmarks_are_ten_times_id_plus_exp_at_the_68_points():
    space = _space()
    rng = np.random.default_rng(1)
    id_off = rng.standard_normal((468, 3)).astype(np.float32) * 0.1
    exp = rng.standard_normal((4, 5)).astype(np.float32)
    lm = motion.idexp_lm68(space, id_off, exp)
    assert lm.shape == (4, 68, 3)
    t, j = 2, 51
    v = LM68_FROM_LM478[j]
    np.testing.assert_allclose(lm[t, j], 10 * (id_off[v] + space.basis[v] @ exp[t]), rtol=1e-5)
    canon = motion.canonical_lm68(space, id_off, exp)
    np.testing.assert_allclose(canon[t, j], space.mean[v] + id_off[v] + space.basis[v] @ exp[t], rtol=1e-5)


def test_lle_of_a_training_frame_returns_that_frame():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((200, 68, 3)).astype(np.float32)
    out = motion.lle_blend(db[[17, 150]], db, blend=1.0)
    np.testing.assert_allclose(out, db[[17, 150]], atol=1e-5)
    # and the default blend of a training frame is that frame too
    np.testing.assert_allclose(motion.lle_blend(db[[3]], db), db[[3]], atol=1e-5)


def test_lle_projects_onto_the_neighbours_affine_hull():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((50, 8))
    q = rng.standard_normal((3, 8)) * 3
    idx = motion.knn_indices(q, db, 10)
    d = ((q[:, None] - db[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.argsort(d, 1)[:, :10], 1))
    base = db[idx]
    w = motion.lle_weights(q, base)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    proj = motion.lle_project(q, db, 10)
    # the residual is orthogonal to the hull's directions (least squares optimality)
    for i in range(3):
        dirs = (base[i, 1:] - base[i, 0]).T
        np.testing.assert_allclose(dirs.T @ (q[i] - proj[i]), 0, atol=1e-8)
    # blend 0.2 sits a fifth of the way from the prediction to the projection
    mixed = motion.lle_blend(q.reshape(3, 8, 1), db.reshape(50, 8, 1), blend=0.2)
    np.testing.assert_allclose(mixed.reshape(3, 8), 0.2 * proj + 0.8 * q, atol=1e-5)


def test_normalisation_and_clamp_use_the_training_quantiles():
    rng = np.random.default_rng(2)
    train = rng.standard_normal((400, 68, 3)) * 2 + 5
    stats = motion.condition_stats(train)
    np.testing.assert_allclose(stats.mean, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, train.std(0, ddof=1), rtol=1e-5)
    z = (train - train.mean(0)) / train.std(0, ddof=1)
    np.testing.assert_allclose(stats.lower, np.quantile(z, 0.03, axis=0), rtol=1e-5, atol=1e-6)
    far = train[:1] + 100
    cond = motion.renderer_condition(far, train, blend=0.0, stats=stats)
    assert cond.shape == (1, 204)
    np.testing.assert_allclose(cond, stats.upper.reshape(1, -1))
    assert (motion.normalise(far, stats, clamp=False) > 10).all()


def test_mouth_amplitude_and_blink_units_follow_the_original_rules():
    t = 100
    lm = np.zeros((t, 68, 3))
    gap = np.linspace(0.0, 1.0, t)
    lm[:, 57, 1] = -gap  # lower outer lip moves down; L1 distance = gap
    assert motion.mouth_amplitude(lm) == pytest.approx(np.quantile(gap, 0.9))
    eyes = np.ones(t)
    eyes[[10, 11, 12, 40, 99]] = 0.1  # a 3-frame blink, a 1-frame blink, and one at the end (dropped)
    for a, b in motion.EYE_PAIRS_68:
        lm[:, a, 1] = eyes / 4
    units = motion.blink_units(lm)
    assert units.dtype == np.int64 and list(np.flatnonzero(units)) == [11, 40]


def test_shared_space_writes_each_clip_in_one_basis():
    rng = np.random.default_rng(3)
    modes = rng.standard_normal((3, 468 * 3)) * 0.01
    offsets = [(rng.standard_normal((n, 3)) @ modes).reshape(n, 468, 3) for n in (120, 80)]
    space = motion.shared_space(offsets, np.zeros((468, 3)))
    assert space.dim == 3  # rank of the deformations, well under the 64 cap
    back = space.offsets(space.project(offsets[1]))
    np.testing.assert_allclose(back, offsets[1], atol=1e-6)
    coeffs = space.project(np.concatenate(offsets))
    assert 0.3 < np.sqrt((coeffs ** 2).mean()) < 3  # coefficients of about unit scale


def test_mel_rows_sit_at_hubert_window_centres():
    cols = 1 + 640 * 10 // 200  # a 10-frame clip's Wav2Lip mel
    mel = np.tile(np.arange(cols, dtype=np.float32), (80, 1))
    rows = mel_to_50hz(mel, 20)
    assert rows.shape == (20, 80)
    np.testing.assert_allclose(rows[:, 0], np.minimum(1.6 * np.arange(20) + 1, cols - 1), rtol=1e-6)


def test_front_end_choice():
    assert resolve_front_end("auto", True) == "hubert"
    assert resolve_front_end("auto", False) == "mel"
    assert resolve_front_end("mel", True) == "mel"
    with pytest.raises(ValueError, match="HuBERT weights"):
        resolve_front_end("hubert", False)
