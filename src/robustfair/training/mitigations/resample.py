"""Class-balanced re-sampling: draw each epoch's training points so every class is equally
likely (the classic long-tail remedy; see e.g. Buda et al. 2018, "A systematic study of the
class imbalance problem in convolutional neural networks", and Cui et al. 2019, Sec. 2).

Each epoch the trainer draws ``len(train)`` indices with replacement, point ``i`` with
probability proportional to ``1 / n[y_i]`` where ``n`` is the prior's effective class count.
With ``prior=frequency`` (default) each class is drawn with probability ``1/K``; on balanced
data this is plain sampling with replacement. With ``prior=robust_error`` the effective count is
``count_c · robust_acc_c`` (validation split, updated every epoch), so a class is drawn with
probability proportional to ``1 / robust_acc_c``: classes the model is least robust on are
over-sampled.

Works with every objective.

>>> import torch
>>> from robustfair.training.mitigations import MitigationContext
>>> m = Resample()
>>> m.setup(MitigationContext(num_classes=2, class_counts=torch.tensor([10, 30])))
>>> m.sample_weights().tolist()
[0.10000000149011612, 0.03333333507180214]
"""
from __future__ import annotations

import torch

from ._base import register_mitigation
from ._common import PriorMitigation


@register_mitigation("resample")
class Resample(PriorMitigation):
    """Per-class sampling weight ``1 / n_c`` (``n_c``: effective count from the prior)."""

    def __init__(self, prior: str = "frequency") -> None:
        super().__init__(prior)

    def sample_weights(self) -> torch.Tensor:
        return 1.0 / self.prior.counts()

    def class_probabilities(self) -> torch.Tensor:
        """Probability that a drawn training point belongs to each class (for logs and tests)."""
        mass = self.prior.base * self.sample_weights()
        return mass / mass.sum()
