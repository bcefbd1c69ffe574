"""CFOL: class-focused online learning (Pethick, Chrysos & Cevher 2023, "Revisiting adversarial
training for the worst-performing class", TMLR; authors' code:
github.com/LIONS-EPFL/class-focused-online-learning-code).

CFOL trains against the worst class through a min-max-max game: an adversary over the classes
(Exp3, a bandit algorithm) picks which class to train on, the model minimises the adversarial
loss of the classes it is handed. The class distribution is

    q = softmax(w),   p = gamma · uniform + (1 - gamma) · q

and the training points are drawn class first (class ``c`` with probability ``p_c``), then a
point of that class uniformly. After each batch the adversary raises the log-weight of every
class the model got wrong under attack, importance-weighted by how often it is drawn:
``w_c += eta · sum_{i in batch, y_i = c} [adversarial prediction_i != y_i] / p_c``.

Here the trainer draws an epoch's points at the start of the epoch (``sample_weights``: point
``i`` with probability ∝ ``p[y_i] / n[y_i]``, so class ``c`` with probability ``p_c``), so the
distribution the sampler uses changes once per epoch. The Exp3 update is accumulated over the
epoch from the training attack's adversarial predictions (the ``loss`` hook; clean predictions
under standard training), importance-weighted with the ``p`` that drew the epoch, and applied at
the epoch's end.

Defaults and where they come from: ``gamma=0.5`` (the authors' ``class_sampler_gamma``); the
learning rate ``eta`` is given *per epoch*: the authors' per-point step (``5e-6`` in their
adversarial-training configs) times their training-set size (CIFAR-10: 50,000), ``eta=0.25``,
so a class that is always wrong gains 0.25 in log-weight per epoch whatever the data set's size
(here ``w_c += eta/N_train · sum errors / p_c``). The uniform base distribution and the uniform
prior (``w = 0``) are the authors' defaults.

Deviations: the sampler's distribution is refreshed once per epoch, not after every batch (the
weights themselves follow the same Exp3 update); the authors' optional ``reweight`` variant
(uniform sampling, loss weights ``K·p``) is not implemented. Works with every objective
(it only changes which points are drawn), CFOL's paper runs it with PGD-AT and TRADES.

>>> import torch
>>> from robustfair.training.mitigations import MitigationContext
>>> m = CFOL()
>>> m.setup(MitigationContext(num_classes=2, class_counts=torch.tensor([30, 10])))
>>> m.class_probabilities().tolist(), [round(v, 4) for v in m.sample_weights().tolist()]
([0.5, 0.5], [0.0167, 0.05])
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import DescribedMitigation, all_reduce_sum, as_float


def cfol_distribution(w: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma · uniform + (1 - gamma) · softmax(w)``."""
    k = w.numel()
    return gamma / k + (1.0 - gamma) * torch.softmax(w.float(), dim=0)


@register_mitigation("cfol")
class CFOL(DescribedMitigation):
    """Draw training classes from an Exp3 distribution that focuses on the misclassified ones."""

    def __init__(self, gamma: float | str = 0.5, eta: float | str = 0.25) -> None:
        self.gamma = as_float(gamma, what="cfol gamma", low=0.0, high=1.0, low_open=True)
        self.eta = as_float(eta, what="cfol eta", low=0.0)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        self.w = torch.zeros(ctx.num_classes, device=ctx.device)
        self.counts = ctx.class_counts.to(device=ctx.device, dtype=torch.float32)
        self.n_train = float(self.counts.sum().clamp_min(1.0))
        self.pending = torch.zeros(ctx.num_classes, device=ctx.device)

    def class_probabilities(self) -> torch.Tensor:
        """Tensor[K]: the probability of drawing each class in the current epoch."""
        return cfol_distribution(self.w, self.gamma)

    def sample_weights(self) -> torch.Tensor:
        p = self.class_probabilities()
        # a class with no training point cannot be drawn (weight 0 keeps multinomial valid)
        return torch.where(self.counts > 0, p / self.counts.clamp_min(1.0), torch.zeros_like(p))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        source = ctx.get("logits_adv")
        if source is None:
            source = logits
        wrong = (source.detach().argmax(dim=1) != y).float()
        p = self.class_probabilities().to(wrong.device)
        self.pending.index_add_(0, y.to(self.pending.device),
                                (wrong / p[y]).to(self.pending.device))
        return per_sample_loss

    def end_epoch(self, stats: EpochStats) -> None:
        self.w = self.w + (self.eta / self.n_train) * all_reduce_sum(self.pending)
        self.pending.zero_()

    def settings(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "eta": self.eta}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = torch.as_tensor(state["w"]).to(self.ctx.device, torch.float32)
