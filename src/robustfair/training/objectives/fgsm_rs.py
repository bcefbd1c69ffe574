"""Fast adversarial training (Wong, Rice & Kolter 2020): FGSM from a random start.

The start is uniform in the eps-ball, one step of ``alpha = 1.25·eps`` follows, and the result
is projected back onto the ball ∩ [0, 1]. It is prone to catastrophic overfitting (robust
accuracy against PGD suddenly collapses); the trainer guards against it after every epoch
(``co_guard``) and keeps the last epoch before the collapse.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import Batch, Objective, cross_entropy, reduce_loss, training_attack


class FGSMRS(Objective):
    name = "fgsm_rs"

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = training_attack(batch, steps=1, norm=self.norm, loss="ce", start="uniform")
        with batch.autocast():
            logits = model(x_adv)
        per_sample = cross_entropy(logits, batch.y, batch)
        loss = reduce_loss(model, batch, logits, per_sample, logits_clean=None, logits_adv=logits)
        return loss, logits.detach()
