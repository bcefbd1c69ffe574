"""LeNet-5 (LeCun et al. 1998), with ReLU and max pooling as in modern re-implementations.

``conv5×5(6) -> pool -> conv5×5(16) -> pool -> fc 120 -> fc 84 -> classes``. The first
convolution pads by 2 (so 28×28 MNIST gives the classic 16×5×5 feature map); the second pads
only when the map is too small for a valid 5×5 convolution (8×8 digits), and an adaptive pool
caps the map at 5×5 so any image size works.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, pool_or_keep


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        pool1, size = pool_or_keep(image_size, nn.MaxPool2d(2))
        pad2 = 0 if size >= 10 else 2  # a valid 5×5 conv then a pool needs at least 10 pixels
        size = size - 4 + 2 * pad2
        pool2, size = pool_or_keep(size, nn.MaxPool2d(2))
        side = min(size, 5)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), pool1,
            nn.Conv2d(6, 16, 5, padding=pad2), nn.ReLU(), pool2,
            nn.AdaptiveAvgPool2d(side),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("lenet")
def lenet(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """LeNet-5 for any image size.

    >>> lenet(num_classes=10, in_channels=1, image_size=28)(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    return LeNet5(in_channels, image_size, num_classes)
