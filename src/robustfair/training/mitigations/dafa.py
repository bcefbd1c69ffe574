"""DAFA: distance-aware fair adversarial training (Lee et al. 2024, "DAFA: Distance-aware fair
adversarial training", ICLR).

Under attack, a hard class is mostly confused with the classes *similar* to it, so DAFA moves
robustness between similar classes only. During the warm-up epoch it records the softmax of the
training adversarial examples and forms the class-similarity matrix ``P`` (row ``i``: the mean
probability vector of class ``i``'s points; ``P_ii`` is how well class ``i`` is held). Then,
for every pair ``i != j``,

    W_i += lam · P_ij · P_jj   if P_ii < P_jj   (i is the harder of the two)
    W_i -= lam · P_ji · P_ii   if P_ii > P_jj   (i is the easier one)

starting from ``W = 1`` (the paper's Algorithm 2). Each pair moves one amount, the harder class's
confusion with the easier one times the easier one's hold, from the easier class to the harder,
so the weights always sum to the number of classes. A class gains weight from each easier class
it is confused with and gives weight to the harder classes confused with it; classes confused
with nothing keep ``W = 1``. (Ties move nothing, as in the paper; the authors' code makes both
classes of a tie give.) ``W`` is fixed from then on and is used twice:

* as a per-class loss weight (DAFA weights the cross-entropy term; with TRADES the KL term keeps
  weight 1, which we reproduce with the per-class beta ``beta / W_c``);
* as a per-class margin: class ``c`` is attacked with radius ``W_c · eps`` (and step
  ``W_c · alpha``); ``margin=false`` keeps the common radius (loss weights only).

The margin follows the paper and the authors' TRADES code. Their PGD-AT code projects each step
back onto the common ``eps`` ball, so their PGD-AT runs enlarge no class's radius. A per-class
radius can become a label on data with a flat background (docs/MITIGATIONS.md, "A per-class
radius can become the label"); ``margin=false`` avoids that.

Defaults and where they come from (the authors' code, rucy74/DAFA): ``lam=1.0`` (``lambda``
accepted too; the paper's value for CIFAR-10), ``warmup=70/110`` (weights computed after epoch
70 of 110; here after ``round(warmup·epochs)`` epochs, at least one).

Measurement: like the authors' code, the similarity matrix comes from the training adversarial
examples of the warm-up epoch (collected in the ``loss`` hook from the adversarial logits; the
clean logits under standard training). The per-epoch validation statistics the trainer passes
to ``end_epoch`` hold only accuracies, no probability matrix; see docs/MITIGATIONS.md.

Works with PGD-AT, TRADES and FGSM-RS. Sets per-class eps (not with ``class_eps``, ``frl``
re-margin, ``cfa`` CCM) and, under TRADES, per-class beta (not with ``frl`` re-weight or
``cfa`` CCR).

>>> import torch
>>> P = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
>>> [round(w, 2) for w in dafa_weights(P, lam=1.0).tolist()]  # 0 is harder and similar to 1
[1.32, 0.68, 1.0]
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..._checks import as_bool
from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import (ClasswiseCounter, DescribedMitigation, as_float, epoch_index, take_lambda,
                      trades_beta)


def dafa_weights(similarity: torch.Tensor, lam: float) -> torch.Tensor:
    """DAFA's class weights from the class-similarity matrix ``P`` (rows: true class).

    The weights sum to the number of classes; they are clipped at 0 (a negative loss weight or
    radius means nothing), which only a ``lam`` far above the paper's values can reach.
    """
    p = similarity.float()
    held = torch.diagonal(p)
    harder = held[:, None] < held[None, :]      # [i, j]: class i is harder than class j
    easier = held[:, None] > held[None, :]
    gain = p * held[None, :]                    # [i, j]: P_ij·P_jj, what harder i takes from j
    give = p.T * held[:, None]                  # [i, j]: P_ji·P_ii, what easier i gives to j
    moves = torch.where(harder, gain, torch.zeros_like(p)) - torch.where(easier, give,
                                                                         torch.zeros_like(p))
    return (1.0 + lam * moves.sum(dim=1)).clamp_min(0.0)


@register_mitigation("dafa")
class DAFA(DescribedMitigation):
    """Class weights and margins from the class similarity, fixed after a warm-up."""

    def __init__(self, lam: float | str = 1.0, warmup: float | str = 70 / 110,
                 margin: bool | str = True, **aliases: Any) -> None:
        lam = take_lambda(aliases, lam, mitigation="dafa",
                          known="lam (or lambda), warmup, margin")
        self.lam = as_float(lam, what="dafa lambda", low=0.0)
        self.warmup = as_float(warmup, what="dafa warmup", low=0.0, high=1.0, high_open=True)
        self.margin = as_bool(margin, what="dafa margin")

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        self.begin = epoch_index(self.warmup, ctx.epochs)
        self.beta = trades_beta(ctx)
        self.epochs_done = 0
        self.weights: torch.Tensor | None = None
        self.similarity: torch.Tensor | None = None
        self.probs = ClasswiseCounter(ctx.num_classes, ctx.device, width=ctx.num_classes)

    def _collecting(self) -> bool:
        # the epoch whose end is the end of the warm-up
        return self.weights is None and self.epochs_done == self.begin - 1

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        if self._collecting():
            source = ctx.get("logits_adv")
            if source is None:
                source = ctx.get("logits_clean")
            if source is None:
                source = logits
            self.probs.add(y, F.softmax(source.detach().float(), dim=1))
        return per_sample_loss

    def end_epoch(self, stats: EpochStats) -> None:
        collecting = self._collecting()
        self.epochs_done += 1
        if collecting:
            similarity, seen = self.probs.mean()
            # a class with no training point this epoch is similar to nothing: keep it held
            eye = torch.eye(len(seen), device=similarity.device)
            self.similarity = torch.where(seen[:, None], similarity, eye)
            self.weights = dafa_weights(self.similarity, self.lam)
        self.probs.reset()

    def class_weights(self) -> torch.Tensor | None:
        return self.weights

    def class_eps(self) -> torch.Tensor | None:
        if self.weights is None or not self.margin:
            return None
        return float(self.ctx.eps) * self.weights

    def class_beta(self) -> torch.Tensor | None:
        if self.weights is None or not self.ctx.beta_weighted:
            return None
        return self.beta / self.weights.clamp_min(1e-6)

    def settings(self) -> dict[str, Any]:
        return {"lambda": self.lam, "warmup": round(self.warmup, 6), "margin": self.margin}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epochs_done": self.epochs_done}
        if self.weights is not None:
            state["weights"] = self.weights
            state["similarity"] = self.similarity
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = int(state["epochs_done"])
        if "weights" in state:
            self.weights = torch.as_tensor(state["weights"]).to(self.ctx.device, torch.float32)
            self.similarity = torch.as_tensor(state["similarity"]).to(self.ctx.device,
                                                                      torch.float32)
