"""Wrappers that make a trained model hard to evaluate, for the sanity-flag and AutoAttack tests."""
import torch
from torch import nn


class Quantised(nn.Module):
    """Rounds its input to 5 grey levels: every input gradient is exactly zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class Noisy(nn.Module):
    """Gaussian noise on the input, in eval mode too: a randomised model."""

    def __init__(self, net: nn.Module, std: float = 0.2) -> None:
        super().__init__()
        self.net, self.std = net, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + self.std * torch.randn_like(x)).clamp(0, 1))
