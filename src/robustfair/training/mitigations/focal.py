"""Focal loss (Lin et al. 2017, "Focal loss for dense object detection", ICCV).

The cross-entropy term of the objective, ``-log p_t``, becomes ``-(1 - p_t)^gamma · log p_t``:
points the model already classifies confidently contribute little, hard points dominate.
``p_t`` is the softmax probability of the true class on the logits the objective's main term
uses (adversarial for PGD-AT / FGSM-RS, clean for standard training and for TRADES' natural
term), with the other mitigations' logit offsets included. The modulating factor is part of
the graph (not detached), as in the paper.

Defaults and where they come from:

- ``gamma=2``: the paper's best value (Table 1a).
- ``prior="none"``: no class balancing (the multi-class focal loss of Cao et al.'s LDAM-DRW
  code). ``prior=frequency`` adds the paper's alpha-balancing with ``alpha_c ∝ 1/n_c`` (mean 1;
  uniform on balanced data); ``prior=robust_error`` uses the effective counts
  ``count_c · robust_acc_c`` from the validation split, so classes with a high robust error
  weigh more.

With TRADES only the cross-entropy term is modulated; the KL term is left as it is. With label
smoothing, the smoothing part of the loss is left unmodulated.

>>> import torch
>>> m = Focal(gamma=2)
>>> logits = torch.tensor([[4.0, 0.0], [0.0, 0.0]]); y = torch.tensor([0, 0])
>>> ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
>>> [round(r, 5) for r in (m.loss(logits, y, ce) / ce).tolist()]  # (1 - p_t)^2
[0.00032, 0.25]
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import ClassPrior, DescribedMitigation, as_choice, as_float


@register_mitigation("focal")
class Focal(DescribedMitigation):
    """Multiply the cross-entropy of each point by ``(1 - p_t)^gamma``."""

    def __init__(self, gamma: float | str = 2.0, prior: str = "none") -> None:
        self.gamma = as_float(gamma, what="focal gamma", low=0.0)
        kind = as_choice(prior, ("none", "frequency", "robust_error"), what="prior")
        self.prior = None if kind == "none" else ClassPrior(kind)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        if self.prior is not None:
            self.prior.setup(ctx)

    def class_weights(self) -> torch.Tensor | None:
        if self.prior is None:
            return None
        alpha = 1.0 / self.prior.counts()
        return alpha * (alpha.numel() / alpha.sum())  # mean 1

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        p_t = torch.exp(-ce)
        factor = (1.0 - p_t).clamp_min(0.0).pow(self.gamma)
        # replace the CE term by its focal version and leave every other term untouched
        return per_sample_loss + (factor - 1.0) * ce

    def end_epoch(self, stats: EpochStats) -> None:
        if self.prior is not None:
            self.prior.update(stats)

    def settings(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "prior": "none" if self.prior is None else self.prior.kind}

    def describe(self) -> str:
        tail = "no class balancing" if self.prior is None else self.prior.describe()
        return f"{super().describe()}: {tail}"

    def state_dict(self) -> dict[str, Any]:
        return {} if self.prior is None else {"prior": self.prior.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.prior is not None:
            self.prior.load_state_dict(state.get("prior", {}))
