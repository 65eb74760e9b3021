"""Training data from stage folders: open-model clips get one shared expression space, BFM clips keep their
own coefficients, and each clip carries its front end, mouth amplitude and blink units."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_recipes.recipe import StageOutput
from methods.nerf_head.audio2motion.data import build_motion_clips, clip_geometry, expression_space


class FakeClip:
    """What build_motion_clips reads of a PreparedClip: id, num_frames, stage(name)."""

    def __init__(self, cid, folders, frames):
        self.id, self._folders, self.num_frames = cid, folders, frames

    def stage(self, name):
        return StageOutput(name, "k", self._folders[name])


def _stage(folder, **arrays):
    folder.mkdir(parents=True)
    meta = arrays.pop("meta")
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _open_clip(tmp_path, name, frames, seed, modes):
    rng = np.random.default_rng(seed)
    k = 5
    # each clip's own basis: random mixtures of 3 shared deformation modes (as per-clip PCA would be)
    exb = np.einsum("mlc,mk->lck", modes, rng.standard_normal((3, k))).astype(np.float32)
    t = np.arange(frames)
    exp = np.stack([np.sin(t / (3 + i)) for i in range(k)], 1).astype(np.float32)
    mean = rng.standard_normal((468, 3)).astype(np.float32) * 0.5
    tdm = _stage(tmp_path / name / "threedmm", id=np.ones(4, np.float32), exp=exp, model_mean=mean,
                 model_id_basis=np.zeros((468, 3, 4), np.float32), model_exp_basis=exb,
                 meta={"model": {"name": "mediapipe-open"}})
    mel = _stage(tmp_path / name / "mel", mel=rng.standard_normal((80, 1 + 640 * frames // 200)).astype(np.float32),
                 meta={})
    f0 = _stage(tmp_path / name / "f0", f0=rng.uniform(0, 300, 2 * frames).astype(np.float32), meta={})
    return FakeClip(name, {"threedmm": tdm, "mel": mel, "f0": f0}, frames)


def test_open_model_clips_share_one_space(tmp_path):
    modes = np.random.default_rng(0).standard_normal((3, 468, 3)) * 0.01
    a, b = _open_clip(tmp_path, "a", 60, 1, modes), _open_clip(tmp_path, "b", 40, 2, modes)
    clips, space = build_motion_clips([a, b], "mel")
    assert space.name == "open-shared-pca" and space.dim == 3
    for c, fc in zip(clips, (a, b)):
        assert c.front_end == "mel" and c.audio.shape == (2 * fc.num_frames, 80) and c.exp.shape == (fc.num_frames, 3)
        assert c.blink.shape == (fc.num_frames,) and c.mouth_amp > 0
        g = clip_geometry(fc.stage("threedmm"))
        np.testing.assert_allclose(space.offsets(c.exp), g.exp_offsets, atol=1e-5)  # nothing lost in the projection
    held_out, same = build_motion_clips([b], "mel", space)
    assert same is space
    np.testing.assert_allclose(held_out[0].exp, clips[1].exp, atol=1e-6)


def test_bfm_clips_need_the_model_and_keep_their_coefficients(tmp_path):
    from data_recipes.threedmm.model import MorphableModel

    rng = np.random.default_rng(3)
    v = 30
    bfm = MorphableModel(name="bfm2009-front", mean=rng.standard_normal((v, 3)).astype(np.float32),
                         id_basis=rng.standard_normal((v, 3, 80)).astype(np.float32) * 0.01,
                         exp_basis=rng.standard_normal((v, 3, 64)).astype(np.float32) * 0.01,
                         landmark_vertex=rng.integers(0, v, 468), landmark_valid=np.ones(468, bool),
                         keypoint_mode="mediapipe")
    exp = rng.standard_normal((20, 64)).astype(np.float32)
    tdm = _stage(tmp_path / "bfm" / "threedmm", id=rng.standard_normal(80).astype(np.float32), exp=exp,
                 meta={"model": {"name": "bfm2009-front"}})
    with pytest.raises(ValueError, match="load_bfm"):
        clip_geometry(StageOutput("threedmm", "k", tdm))
    g = clip_geometry(StageOutput("threedmm", "k", tdm), bfm)
    space = expression_space([g])
    assert space.name == "bfm2009" and space.dim == 64
    from methods.nerf_head.audio2motion.data import clip_expression

    np.testing.assert_array_equal(clip_expression(space, g), exp)
