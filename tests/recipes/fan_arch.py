"""2D-FAN (4 stacked hourglasses, 68 heatmaps) with the layer layout of face-alignment's FAN, used
only to make a random-initialised TorchScript file of the real architecture for the loading tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation block whose three 3x3 branches (half, quarter, quarter width) are concatenated."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3(cin, cout // 2)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), _conv3(cout // 2, cout // 4)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), _conv3(cout // 4, cout // 4)
        self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))
                           if cin != cout else None)

    def forward(self, x):
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        res = x if self.downsample is None else self.downsample(x)
        return torch.cat([a, b, c], 1) + res


class HourGlass(nn.Module):
    def __init__(self, depth: int = 4, features: int = 256):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            if level == 1:
                self.add_module(f"b2_plus_{level}", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x):
        up = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, 2))
        low = self._level(level - 1, low) if level > 1 else self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x):
        return self._level(self.depth, x)


class FAN(nn.Module):
    def __init__(self, num_modules: int = 4):
        super().__init__()
        self.num_modules = num_modules
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
        for i in range(num_modules):
            self.add_module(f"m{i}", HourGlass(4, 256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"l{i}", nn.Conv2d(256, 68, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            if i < num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(68, 256, 1))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.max_pool2d(self.conv2(x), 2)))
        prev, out = x, x
        for i in range(self.num_modules):
            ll = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](prev))
            ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
            out = self._modules[f"l{i}"](ll)
            if i < self.num_modules - 1:
                prev = prev + self._modules[f"bl{i}"](ll) + self._modules[f"al{i}"](out)
        return out  # the last stack's heatmaps, as the released TorchScript model returns


def save_random_fan(path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = FAN(4).eval()
    traced = torch.jit.trace(model, torch.zeros(1, 3, 256, 256), check_trace=False)
    traced.save(str(path))
