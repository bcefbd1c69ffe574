"""Logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment", ICLR).

The logit-adjusted loss adds ``tau · log pi_c`` to every logit ``c`` inside the training loss:
``CE(z + tau·log pi, y)``. A rare class (small ``pi_c``) has its logit lowered during training,
so the model learns to raise it, which at test time (no adjustment) favours that class.

Defaults and where they come from:

- ``tau=1``: the paper's default (Sec. 5; Fisher-consistent for the balanced error).
- ``prior=frequency``: ``pi`` = training-split class frequencies. On balanced data this is a
  constant shift of every logit, which the softmax ignores: the method is then a no-op, as it
  should be. ``prior=robust_error``: ``pi_c ∝ count_c · robust_acc_c`` (validation split,
  updated every epoch), so classes with a high robust error are treated as rare.

The offsets enter only the training loss, never the attack or evaluation; with TRADES they
enter the cross-entropy term only. Works with every objective.

>>> import torch
>>> from robustfair.training.mitigations import MitigationContext
>>> m = LogitAdjust(tau=1.0)
>>> m.setup(MitigationContext(num_classes=2, class_counts=torch.tensor([1, 3])))
>>> [round(v, 4) for v in m.logit_offsets().tolist()]
[-1.3863, -0.2877]
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import register_mitigation
from ._common import PriorMitigation, as_float


@register_mitigation("logit_adjust")
class LogitAdjust(PriorMitigation):
    """Add ``tau · log prior`` to the logits in the training loss."""

    def __init__(self, tau: float | str = 1.0, prior: str = "frequency") -> None:
        super().__init__(prior)
        self.tau = as_float(tau, what="logit_adjust tau", low=0.0)

    def logit_offsets(self) -> torch.Tensor:
        return self.tau * torch.log(self.prior.probabilities())

    def settings(self) -> dict[str, Any]:
        return {"tau": self.tau, **super().settings()}
