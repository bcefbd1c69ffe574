"""Pre-activation ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The standard model of the adversarial-training literature (Rice et al. 2020; the CFA and
DAFA baselines). Each block is ``bn-relu-conv-bn-relu-conv`` plus the shortcut; when the
shape changes the shortcut is a 1×1 convolution of the *activated* input. CIFAR stem (3×3,
stride 1), four stages (``width`` ×1, 2, 4, 8; stride 1, 2, 2, 2), a final bn-relu, global
average pooling and a linear classifier: 11.2M parameters for 10 classes.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, init_weights, residual_stages


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(a)
        out = self.conv1(a)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, blocks: list[int], in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.layers, c_in = residual_stages(
            lambda c_in, c_out, stride, _: PreActBlock(c_in, c_out, stride), width,
            [width * 2**i for i in range(len(blocks))], blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("preact_resnet18")
def preact_resnet18(*, num_classes: int, in_channels: int, image_size: int,
                    width: int = 64) -> nn.Module:
    """PreAct ResNet-18; ``width`` is the first stage's channel count (64 in the paper).

    >>> m = preact_resnet18(num_classes=10, in_channels=3, image_size=32, width=8)
    >>> m(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    return PreActResNet([2, 2, 2, 2], in_channels, num_classes, check_positive(width, "width"))
