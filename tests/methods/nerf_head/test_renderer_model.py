"""Head / torso models of the NeRF renderer: official state-dict names and strict loading of an
official-format checkpoint (seeded random weights), the camera convention, marching and compositing,
super-resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.nerf_head.renderer import rays as R
from methods.nerf_head.renderer.config import FieldConfig, RendererConfig, TorsoConfig
from methods.nerf_head.renderer.grid import GridConfig
from methods.nerf_head.renderer.inference import load_official, read_official_state, save_official
from methods.nerf_head.renderer.model import build_head, build_torso, condition_window
from methods.nerf_head.renderer.sr import Superresolution

# read from GeneFacePlusPlus @ 6c35651 (module attribute names); see docs/nerf_head.md
HEAD_PREFIXES = {"aabb_train", "aabb_infer", "individual_embeddings", "density_grid", "density_bitfield",
                 "step_counter", "cond_prenet", "blink_embedding", "blink_encoder", "cond_att_net",
                 "position_embedder", "ambient_net", "ambient_embedder", "sigma_net", "color_net", "sr_net",
                 "lambda_ambient"}
TORSO_EXTRA = {"density_grid_torso", "torso_individual_codes", "torso_embedder", "head_color_weights_encoder",
               "torso_deform_net", "torso_canonicial_net"}


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.dtype == torch.uint8:
                t.copy_(torch.randint(0, 256, t.shape, generator=g, dtype=torch.uint8))
            elif t.is_floating_point() and "offsets" not in k and "resample_filter" not in k:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)


def test_official_head_keys_and_shapes():
    sd = build_head(FieldConfig()).state_dict()
    assert {k.split(".")[0] for k in sd} == HEAD_PREFIXES
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["individual_embeddings"] == (13000, 4)
    assert shapes["density_grid"] == (1, 128 ** 3) and shapes["density_bitfield"] == (128 ** 3 // 8,)
    assert shapes["cond_prenet.encoder_conv.0.weight"] == (32, 204, 3)
    assert shapes["cond_att_net.attentionNet.0.weight"] == (3, 3)
    assert shapes["blink_encoder.1.weight"] == (2, 32)
    assert shapes["ambient_net.net.0.weight"] == (128, 32 + 64) and shapes["ambient_net.net.2.weight"] == (3, 128)
    assert shapes["sigma_net.net.0.weight"] == (128, 64) and shapes["sigma_net.net.2.weight"] == (129, 128)
    assert shapes["color_net.net.0.weight"] == (128, 16 + 128 + 4) and shapes["color_net.net.1.weight"] == (3, 128)
    assert shapes["ambient_embedder.embeddings"] == shapes["position_embedder.embeddings"] == (903480, 2)
    assert shapes["sr_net.block0.conv0.weight"] == (128, 3, 3, 3)
    assert shapes["sr_net.block1.conv0.weight"] == (64, 128, 3, 3)
    assert shapes["sr_net.block1.conv1.noise_const"] == (512, 512)
    assert shapes["sr_net.block1.torgb.weight"] == (3, 64, 1, 1)
    assert shapes["sr_net.block0.conv0.affine.weight"] == (3, 16)
    assert not any("bias" in k for k in sd if k.split(".")[0] in ("sigma_net", "color_net", "ambient_net"))


def test_official_checkpoint_loads_strictly_and_round_trips(tmp_path):
    head = build_head(FieldConfig(), seed=3)
    _randomise(head, 11)
    folder = tmp_path / "may_head"
    save_official(head, folder, 1000)
    save_official(head, folder, 250000)
    state = read_official_state(folder)
    assert set(state) == set(head.state_dict())
    loaded = load_official(folder)
    for k, v in head.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # a wrong key set fails loudly (strict)
    bad = dict(state)
    bad.pop("color_net.net.1.weight")
    torch.save({"state_dict": {"model": bad}}, folder / "model_ckpt_steps_300000.ckpt")
    with pytest.raises(RuntimeError, match="color_net.net.1.weight"):
        load_official(folder)


def test_official_torso_checkpoint_loads_strictly(tmp_path):
    cfg = FieldConfig(eye_blink_dim=4)
    torso = build_torso(cfg, TorsoConfig(), seed=5)
    sd = torso.state_dict()
    assert {k.split(".")[0] for k in sd} == (HEAD_PREFIXES - {"lambda_ambient"}) | TORSO_EXTRA
    assert tuple(sd["torso_individual_codes"].shape) == (13000, 8)
    assert tuple(sd["density_grid_torso"].shape) == (128 * 128,)
    # deform net: 2-D position (10 freqs: 42) + code 8 + 7 jaw points (4 freqs: 126) + head-aware 16
    assert tuple(sd["torso_deform_net.net.0.weight"].shape) == (64, 42 + 8 + 126 + 16)
    assert tuple(sd["torso_canonicial_net.net.0.weight"].shape) == (32, 32 + 192)
    _randomise(torso, 12)
    save_official(torso, tmp_path / "may_torso", 250000)
    loaded = load_official(tmp_path / "may_torso")
    assert type(loaded).__name__ == "TorsoModel" and loaded.cfg.eye_blink_dim == 4
    for k, v in torso.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_camera_rays_hit_the_pixels_the_3dmm_projects():
    from data_recipes.threedmm.model import Camera, project

    rng = np.random.default_rng(0)
    euler = rng.uniform(-0.3, 0.3, size=(3, 3))
    trans = rng.uniform(-0.5, 0.5, size=(3, 3))
    rot = R.euler_to_rotation(euler)
    pts = rng.uniform(-0.8, 0.8, size=(5, 3))
    size = 256
    cam = Camera.geneface(size, size)
    uv = project(np.broadcast_to(pts, (3, 5, 3)).astype(np.float64), rot, trans, cam)
    c2w = R.poses_from_3dmm(rot, trans)
    world = R.model_to_world(pts)
    k = R.geneface_intrinsics(size)
    for t in range(3):
        # the ray through the projected pixel passes through the world point
        u, v = uv[t, :, 0], uv[t, :, 1]
        fx, fy, cx, cy = k
        d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        d_world = d @ c2w[t, :3, :3].T
        o = c2w[t, :3, 3]
        to_pt = world - o
        cross = np.cross(d_world, to_pt / np.linalg.norm(to_pt, axis=-1, keepdims=True))
        assert np.abs(cross).max() < 1e-4
    # the camera is 4 units (10 dm / 10 x 4) from the model origin for t = 0
    c0 = R.poses_from_3dmm(np.eye(3)[None], np.zeros((1, 3)))
    assert np.isclose(np.linalg.norm(c0[0, :3, 3]), 4.0)
    assert np.isclose(R.geneface_intrinsics(256)[0], 1015 * 128 / 112)


def test_pixel_rays_match_get_rays_convention():
    c2w = torch.from_numpy(R.poses_from_3dmm(np.eye(3)[None], np.zeros((1, 3)))[0])
    o, d = R.pixel_rays(c2w, (100.0, 100.0, 2.0, 2.0), 4, 4)
    # pixel (row 0, col 3): i = 3.5, j = 0.5
    want = np.array([(3.5 - 2) / 100, (0.5 - 2) / 100, 1.0])
    want /= np.linalg.norm(want)
    assert np.allclose(d[3].numpy(), c2w[:3, :3].numpy() @ want, atol=1e-6)
    assert torch.allclose(o, c2w[:3, 3].expand(16, 3))


def test_march_samples_only_occupied_cells_and_caps_them():
    g = 32
    occ = torch.zeros(g, g, g, dtype=torch.bool)
    occ[:, 8:24, 8:24] = True                 # a slab along x: 2 units long, longer than 16 steps
    occ[:, 8:24, 12] = False                  # ... except one z layer
    ro = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.9, 0.9], [-3.0, 0.0, 0.9], [-3.0, 0.0, -0.2]])
    rd = torch.tensor([[1.0, 0.0, 0.0]]).repeat(4, 1)
    aabb = torch.tensor([-1.0, -0.5, -1.0, 1.0, 0.5, 1.0])
    near, far = R.near_far_from_aabb(ro, rd, aabb, 0.05)
    assert near[0] == pytest.approx(2.0) and far[0] == pytest.approx(4.0)
    assert near[1] > 1e30  # misses the box (y = 0.9 > 0.5)
    s = R.march(ro, rd, near, far, occ, bound=1.0, max_steps=16, perturb=False)
    v = s["valid"]
    # capped at 16; none outside the box; none in the box's empty cells (z = 0.9, and the z layer 12)
    assert v.sum(1).tolist() == [16, 0, 0, 0]
    x = s["xyzs"][0][v[0]][:, 0]
    assert (x >= -1).all() and x[0] < -0.95
    assert torch.allclose(x[1:] - x[:-1], torch.full((15,), 2 * np.sqrt(3) / g), atol=1e-5)


def test_composite_stops_at_the_transmittance_threshold():
    sig = torch.tensor([[1.0, 1000.0, 5.0, 5.0]])
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    ts = torch.arange(1, 5, dtype=torch.float32)[None]
    out = R.composite(sig, rgb, torch.tensor(0.1), valid, ts, 1e-4)
    a0 = 1 - np.exp(-0.1)
    assert out["counted"][0].tolist() == [True, True, False, False]
    assert out["image"][0, 0] == pytest.approx(a0, rel=1e-5)
    assert out["weights_sum"][0] == pytest.approx(1.0, abs=1e-6)


def test_superresolution_doubles_with_an_fir_upsampled_skip():
    sr = Superresolution(16, (8, 4))
    x = torch.rand(1, 3, 16, 16)
    y = sr(x, noise_mode="const")
    assert y.shape == (1, 3, 32, 32)
    y.mean().backward()
    assert sr.block0.conv0.weight.grad.abs().sum() > 0 and sr.block1.torgb.weight.grad.abs().sum() > 0
    # with both toRGB layers silent, the output is the input upsampled by the [1,3,3,1] FIR (gain 4):
    # a constant image stays constant away from the border, and the mean is kept
    with torch.no_grad():
        for blk in (sr.block0, sr.block1):
            blk.torgb.weight.zero_()
        flat = torch.full((1, 3, 16, 16), 0.7)
        up = sr(flat)
        assert torch.allclose(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.7), atol=1e-6)
        z = sr(x)
        assert torch.allclose(z[..., 4:-4, 4:-4].mean(), x[..., 2:-2, 2:-2].mean(), atol=0.05)


def test_condition_window_pads_with_zeros():
    conds = torch.arange(12, dtype=torch.float32).view(4, 3)
    w = condition_window(conds, 0, 3)
    assert w.shape == (3, 1, 3) and torch.equal(w[0, 0], torch.zeros(3)) and torch.equal(w[1, 0], conds[0])
    assert torch.equal(condition_window(conds, 3, 3)[2, 0], torch.zeros(3))


def test_head_model_renders_and_updates_occupancy():
    small = GridConfig(num_levels=4, base_resolution=8, desired_resolution=64, log2_hashmap_size=12)
    cfg = FieldConfig(grid=small, ambient_grid=small, hidden_ambient=16, hidden_sigma=16, geo_feat_dim=16,
                      hidden_color=16, grid_size=16, sr_channels=(8, 4), render_size=16)
    m = build_head(cfg)
    cond = m.cond_feature(torch.randn(3, 1, 204), 0.3)
    assert cond.shape == (64,)
    m.update_occupancy(cond.detach())
    assert m.density_bitfield.sum() > 0 and m.mean_density > 0
    c2w = torch.from_numpy(R.poses_from_3dmm(np.eye(3)[None], np.zeros((1, 3)))[0])
    out = m.render_image(c2w, R.geneface_intrinsics(16), cond, m.individual_code(3), torch.zeros(16, 16, 3),
                         perturb=True)
    assert out["rgb"].shape == (1, 3, 16, 16) and out["sr_rgb"].shape == (1, 3, 32, 32)
    assert out["weights_sum"].max() > 0
    m.eval()
    with torch.no_grad():
        a = m.render_image(c2w, R.geneface_intrinsics(16), cond, m.individual_code(None), torch.zeros(16, 16, 3), early_stop=True)
        b = m.render_image(c2w, R.geneface_intrinsics(16), cond, m.individual_code(None), torch.zeros(16, 16, 3), early_stop=False)
    assert torch.allclose(a["rgb"], b["rgb"], atol=1e-5)  # early termination changes nothing visible
