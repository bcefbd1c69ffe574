"""The CIFAR ResNets of He et al. 2016 (Sec. 4.2): ResNet-20/32/44/56/110.

A 3×3 stem with 16 channels, three stages of ``(depth - 2) / 6`` basic blocks with 16, 32
and 64 channels (stride 1, 2, 2), global average pooling and a linear classifier. Shortcuts
that change shape use the paper's option A: subsample by 2 and zero-pad the new channels,
which adds no parameters (ResNet-56: 0.85M parameters).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, init_weights, residual_stages


class PadShortcut(nn.Module):
    """Option-A shortcut: every other pixel, channels zero-padded from ``c_in`` to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # pad spec runs from the last dimension backwards: (W, W, H, H, C, C)
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = PadShortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.layers, c_in = residual_stages(
            lambda c_in, c_out, stride, _: CifarBlock(c_in, c_out, stride), width,
            [width * 2**i for i in range(3)], [n] * 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@register_model("resnet56")
def resnet56(*, num_classes: int, in_channels: int, image_size: int, depth: int = 56,
             width: int = 16) -> nn.Module:
    """CIFAR ResNet; ``depth`` must be ``6n + 2`` (20, 32, 44, 56, 110), 56 by default.

    >>> m = resnet56(num_classes=10, in_channels=3, image_size=32, depth=20)
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    check_positive(depth, "depth")
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    return CifarResNet(depth, in_channels, num_classes, check_positive(width, "width"))
