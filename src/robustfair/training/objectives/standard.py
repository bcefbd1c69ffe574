"""Standard training: cross-entropy on clean images."""
from __future__ import annotations

import torch
from torch import nn

from ._base import Batch, Objective, cross_entropy, reduce_loss


class Standard(Objective):
    name = "standard"
    adversarial = False

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with batch.autocast():
            logits = model(batch.x)
        per_sample = cross_entropy(logits, batch.y, batch)
        loss = reduce_loss(model, batch, logits, per_sample, logits_clean=logits, logits_adv=None)
        return loss, logits.detach()
