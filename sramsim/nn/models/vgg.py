"""CIFAR-style VGG (Simonyan & Zisserman 2015): 3x3 conv stacks, one linear classifier.

The layers of NeuralFuse's VGG (IBM/NeuralFuse, models/vgg.py, `make_layers` with batch_norm):
convolutions with biases, each followed by a norm and ReLU, so VGG19 for CIFAR-10 has their
20,040,522 parameters (5,504 of them conv biases). Biases are not weights in the memory image by
default, so weight-read counts (NeuralFuse's 3,104,128 for VGG19) do not change with them.
Pools use ceil_mode so 28x28 inputs also reach 1x1 (32x32 inputs are unaffected).
"""
from __future__ import annotations

import torch
from torch import nn

from sramsim.nn.models.norm import norm2d

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, config: list, in_channels: int = 3, num_classes: int = 10,
                 norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), norm2d(norm, v),
                           nn.ReLU(inplace=True)]
                cin = v
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def vgg(name: str, in_channels: int = 3, num_classes: int = 10, norm: str = "batch") -> VGG:
    return VGG(CONFIGS[name], in_channels, num_classes, norm)
