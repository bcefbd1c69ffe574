"""FAAL: fairness-aware adversarial learning (Zhang, Zhang, Mu, Huang & Ruan 2024, "Towards
Fairness-Aware Adversarial Learning", CVPR 2024; authors' code: github.com/TrustAI/FAAL).

FAAL turns adversarial training into a min-max-max problem: besides the attack, an adversary
picks the worst class distribution ``p`` inside a KL ball around the uniform one, and the model
minimises the loss under it. In every batch, with ``L_c`` the mean of class ``c``'s margin
``max_{j != y} softmax_j(x') - softmax_y(x')`` on the adversarial examples and ``n_c`` its
number of points in the batch (the authors' objective sums ``p[y_i]·L[y_i]`` over the batch):

    p = argmax_{p in simplex, KL(uniform || p) <= r}  sum_c n_c · L_c · p_c

and the batch loss is ``K · mean_i p[y_i] · loss_i`` (the adversarial CE under PGD-AT; CE +
beta·KL under TRADES, as in the authors' code), ``p`` held fixed (no gradient through it).

The authors solve the inner problem with CVXPY in every batch. It has a closed form up to one
number: the KKT conditions give ``p_c ∝ 1 / (mu - a_c)`` (``a_c = n_c·L_c/N``) for a ``mu`` above
``max a``; ``KL(uniform || p)`` falls monotonically from infinity to 0 as ``mu`` grows, so ``mu``
is found by bisection (on the device, a fixed number of steps: no host sync per batch).
A ball of radius 0, or equal scores, gives the uniform distribution.

Defaults and where they come from: ``r=0.5`` (the authors' README and scripts, ``--scale
0.5``). Deviation: the paper *fine-tunes* a robust model for two epochs (SGD lr 0.01); here FAAL
trains from the first epoch after ``warmup`` (a fraction of the epochs trained plainly first,
default 0) — load the weights of a PGD-AT run and give a short run to fine-tune as the paper
does. Works with PGD-AT, TRADES and FGSM-RS (the authors' code also has MART and AWP variants,
not here); with standard training it uses the clean margins.

>>> import torch
>>> p = faal_distribution(torch.tensor([1.0, 0.0]), r=0.5 * math.log(9 / 8))
>>> [round(v, 4) for v in p.tolist()]   # mu = 2: p ∝ (1/(2-1), 1/2)
[0.6667, 0.3333]
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import DescribedMitigation, as_float

BISECTION_STEPS = 60  # on log(mu - max a) over 60 decades: far below float32 resolution


def probability_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} softmax_j - softmax_y`` per point (the authors' ``cw`` on probabilities)."""
    probs = F.softmax(logits.detach().float(), dim=1)
    true = probs.gather(1, y[:, None]).squeeze(1)
    others = probs.scatter(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - true


def faal_distribution(scores: torch.Tensor, r: float) -> torch.Tensor:
    """The maximiser of ``scores · p`` over the simplex with ``KL(uniform || p) <= r``."""
    a = scores.double()
    k = a.numel()
    if r <= 0 or k < 2:
        return torch.full_like(scores, 1.0 / k, dtype=torch.float32)
    below = a.max() - a              # >= 0; 0 at the top score
    spread = below.max().clamp_min(1e-12)

    def p_at(log_gap: torch.Tensor) -> torch.Tensor:
        # mu - a_c = (max a - a_c) + (mu - max a), summed in this order so a tiny mu - max a
        # is not absorbed by the scores
        inv = 1.0 / (below + torch.exp(log_gap))
        return inv / inv.sum()

    def kl(p: torch.Tensor) -> torch.Tensor:
        return (math.log(1.0 / k) - torch.log(p)).mean()

    # mu - max a between spread·1e-30 (p nearly one-hot) and spread·1e30 (p nearly uniform)
    lo = torch.log(spread) - 69.0
    hi = torch.log(spread) + 69.0
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        too_far = kl(p_at(mid)) > r   # still outside the ball: move toward uniform
        lo = torch.where(too_far, mid, lo)
        hi = torch.where(too_far, hi, mid)
    return p_at(hi).float()           # hi always lies inside the ball (equal scores: uniform)


@register_mitigation("faal")
class FAAL(DescribedMitigation):
    """Per-batch worst-case class distribution in a KL ball around uniform (DRO weights)."""

    def __init__(self, r: float | str = 0.5, warmup: float | str = 0.0) -> None:
        self.r = as_float(r, what="faal radius r", low=0.0)
        self.warmup = as_float(warmup, what="faal warmup", low=0.0, high=1.0, high_open=True)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        self.begin = int(round(self.warmup * ctx.epochs))
        self.epochs_done = 0
        self.last_distribution: torch.Tensor | None = None

    def batch_distribution(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's worst-case class distribution p (Tensor[K])."""
        k = self.ctx.num_classes
        margins = probability_margins(logits, y)
        n = torch.bincount(y, minlength=k).to(margins.dtype)
        total = torch.zeros(k, device=margins.device).index_add_(0, y, margins)
        # n_c · L_c / N; an absent class scores 0 (the authors' -1 times its 0 points)
        return faal_distribution(total / len(y), self.r)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        if self.epochs_done < self.begin:
            return per_sample_loss
        source = ctx.get("logits_adv")
        if source is None:
            source = logits
        p = self.batch_distribution(source, y).to(per_sample_loss.device)
        self.last_distribution = p
        return per_sample_loss * (self.ctx.num_classes * p[y])

    def end_epoch(self, stats: EpochStats) -> None:
        self.epochs_done += 1

    def settings(self) -> dict[str, Any]:
        return {"r": self.r, "warmup": self.warmup}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = int(state["epochs_done"])
