"""CODAT: class optimal distribution adversarial training (Zhi, Yu, Li, Zhao & Wu 2025,
"Towards Fair Class-wise Robustness: Class Optimal Distribution Adversarial Training",
arXiv:2501.04527).

CODAT, like FAAL, lets an adversary choose the class distribution ``q`` that maximises the
class-weighted loss inside a divergence ball around the uniform distribution ``u``, but with a
chi-square ball, whose inner maximisation has a closed form. With ``L_c`` the mean loss of class
``c`` in the batch (over the ``K_b`` classes present), ``Lbar`` their mean and ``sigma`` their
(population) standard deviation, and the ball ``1/2 · sum_c u_c (q_c/u_c - 1)^2 <= rho``:

    q_c = u_c · (1 + sqrt(2·rho) · (L_c - Lbar) / sigma)
    sum_c q_c L_c = Lbar + sqrt(2·rho) · sigma          (the deterministic equivalent)

so the model minimises "mean class loss plus a multiple of its spread over the classes", and
weights and model are optimised jointly. The gradient of the deterministic equivalent is the
gradient of ``sum_c q_c L_c`` with ``q`` held fixed (Danskin), so here each point's loss is
multiplied by ``q[y_i] · N / n[y_i]`` (``n``: the class's points in the batch) and averaged: the
batch loss *is* ``sum_c q_c L_c``. ``L`` is the objective's per-sample loss (the adversarial CE
under PGD-AT, CE + beta·KL under TRADES).

What we could not check, stated honestly: we had the paper's abstract and summary (a
chi-square ambiguity set with a closed-form inner maximum and a deterministic equivalent
objective), not its equations or code, so the ball's normalisation (the 1/2 above), the default
radius and the per-class loss are ours. ``rho=0.1`` (ours): a class one standard deviation
above the mean weighs ``1 + 0.45``. When ``rho`` is large enough that the closed form would give a
class a negative weight (a class more than ``1/sqrt(2·rho)`` standard deviations below the mean),
the weight is clipped at 0 and the others renormalised: then ``q`` is no longer the exact
chi-square maximiser (which would re-balance the remaining classes). Works with PGD-AT, TRADES,
FGSM-RS and standard training.

>>> import torch
>>> q = codat_distribution(torch.tensor([1.0, 2.0, 3.0]), rho=0.5)  # z = (-1.22, 0, 1.22)
>>> [round(v, 4) for v in q.tolist()]
[0.0, 0.3101, 0.6899]
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._base import register_mitigation
from ._common import DescribedMitigation, as_float


def codat_distribution(class_losses: torch.Tensor, rho: float,
                       present: torch.Tensor | None = None) -> torch.Tensor:
    """The chi-square worst-case distribution over the ``present`` classes (all by default),
    clipped at 0; absent classes get 0. Masked rather than indexed, so no host sync."""
    L = class_losses.float()
    if present is None:
        present = torch.ones_like(L, dtype=torch.bool)
    zero = torch.zeros_like(L)
    kb = present.sum().clamp_min(1).float()
    mean = torch.where(present, L, zero).sum() / kb
    sigma = (torch.where(present, (L - mean) ** 2, zero).sum() / kb).sqrt()
    z = (L - mean) / sigma.clamp_min(1e-12)
    q = (1.0 + math.sqrt(2.0 * rho) * z).clamp_min(0.0)
    q = torch.where(sigma > 1e-12, q, torch.ones_like(q))   # equal losses: uniform
    q = torch.where(present, q, zero)
    return q / q.sum()


@register_mitigation("codat")
class CODAT(DescribedMitigation):
    """Per-batch class weights: the closed-form worst case in a chi-square ball (mean + spread)."""

    def __init__(self, rho: float | str = 0.1) -> None:
        self.rho = as_float(rho, what="codat rho", low=0.0)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        k = self.ctx.num_classes
        counts = torch.bincount(y, minlength=k).float()
        sums = torch.zeros(k, device=y.device).index_add_(0, y, per_sample_loss.detach().float())
        q = codat_distribution(sums / counts.clamp_min(1.0), self.rho, present=counts > 0)
        # mean_i (q[y_i]·N/n[y_i])·loss_i = sum_c q_c · (mean loss of class c)
        scale = q[y] * len(y) / counts[y]
        return per_sample_loss * scale.to(per_sample_loss.dtype)

    def settings(self) -> dict[str, Any]:
        return {"rho": self.rho}
