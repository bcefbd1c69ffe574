"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-depth-k, e.g. WRN-28-10 and WRN-34-10.

A 3×3 stem with 16 channels, three stages of ``(depth - 4) / 6`` pre-activation blocks with
16k, 32k and 64k channels (stride 1, 2, 2), dropout between a block's two convolutions, a
final bn-relu, global average pooling and a linear classifier. WRN-28-10 has 36.5M
parameters; WRN-34-10 is the usual model for PGD-AT and TRADES on CIFAR-10.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, check_probability, init_weights, residual_stages


class WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(a)
        out = self.relu(self.bn2(self.conv1(a)))
        out = self.conv2(self.dropout(out))
        return out + shortcut


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, in_channels: int, num_classes: int,
                 dropout: float) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.layers, c_in = residual_stages(
            lambda c_in, c_out, stride, _: WideBlock(c_in, c_out, stride, dropout), 16,
            widths, [n] * len(widths))
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("wide_resnet")
def wide_resnet(*, num_classes: int, in_channels: int, image_size: int, depth: int = 28,
                widen_factor: int = 10, dropout: float = 0.0) -> nn.Module:
    """WRN-``depth``-``widen_factor``; ``depth`` must be ``6n + 4`` (16, 22, 28, 34, 40).

    >>> m = wide_resnet(num_classes=10, in_channels=3, image_size=32, depth=10, widen_factor=1)
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    check_positive(depth, "depth")
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(
            f"wide_resnet depth must satisfy (depth - 4) % 6 == 0 (e.g. 16, 22, 28, 34, 40), "
            f"got {depth}"
        )
    return WideResNet(depth, check_positive(widen_factor, "widen_factor"), in_channels,
                      num_classes, check_probability(dropout, "dropout"))
