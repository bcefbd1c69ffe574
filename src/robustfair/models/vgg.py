"""VGG-19 with batch norm (Simonyan & Zisserman 2015), in the usual CIFAR form.

Sixteen 3×3 conv-bn-relu layers in five stages (64, 128, 256, 512, 512 channels; 2, 2, 4, 4, 4
layers), each stage ending in 2×2 max pooling, then a single linear classifier on the pooled
512 features (20.0M parameters for 10 classes). A pooling stage is skipped when the map is
already 1 pixel wide, so the net also runs on 8×8 images.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, conv_bn_relu, init_weights, pool_or_keep

# (channel multiple of `width`, number of conv layers) per stage
VGG19_STAGES = [(1, 2), (2, 2), (4, 4), (8, 4), (8, 4)]


class VGG(nn.Module):
    def __init__(self, stages: list[tuple[int, int]], in_channels: int, image_size: int,
                 num_classes: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for mult, n in stages:
            for _ in range(n):
                layers += conv_bn_relu(c_in, mult * width)
                c_in = mult * width
            pool, size = pool_or_keep(size, nn.MaxPool2d(2))
            layers.append(pool)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1×1 already at 32×32; averages larger maps
        self.classifier = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("vgg19_bn")
def vgg19_bn(*, num_classes: int, in_channels: int, image_size: int, width: int = 64) -> nn.Module:
    """VGG-19-BN; ``width`` is the first stage's channel count (64 in the paper).

    >>> m = vgg19_bn(num_classes=10, in_channels=1, image_size=8, width=4)
    >>> m(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    return VGG(VGG19_STAGES, in_channels, image_size, num_classes, check_positive(width, "width"))
