"""An exponential moving average of a model's weights (evaluation uses it when it is on).

Floating-point parameters and buffers are averaged; integer buffers (BatchNorm's batch count)
are copied.

>>> import torch
>>> m = torch.nn.Linear(1, 1, bias=False)
>>> with torch.no_grad(): _ = m.weight.fill_(0.0)
>>> ema = EMA(m, decay=0.5)
>>> with torch.no_grad(): _ = m.weight.fill_(1.0)
>>> ema.update(m)
>>> ema.model.weight.item()
0.5
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = decay·shadow + (1 - decay)·weights`` after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadow = list(self.model.state_dict().values())
        current = list(model.state_dict().values())
        floats = [(s, c) for s, c in zip(shadow, current) if s.is_floating_point()]
        if floats:
            s_list, c_list = zip(*floats)
            torch._foreach_lerp_(list(s_list), list(c_list), 1.0 - self.decay)
        for s, c in zip(shadow, current):
            if not s.is_floating_point():
                s.copy_(c)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
