"""ImageNet AlexNet and VGG16 feature trunks in plain PyTorch, with torchvision's state-dict layout.

LPIPS reads five ReLU outputs of an ImageNet classifier. The suite does not depend on torchvision
(its registry builds pull CUDA torch), so the two trunks are rebuilt here from their architecture
facts, with the same module indices, so that torchvision's official files

    alexnet-owt-7be5be79.pth   features.{0,3,6,8,10}.{weight,bias} + classifier.{1,4,6}.{weight,bias}
    vgg16-397923af.pth         features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.* + classifier.{0,3,6}.*

load with every key and shape checked. The classifier is checked and then dropped: LPIPS never
uses it, and it is most of each file (58M of AlexNet's 61M parameters).

Taps (the last module index of each of lpips' `pretrained_networks` slices; all are ReLUs):
AlexNet slices [0,2) [2,5) [5,8) [8,10) [10,12) -> after features.1, .4, .7, .9, .11 (relu1..relu5);
VGG16 slices [0,4) [4,9) [9,16) [16,23) [23,30) -> after features.3, .8, .15, .22, .29
(relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Union

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Conv:
    """features.<index> = Conv2d(cin, cout, k, stride, pad) followed by a ReLU at features.<index + 1>."""

    index: int
    cin: int
    cout: int
    k: int
    stride: int = 1
    pad: int = 0


@dataclass(frozen=True)
class Pool:
    """features.<index> = MaxPool2d(k, stride) (no padding, floor mode), as in torchvision."""

    index: int
    k: int
    stride: int


@dataclass(frozen=True)
class Linear:
    """classifier.<index> = Linear(fin, fout) of torchvision's model (checked on load, never run)."""

    index: int
    fin: int
    fout: int


Layer = Union[Conv, Pool]


@dataclass(frozen=True)
class BackboneArch:
    """One torchvision classifier as far as LPIPS needs it, plus its classifier for strict loading."""

    name: str
    layers: tuple[Layer, ...]          # the `features` modules up to the last tap (ReLUs implied)
    taps: tuple[int, ...]              # features indices whose outputs LPIPS reads
    classifier: tuple[Linear, ...]
    file: str                          # torchvision's official file name

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels at each tap (the input width of each LPIPS head)."""
        out, c = {}, 3
        for layer in self.layers:
            if isinstance(layer, Conv):
                c = layer.cout
                out[layer.index + 1] = c
            else:
                out[layer.index] = c
        return tuple(out[t] for t in self.taps)


ALEXNET = BackboneArch(
    name="alexnet",
    layers=(
        Conv(0, 3, 64, 11, stride=4, pad=2), Pool(2, 3, 2),
        Conv(3, 64, 192, 5, pad=2), Pool(5, 3, 2),
        Conv(6, 192, 384, 3, pad=1),
        Conv(8, 384, 256, 3, pad=1),
        Conv(10, 256, 256, 3, pad=1),
        # features.12 (MaxPool) comes after the last tap and is not built
    ),
    taps=(1, 4, 7, 9, 11),
    classifier=(Linear(1, 256 * 6 * 6, 4096), Linear(4, 4096, 4096), Linear(6, 4096, 1000)),
    file="alexnet-owt-7be5be79.pth",
)

VGG16 = BackboneArch(
    name="vgg16",
    layers=(
        Conv(0, 3, 64, 3, pad=1), Conv(2, 64, 64, 3, pad=1), Pool(4, 2, 2),
        Conv(5, 64, 128, 3, pad=1), Conv(7, 128, 128, 3, pad=1), Pool(9, 2, 2),
        Conv(10, 128, 256, 3, pad=1), Conv(12, 256, 256, 3, pad=1), Conv(14, 256, 256, 3, pad=1), Pool(16, 2, 2),
        Conv(17, 256, 512, 3, pad=1), Conv(19, 512, 512, 3, pad=1), Conv(21, 512, 512, 3, pad=1), Pool(23, 2, 2),
        Conv(24, 512, 512, 3, pad=1), Conv(26, 512, 512, 3, pad=1), Conv(28, 512, 512, 3, pad=1),
        # features.30 (MaxPool) comes after the last tap and is not built
    ),
    taps=(3, 8, 15, 22, 29),
    classifier=(Linear(0, 512 * 7 * 7, 4096), Linear(3, 4096, 4096), Linear(6, 4096, 1000)),
    file="vgg16-397923af.pth",
)

ARCHS: Mapping[str, BackboneArch] = {"alex": ALEXNET, "vgg": VGG16}


def torchvision_shapes(arch: BackboneArch) -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's state dict for `arch`, in file order, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in arch.layers:
        if isinstance(layer, Conv):
            shapes[f"features.{layer.index}.weight"] = (layer.cout, layer.cin, layer.k, layer.k)
            shapes[f"features.{layer.index}.bias"] = (layer.cout,)
    for lin in arch.classifier:
        shapes[f"classifier.{lin.index}.weight"] = (lin.fout, lin.fin)
        shapes[f"classifier.{lin.index}.bias"] = (lin.fout,)
    return shapes


def build_trunk(arch: BackboneArch) -> "nn.Module":
    """A module whose `features` Sequential has torchvision's indices up to the last tap.

    Its state dict therefore holds exactly the `features.*` keys of the official file. ReLUs are
    in place (the tap reads the ReLU output; nothing else holds the pre-activation).
    """
    from torch import nn

    modules: dict[int, nn.Module] = {}
    for layer in arch.layers:
        if isinstance(layer, Conv):
            modules[layer.index] = nn.Conv2d(layer.cin, layer.cout, layer.k, stride=layer.stride,
                                             padding=layer.pad)
            modules[layer.index + 1] = nn.ReLU(inplace=True)
        else:
            modules[layer.index] = nn.MaxPool2d(layer.k, stride=layer.stride)
    last = arch.taps[-1]
    if sorted(modules) != list(range(last + 1)):
        raise AssertionError(f"{arch.name}: layer indices do not cover 0..{last}")
    trunk = nn.Module()
    trunk.features = nn.Sequential(*(modules[i] for i in range(last + 1)))
    return trunk


class BackboneLayoutError(ValueError):
    """A state dict that is not torchvision's layout for the architecture (names what differs)."""


def check_layout(arch: BackboneArch, state: Mapping[str, "torch.Tensor"], source: str = "state dict") -> None:
    """Raise BackboneLayoutError unless `state` has exactly torchvision's keys and shapes."""
    expected = torchvision_shapes(arch)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: {tuple(state[k].shape)} != {expected[k]}"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:6]}")
        raise BackboneLayoutError(
            f"{source} is not torchvision's {arch.name} ({arch.file}) layout: " + "; ".join(parts))


def load_trunk(arch: BackboneArch, state: Mapping[str, "torch.Tensor"], source: str = "state dict") -> "nn.Module":
    """Build the trunk and load `state` strictly: full torchvision layout checked, features loaded."""
    check_layout(arch, state, source)
    trunk = build_trunk(arch)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    trunk.load_state_dict(features, strict=True)
    return trunk


def read_state_dict(path) -> dict[str, "torch.Tensor"]:
    """torch.load a state dict safely (weights only), memory-mapped when the file format allows.

    Memory mapping means the classifier tensors, which are only checked for shape, are never read
    from disk. Files in the pre-1.6 (non-zip) format cannot be mapped and are read whole.
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise BackboneLayoutError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return dict(obj)
