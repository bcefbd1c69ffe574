"""TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta · KL(f(x) || f(x'))``.

The inner attack maximises the KL term from a small Gaussian start (std ``trades_start``,
0.001 in the paper). With a per-class beta from a mitigation, sample ``i`` uses ``beta[y_i]``.
Logit offsets from mitigations enter the cross-entropy term only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Batch, Objective, cross_entropy, reduce_loss, training_attack


class TRADES(Objective):
    name = "trades"
    beta_weighted = True

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = training_attack(batch, steps=self.steps, norm=self.norm, loss="kl",
                                start="normal", start_std=self.trades_start)
        with batch.autocast():
            logits_clean = model(batch.x)
            logits_adv = model(x_adv)
        natural = cross_entropy(logits_clean, batch.y, batch)
        robust = F.kl_div(F.log_softmax(logits_adv.float(), dim=1),
                          F.softmax(logits_clean.float(), dim=1), reduction="none").sum(dim=1)
        beta = batch.beta if batch.beta is not None else self.beta
        per_sample = natural + beta * robust
        loss = reduce_loss(model, batch, logits_clean, per_sample, logits_clean=logits_clean,
                           logits_adv=logits_adv)
        return loss, logits_adv.detach()
