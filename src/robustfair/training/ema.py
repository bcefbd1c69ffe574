"""An exponential moving average of a model's weights (evaluation uses it when it is on).

Floating-point parameters and buffers are averaged; integer buffers (BatchNorm's batch count)
are copied. The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so
the average does not cling to the random initial weights in a short run.

>>> import torch
>>> m = torch.nn.Linear(1, 1, bias=False)
>>> with torch.no_grad(): _ = m.weight.fill_(0.0)
>>> ema = EMA(m, decay=0.5)
>>> with torch.no_grad(): _ = m.weight.fill_(1.0)
>>> ema.update(m)  # first update: min(0.5, 1/10) = 0.1
>>> round(ema.model.weight.item(), 6)
0.9
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = d·shadow + (1 - d)·weights`` after every optimiser step, ``d`` warming up to ``decay``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        shadow = list(self.model.state_dict().values())
        current = list(model.state_dict().values())
        floats = [(s, c) for s, c in zip(shadow, current, strict=True) if s.is_floating_point()]
        if floats:
            s_list, c_list = zip(*floats, strict=True)
            torch._foreach_lerp_(list(s_list), list(c_list), 1.0 - decay)
        for s, c in zip(shadow, current, strict=True):
            if not s.is_floating_point():
                s.copy_(c)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = int(updates)
