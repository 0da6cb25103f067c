"""The default base model: a small CNN for 28x28 inputs (Fashion-MNIST in about a minute per epoch
on 2 CPU cores)."""
from __future__ import annotations

import torch
from torch import nn

from sramsim.nn.models.norm import norm2d


class SmallCNN(nn.Module):
    """conv32-pool-norm-ReLU, conv64-pool-norm-ReLU, conv64-norm-ReLU, linear (87,850 parameters).

    All convolutions are 3x3 without bias (the norm layer supplies it). Pooling comes before
    norm and ReLU so those run on 4x fewer values (about 25% faster on CPU; max-pooling commutes
    with ReLU and with a positively scaled norm, so little changes in what the net can express).
    The adaptive pool is the identity for 28x28 inputs and lets other sizes through with the same
    parameter count.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, norm: str = "batch"):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.MaxPool2d(2),
            norm2d(norm, 32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.MaxPool2d(2),
            norm2d(norm, 64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), norm2d(norm, 64), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Linear(64 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
