"""DenseNet-121 (Huang et al. 2017) in the CIFAR form: a 3×3 stem and no initial pooling.

A 3×3 stem with ``2k`` channels, four dense blocks of 6, 12, 24 and 16 bottleneck layers
(bn-relu-1×1 conv to ``4k``, bn-relu-3×3 conv to ``k`` new channels, concatenated to the
input), transitions that halve the channels (1×1 conv) and the map (2×2 average pooling,
skipped once the map is 1 pixel wide), a final bn-relu, global average pooling and a linear
classifier. Growth rate ``k = 32`` gives 7.0M parameters for 10 classes.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive, init_weights, pool_or_keep

DENSENET121_BLOCKS = (6, 12, 24, 16)


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth_rate: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(),
            nn.Conv2d(c_in, 4 * growth_rate, 1, bias=False),
            nn.BatchNorm2d(4 * growth_rate), nn.ReLU(),
            nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.net(x)], dim=1)


class Transition(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, pool: nn.Module) -> None:
        super().__init__(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False),
                         pool)


class DenseNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], in_channels: int, image_size: int,
                 num_classes: int, growth_rate: int, compression: float = 0.5) -> None:
        super().__init__()
        c = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        size = image_size
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth_rate))
                c += growth_rate
            if i < len(blocks) - 1:
                pool, size = pool_or_keep(size, nn.AvgPool2d(2))
                c_out = int(c * compression)
                layers.append(Transition(c, c_out, pool))
                c = c_out
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("densenet121")
def densenet121(*, num_classes: int, in_channels: int, image_size: int,
                growth_rate: int = 32) -> nn.Module:
    """DenseNet-121 with growth rate ``growth_rate`` (32 in the paper).

    >>> m = densenet121(num_classes=10, in_channels=1, image_size=8, growth_rate=4)
    >>> m(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    return DenseNet(DENSENET121_BLOCKS, in_channels, image_size, num_classes,
                    check_positive(growth_rate, "growth_rate"))
