"""ResNet-18 (He et al. 2016) in its CIFAR form: a 3×3 stride-1 stem and no max pool.

Four stages of two basic blocks (``width``, 2×, 4×, 8× channels; stride 1, 2, 2, 2), then
global average pooling and a linear classifier: 11.2M parameters for 10 classes at the
default ``width=64``. ``stem="imagenet"`` gives the 7×7 stride-2 stem and max pool of the
ImageNet model, which saves compute on large images (96×96 STL-10).
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, init_weights, residual_stages


class BasicBlock(nn.Module):
    """``conv-bn-relu-conv-bn`` plus the shortcut (1×1 conv + bn if the shape changes), relu."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))  # not `+=`: keeps autograd graphs simple


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], in_channels: int, num_classes: int, *,
                 width: int, stem: str) -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(),
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.layers, c_in = residual_stages(
            lambda c_in, c_out, stride, _: BasicBlock(c_in, c_out, stride), width,
            [width * 2**i for i in range(len(blocks))], blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@register_model("resnet18")
def resnet18(*, num_classes: int, in_channels: int, image_size: int, width: int = 64,
             stem: str = "cifar") -> nn.Module:
    """ResNet-18; ``width`` is the first stage's channel count (64 in the paper).

    >>> m = resnet18(num_classes=10, in_channels=3, image_size=32, width=8)
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    return ResNet([2, 2, 2, 2], in_channels, num_classes,
                  width=check_positive(width, "width"), stem=stem)
