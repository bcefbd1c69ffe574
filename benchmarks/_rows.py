"""Model rows an attack spends: a wrapper module that counts them (reused by the benchmarks).

A "row" is one image through the model. ``RowCounter(net)`` forwards to ``net`` and counts

* ``forward_rows``: the rows of every forward pass (padding included, if an attack pads);
* ``backward_rows``: the rows a backward pass went through (a hook on the output; a pass
  whose output is differentiated k times, as untargeted FAB's K-class gradients, counts k
  times), so ``forward_rows - backward_rows`` are the forward-only rows.

>>> import torch
>>> counted = RowCounter(torch.nn.Linear(3, 2))
>>> x = torch.zeros(5, 3, requires_grad=True)
>>> counted(x).sum().backward()
>>> with torch.no_grad():
...     _ = counted(torch.zeros(4, 3))
>>> counted.rows()
{'forward': 9, 'backward': 5}
>>> counted.reset().rows()
{'forward': 0, 'backward': 0}
"""
from __future__ import annotations

import torch
from torch import nn


class RowCounter(nn.Module):
    """Counts the rows of the forward passes through ``net`` and of those a backward pass reached."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        n = len(x)
        self.forward_rows += n
        if out.requires_grad:

            def count(grad: torch.Tensor) -> torch.Tensor:
                self.backward_rows += n
                return grad

            out.register_hook(count)
        return out

    def rows(self) -> dict[str, int]:
        """``{"forward": ..., "backward": ...}`` so far."""
        return {"forward": self.forward_rows, "backward": self.backward_rows}

    def reset(self) -> "RowCounter":
        """Start counting again from zero; returns the counter."""
        self.forward_rows = self.backward_rows = 0
        return self
