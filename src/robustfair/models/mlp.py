"""A multi-layer perceptron on the flattened image: the simplest baseline."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._base import register_model
from ._layers import check_geometry, check_positive


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden size, then a linear classifier."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten (a reshape) also works on channels_last inputs
        return self.classifier(self.features(torch.flatten(x, 1)))


@register_model("mlp")
def mlp(*, num_classes: int, in_channels: int, image_size: int,
        hidden: Sequence[int] = (256, 256)) -> nn.Module:
    """MLP with the given hidden layer sizes (``hidden=[]`` gives a linear model).

    >>> mlp(num_classes=10, in_channels=1, image_size=8, hidden=[32])(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    check_geometry(in_channels, image_size)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a list of layer sizes, got {hidden!r}")
    sizes = [check_positive(h, "each hidden size") for h in hidden]
    return MLP(in_channels * image_size * image_size, sizes, num_classes)
