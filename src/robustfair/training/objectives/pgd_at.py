"""PGD adversarial training (Madry et al. 2018): minimise the cross-entropy at PGD examples.

The inner PGD starts uniformly in the eps-ball and takes ``steps`` steps of size ``alpha``
(L-inf sign steps or L2 unit-gradient steps), projecting onto the ball ∩ [0, 1].
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import Batch, Objective, cross_entropy, reduce_loss, training_attack


class PGDAT(Objective):
    name = "pgd_at"

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = training_attack(batch, steps=self.steps, norm=self.norm, loss="ce", start="uniform")
        with batch.autocast():
            logits = model(x_adv)
        per_sample = cross_entropy(logits, batch.y, batch)
        loss = reduce_loss(model, batch, logits, per_sample, logits_clean=None, logits_adv=logits)
        return loss, logits.detach()
