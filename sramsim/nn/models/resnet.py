"""CIFAR-style ResNets (He et al. 2016) for 32x32 inputs: 3x3 stem, no initial max-pool.

resnet18/resnet50 are the ImageNet stage widths (64..512) on that stem; resnet20 is the paper's
own CIFAR net (section 4.2: 3 stages of 16/32/64 channels, 3 BasicBlocks each, ~0.27 M weights),
small enough to train and sweep on a laptop CPU. Its two down-sampling shortcuts are 1x1
convolutions (the paper's option B) rather than zero padding, adding 2,560 weights.
"""
from __future__ import annotations

import torch
from torch import nn

from sramsim.nn.models.norm import norm2d


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm2d(norm, planes)
        self.shortcut = _shortcut(cin, planes, stride, norm)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm: str):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm2d(norm, planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = norm2d(norm, cout)
        self.shortcut = _shortcut(cin, cout, stride, norm)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, norm: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm2d(norm, cout))


class ResNet(nn.Module):
    """3x3 stem of widths[0] channels, one stage per width (stride 1, then 2) of `layers[i]`
    blocks each, global average pool, linear. Stages are `layer1`, `layer2`, ... in order."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int],
                 in_channels: int = 3, num_classes: int = 10,
                 norm: str = "batch", widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = norm2d(norm, widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin, self.stages = widths[0], []
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for k in range(n):
                blocks.append(block(cin, planes, 2 if (k == 0 and i > 0) else 1, norm))
                cin = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stages.append(f"layer{i + 1}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(self.pool(x).flatten(1))


def resnet18(in_channels: int = 3, num_classes: int = 10, norm: str = "batch") -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], in_channels, num_classes, norm)


def resnet50(in_channels: int = 3, num_classes: int = 10, norm: str = "batch") -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], in_channels, num_classes, norm)


def resnet20(in_channels: int = 3, num_classes: int = 10, norm: str = "batch") -> ResNet:
    """He et al.'s 6n+2-layer CIFAR ResNet with n = 3: a 16-channel stem and stages of 16/32/64
    channels of three BasicBlocks each."""
    return ResNet(BasicBlock, [3, 3, 3], in_channels, num_classes, norm, widths=(16, 32, 64))
