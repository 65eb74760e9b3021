"""GeneFace++'s renderer in plain PyTorch: head radiance field, torso field, super-resolution.

Modules (import them directly; this package imports nothing):
- `config`: FieldConfig, TorsoConfig, TrainConfig, RendererConfig, `preset("quick"|"standard"|"full")`;
- `grid`: the tiled / hash grid encoder (pure PyTorch; tiny-cuda-nn as an optional backend);
- `nets`, `sr`: MLPs, condition networks, SH / frequency encodings, EG3D-style super-resolution;
- `rays`: cameras from the 3DMM pose, rays, occupancy grid, marching, compositing;
- `model`: HeadModel (RADNeRFwithSR) and TorsoModel (RADNeRFTorsowithSR) with the official key names;
- `data`: RendererData (what training reads) and helpers;
- `tasks`: HeadTask and TorsoTask for bench.trainer;
- `inference`: `render` / `render_frames`, official checkpoint save / load.
See docs/nerf_head.md ("Renderer").
"""
