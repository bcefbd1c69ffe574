"""LDAM: label-distribution-aware margin loss (Cao et al. 2019, "Learning imbalanced datasets
with label-distribution-aware margin loss", NeurIPS).

The true-class logit is lowered by a class margin before the cross-entropy, so the model must
separate class ``c`` by at least that margin: ``CE(z - s·Delta_y·onehot(y), y)``. Margins follow
the paper's rule ``Delta_c ∝ n_c^(-1/4)``, scaled so the largest is ``max_margin``: rare (or,
with ``prior=robust_error``, non-robust) classes get the larger margins.

Defaults and where they come from:

- ``max_margin=0.5`` and ``s=30``: the paper's CIFAR settings (the authors' ``LDAMLoss(max_m=0.5,
  s=30)``).
- ``prior=frequency``: ``n_c`` = training-split counts; on balanced data every class gets the
  same margin. ``prior=robust_error``: ``n_c = count_c · robust_acc_c`` (validation split,
  updated every epoch).

How ``s`` enters: the paper's loss is ``CE(s·(cos - Delta·onehot))`` on a cosine (normalised)
head, whose logits are ``s·cos``. Our models have ordinary linear heads, so their logits stand
in for ``s·cos`` and the margin is applied in logit units as ``s·Delta_c`` (15 logits for the
largest margin at the defaults). With an ordinary head this is a strong margin; lower ``s`` for
a milder one. The margin enters only the training loss (logit offsets), never the attack or
evaluation. The paper's deferred re-weighting (DRW) is not part of this mitigation; combine
with ``cb_loss`` for the re-weighting.

>>> import torch
>>> from robustfair.training.mitigations import MitigationContext
>>> m = LDAM(s=1)
>>> m.setup(MitigationContext(num_classes=2, class_counts=torch.tensor([16, 1])))
>>> m.margins().tolist()
[0.25, 0.5]
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import register_mitigation
from ._common import PriorMitigation, as_float


@register_mitigation("ldam")
class LDAM(PriorMitigation):
    """Subtract ``s·Delta_y`` from the true-class logit in the training loss."""

    def __init__(self, max_margin: float | str = 0.5, s: float | str = 30.0,
                 prior: str = "frequency") -> None:
        super().__init__(prior)
        self.max_margin = as_float(max_margin, what="ldam max_margin", low=0.0, low_open=True)
        self.s = as_float(s, what="ldam s", low=0.0, low_open=True)

    def margins(self) -> torch.Tensor:
        """``Delta_c = max_margin · (n_c / min n)^(-1/4)``, Tensor[K]."""
        raw = self.prior.counts().pow(-0.25)
        return raw * (self.max_margin / raw.max())

    def logit_offsets(self) -> torch.Tensor:
        # matrix form: row y holds the offsets of a point of class y (only its own logit moves)
        return -torch.diag(self.s * self.margins())

    def settings(self) -> dict[str, Any]:
        return {"max_margin": self.max_margin, "s": self.s, **super().settings()}
