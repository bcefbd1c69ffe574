"""Class-balanced loss (Cui et al. 2019, "Class-balanced loss based on effective number of
samples", CVPR).

Class ``c`` is weighted by the inverse of its *effective number* of samples,
``w_c = (1 - beta) / (1 - beta^n_c)``, normalised so the weights sum to ``K`` (the paper's
normalisation). ``beta=0`` gives no re-weighting, ``beta -> 1`` inverse-frequency weighting.

Defaults and where they come from:

- ``beta=0.9999``: the paper's recommended value for CIFAR-scale long-tail data (Sec. 5.2).
- ``prior=frequency``: ``n_c`` = training-split count (uniform weights on balanced data).
  ``prior=robust_error``: ``n_c = count_c · robust_acc_c`` from the validation split, updated
  every epoch, so classes with a high robust error weigh more.

The weights multiply the objective's per-sample loss, so they combine with every objective
(and with ``focal`` for the paper's class-balanced focal loss).

>>> import torch
>>> from robustfair.training.mitigations import MitigationContext
>>> m = ClassBalancedLoss(beta=0.9)
>>> m.setup(MitigationContext(num_classes=2, class_counts=torch.tensor([1, 10])))
>>> [round(w, 4) for w in m.class_weights().tolist()]
[1.7338, 0.2662]
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._base import register_mitigation
from ._common import PriorMitigation, as_float


def class_balanced_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """``(1 - beta) / (1 - beta^n)`` normalised to sum to ``len(counts)``."""
    n = counts.float()
    if beta == 0.0:
        w = torch.ones_like(n)
    else:
        # -expm1(n·log beta) = 1 - beta^n, accurate in float32 even for beta close to 1
        w = (1.0 - beta) / (-torch.expm1(n * math.log(beta)))
    return w * (len(w) / w.sum())


@register_mitigation("cb_loss")
class ClassBalancedLoss(PriorMitigation):
    """Per-class loss weight from the effective number of samples."""

    def __init__(self, beta: float | str = 0.9999, prior: str = "frequency") -> None:
        super().__init__(prior)
        self.beta = as_float(beta, what="cb_loss beta", low=0.0, high=1.0, high_open=True)

    def class_weights(self) -> torch.Tensor:
        return class_balanced_weights(self.prior.counts(), self.beta).to(self.ctx.device)

    def settings(self) -> dict[str, Any]:
        return {"beta": self.beta, **super().settings()}
