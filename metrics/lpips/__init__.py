"""LPIPS (Zhang et al. 2018, v0.1) in plain PyTorch, with AlexNet / VGG16 trunks in torchvision's layout.

- `backbones`: architecture facts, torchvision state-dict layout, strict loading;
- `model`: the LPIPS computation (`lpips_distance` on clips, `lpips_forward` on image batches) and
  `load_lpips` (official backbone from the weights folder + bundled v0.1 heads);
- `specs`: the WeightSpecs of the backbone files and the heads;
- `metric`: the `LPIPSAlex` / `LPIPSVGG` metric classes the runner builds.
Importing this package imports nothing heavy.
"""
