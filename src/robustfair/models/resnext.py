"""ResNeXt-29 for CIFAR (Xie et al. 2017, Sec. 5.3): ``ResNeXt-29 (C×dd)``.

A 3×3 stem with 64 channels, three stages of three bottleneck blocks (stride 1, 2, 2), global
average pooling and a linear classifier (9 blocks × 3 layers + 2 = 29 layers). In stage ``i``
a block maps to ``64 * widen_factor * 2^i`` channels (256, 512, 1024 by default) through a
grouped 3×3 convolution of ``cardinality`` groups, each ``bottleneck_width * 2^i`` channels
wide. The paper's 8×64d has 34.4M parameters; the default here is the smaller 2×64d.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, init_weights, residual_stages


class ResNeXtBlock(nn.Module):
    """1×1 reduce, grouped 3×3, 1×1 expand (each with bn), plus a projection shortcut if needed."""

    def __init__(self, c_in: int, c_out: int, inner: int, cardinality: int, stride: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(c_in, inner, 1, bias=False), nn.BatchNorm2d(inner),
                                    nn.ReLU())
        self.grouped = nn.Sequential(
            nn.Conv2d(inner, inner, 3, stride=stride, padding=1, groups=cardinality, bias=False),
            nn.BatchNorm2d(inner), nn.ReLU(),
        )
        self.expand = nn.Sequential(nn.Conv2d(inner, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.grouped(self.reduce(x)))
        return self.relu(out + self.shortcut(x))


class ResNeXt29(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, *, cardinality: int,
                 bottleneck_width: int, widen_factor: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU())
        self.layers, c_in = residual_stages(
            lambda c_in, c_out, stride, stage: ResNeXtBlock(
                c_in, c_out, cardinality * bottleneck_width * 2**stage, cardinality, stride),
            64, [64 * widen_factor * 2**i for i in range(3)], [3] * 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@register_model("resnext29")
def resnext29(*, num_classes: int, in_channels: int, image_size: int, cardinality: int = 2,
              bottleneck_width: int = 64, widen_factor: int = 4) -> nn.Module:
    """ResNeXt-29 (``cardinality``×``bottleneck_width``d), e.g. 2×64d (default), 8×64d, 32×4d.

    >>> m = resnext29(num_classes=10, in_channels=3, image_size=32, cardinality=2,
    ...               bottleneck_width=4, widen_factor=1)
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    return ResNeXt29(in_channels, num_classes,
                     cardinality=check_positive(cardinality, "cardinality"),
                     bottleneck_width=check_positive(bottleneck_width, "bottleneck_width"),
                     widen_factor=check_positive(widen_factor, "widen_factor"))
