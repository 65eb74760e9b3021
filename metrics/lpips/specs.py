"""The weight files LPIPS needs: torchvision's ImageNet backbones (user-supplied) and the v0.1
heads (bundled with the package). See bench/weights.py for lookup, verification and messages."""

from __future__ import annotations

from bench.weights import WeightSpec

_TV = "https://download.pytorch.org/models/"
_LPIPS_REPO = "richzhang/PerceptualSimilarity @ 082bb24"

BACKBONE_SPECS: dict[str, WeightSpec] = {
    "alex": WeightSpec(
        name="torchvision_alexnet",
        filename="alexnet-owt-7be5be79.pth",
        description="torchvision ImageNet AlexNet (backbone of LPIPS-Alex)",
        source=_TV + "alexnet-owt-7be5be79.pth",
        licence="BSD-3-Clause (torchvision)",
        sha256_prefix="7be5be79",  # torchvision file names carry the first 8 hex digits of the sha256
    ),
    "vgg": WeightSpec(
        name="torchvision_vgg16",
        filename="vgg16-397923af.pth",
        description="torchvision ImageNet VGG16 (backbone of LPIPS-VGG)",
        source=_TV + "vgg16-397923af.pth",
        licence="BSD-3-Clause (torchvision)",
        sha256_prefix="397923af",
    ),
}

HEADS_SPECS: dict[str, WeightSpec] = {
    "alex": WeightSpec(
        name="lpips_v0.1_alex_heads",
        filename="lpips_v0.1_alex_heads.pth",
        description="LPIPS v0.1 linear heads for AlexNet",
        source=f"{_LPIPS_REPO} : lpips/weights/v0.1/alex.pth (bundled)",
        licence="BSD-2-Clause",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        bundled="metrics.lpips:weights/lpips_v0.1_alex_heads.pth",
    ),
    "vgg": WeightSpec(
        name="lpips_v0.1_vgg_heads",
        filename="lpips_v0.1_vgg_heads.pth",
        description="LPIPS v0.1 linear heads for VGG16",
        source=f"{_LPIPS_REPO} : lpips/weights/v0.1/vgg.pth (bundled)",
        licence="BSD-2-Clause",
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        bundled="metrics.lpips:weights/lpips_v0.1_vgg_heads.pth",
    ),
}


def _check(net: str) -> None:
    if net not in BACKBONE_SPECS:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose from {sorted(BACKBONE_SPECS)}")


def backbone_spec(net: str) -> WeightSpec:
    _check(net)
    return BACKBONE_SPECS[net]


def heads_spec(net: str) -> WeightSpec:
    _check(net)
    return HEADS_SPECS[net]
