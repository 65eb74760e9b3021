"""Typed configs of the renderer and its three presets.

`full` is GeneFace++'s published setting (egs/datasets/May/lm3d_radnerf_sr.yaml and
lm3d_radnerf_torso_sr.yaml; 250k steps per stage). `standard` keeps the full architecture and
shortens the schedule so that head + torso train on one GPU in about 8 minutes (sized by estimate from
the pure-PyTorch throughput measured on an H200, not measured end to end in this session). `quick` is
sized for the 2-core CPU demo and is NOT the published model: 48-pixel internal renders, a 64^3
occupancy grid, 8 grid levels with 2^14 entries up to resolution 256, 64-wide MLPs, a 4x narrower
super-resolution (48 -> 96, then resized to the output size), 120 steps at a 10x learning rate, and
no torso network unless the budget asks for torso steps. Everything it produces says "quick" in its config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from methods.nerf_head.renderer.grid import GridConfig


@dataclass(frozen=True)
class FieldConfig:
    """The head field (RADNeRFwithSR). Defaults are the published ones.

    cond_dim: landmark condition size (68 x 3); cond_win: frames the AudioNet reads per step (1);
    smo_win: frames of the attention smoother's window (3 in the SR configs); eye_blink_dim: condition
    channels the eye-area embedding is added to (2 head, 4 in the torso yaml); ambient_coord_dim: the
    ambient grid's input size (3 in lm3d configs); individual_*: per-frame codes (13000 x 4);
    grid_size: occupancy grid side; density_thresh: occupancy threshold cap; max_steps: samples per
    ray; t_thresh: transmittance at which a ray stops; sr: build the super-resolution module;
    sr_channels: its block0 / block1 channels; render_size: internal render side (256).
    """

    cond_dim: int = 204
    cond_out_dim: int = 64
    cond_win: int = 1
    smo_win: int = 3
    eye_blink_dim: int = 2
    grid: GridConfig = field(default_factory=GridConfig)
    ambient_grid: GridConfig = field(default_factory=GridConfig)
    ambient_coord_dim: int = 3
    hidden_ambient: int = 128
    layers_ambient: int = 3
    hidden_sigma: int = 128
    layers_sigma: int = 3
    geo_feat_dim: int = 128
    hidden_color: int = 128
    layers_color: int = 2
    individual_num: int = 13000
    individual_dim: int = 4
    bound: float = 1.0
    min_near: float = 0.05
    grid_size: int = 128
    density_thresh: float = 10.0
    max_steps: int = 16
    t_thresh: float = 1e-4
    sr: bool = True
    sr_channels: tuple[int, int] = (128, 64)
    render_size: int = 256


@dataclass(frozen=True)
class TorsoConfig:
    """The torso's 2-D deformable field (RADNeRFTorsowithSR additions). Published defaults."""

    individual_dim: int = 8
    shrink: float = 0.8
    density_thresh: float = 0.01
    head_aware: bool = True
    grid: GridConfig = field(default_factory=GridConfig)
    pos_freqs: int = 10
    lm_freqs: int = 4
    pose_freqs: int = 4
    deform_hidden: int = 64
    deform_layers: int = 3
    canonical_hidden: int = 32
    canonical_layers: int = 3
    jaw_points: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11)


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (head + SR, or torso). Published values by default.

    lr: network lr (grids x grid_lr_mult, attention x att_lr_mult), decayed by 0.1^(step / decay_steps)
    with floor lr_floor; update_every / ema_decay: occupancy grid; lambda_entropy: alpha entropy;
    target_ambient / lr_lambda_ambient: the adaptive ambient weight (start 1, clamp [0, 1000]);
    lpips_start / lambda_lpips: the perceptual term (suite LPIPS where its weights exist);
    n_rays: rays per step, 0 = the whole frame (needed whenever SR trains); eval_frames: held-out
    frames rendered by evaluate; seed: the task's randomness (drawn per step from seed and step).
    """

    steps: int = 250_000
    lr: float = 5e-4
    grid_lr_mult: float = 10.0
    att_lr_mult: float = 5.0
    decay_steps: int = 250_000
    lr_floor: float = 1e-5
    update_every: int = 16
    ema_decay: float = 0.95
    lambda_entropy: float = 1e-4
    target_ambient: float = 1e-8
    lr_lambda_ambient: float = 0.01
    lpips_start: int = 200_000
    lambda_lpips: float = 1e-3
    lambda_deform: float = 0.0
    sr_start: int = 0
    n_rays: int = 0
    eval_frames: int = 4
    seed: int = 0


@dataclass(frozen=True)
class RendererConfig:
    """A preset: the fields, both training stages and the output size of `render`."""

    name: str = "full"
    head: FieldConfig = field(default_factory=FieldConfig)
    torso: TorsoConfig = field(default_factory=TorsoConfig)
    head_train: TrainConfig = field(default_factory=TrainConfig)
    torso_train: TrainConfig = field(default_factory=lambda: TrainConfig(lpips_start=200_000))
    train_torso: bool = True
    output_size: int = 512
    note: str = "GeneFace++'s published renderer and schedule (250k steps per stage)"


def _quick() -> RendererConfig:
    small = GridConfig(num_levels=8, level_dim=2, base_resolution=16, desired_resolution=256, log2_hashmap_size=14)
    head = FieldConfig(grid=small, ambient_grid=small, hidden_ambient=64, hidden_sigma=64, geo_feat_dim=64,
                       hidden_color=64, grid_size=64, sr_channels=(32, 16), render_size=48)
    torso = TorsoConfig(grid=small)
    return RendererConfig(
        name="quick", head=head, torso=torso,
        head_train=TrainConfig(steps=120, lr=5e-3, decay_steps=4_000, lpips_start=10**9, eval_frames=2),
        torso_train=TrainConfig(steps=0, lr=2e-3, decay_steps=4_000, lpips_start=10**9, eval_frames=2),
        note=("quick (CPU demo): NOT the published renderer - 48 px internal render, 8 grid levels x 2^14 "
              "up to 256, 64-wide MLPs, 64^3 occupancy, SR 48->96 with 32/16 channels resized to the output, "
              "120 head+SR steps at 10x the published lr (5e-3 networks, 5e-2 grids), no torso network by "
              "default (the head is composited over the target frame's own torso), no perceptual term: a "
              "blurry, partly transparent head that follows the landmarks, for checking the pipeline"))


def _standard() -> RendererConfig:
    return RendererConfig(
        name="standard",
        head_train=TrainConfig(steps=12_000, decay_steps=30_000, lpips_start=9_000),
        torso_train=TrainConfig(steps=3_000, decay_steps=30_000, lpips_start=10**9),
        note=("standard: published architecture at 256 -> 512, schedule shortened to 12k head+SR and 3k "
              "torso steps (lr decay 0.1 per 30k steps, perceptual term from 9k) for ~8 min on one GPU "
              "(an estimate, not measured here)"))


def _tiny() -> RendererConfig:
    """Tests and the method contract battery only: a few pixels, a few thousand parameters."""
    small = GridConfig(num_levels=4, level_dim=2, base_resolution=4, desired_resolution=32, log2_hashmap_size=10)
    head = FieldConfig(grid=small, ambient_grid=small, hidden_ambient=16, hidden_sigma=16, geo_feat_dim=16,
                       hidden_color=16, grid_size=16, sr_channels=(4, 4), render_size=16, individual_num=1024)
    torso = TorsoConfig(grid=small, deform_hidden=16, canonical_hidden=16)
    return RendererConfig(
        name="tiny", head=head, torso=torso,
        head_train=TrainConfig(steps=4, lr=2e-3, decay_steps=1000, lpips_start=10**9, eval_frames=1),
        torso_train=TrainConfig(steps=2, lr=2e-3, decay_steps=1000, lpips_start=10**9, eval_frames=1),
        note="tiny (tests only): 16 px render, 4 grid levels, 16-wide MLPs - not a usable renderer")


PRESETS = {"tiny": _tiny, "quick": _quick, "standard": _standard, "full": RendererConfig}


def preset(name: str) -> RendererConfig:
    """"quick" | "standard" | "full" (and "tiny" for tests)."""
    if name not in PRESETS:
        raise ValueError(f"unknown renderer preset {name!r}: {', '.join(PRESETS)}")
    return PRESETS[name]()


def with_steps(cfg: RendererConfig, head_steps: int, torso_steps: int) -> RendererConfig:
    """A copy with other step counts (the budget decides them)."""
    return replace(cfg, head_train=replace(cfg.head_train, steps=head_steps),
                   torso_train=replace(cfg.torso_train, steps=torso_steps))
