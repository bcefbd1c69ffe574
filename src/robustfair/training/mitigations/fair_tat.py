"""FAIR-TAT: fair targeted adversarial training (Medi, Jung & Keuper 2025, "FAIR-TAT: Improving
Model Fairness Using Targeted Adversarial Training", WACV 2025; arXiv:2410.23142).

FAIR-TAT trains on *targeted* adversarial examples instead of untargeted ones, and picks the
targets from the model's class confusion: a class that many points of other classes are pushed
into under attack (a high class-wise false-positive score) is a frequent target, so the model
learns to keep the other classes out of it. Here, after every epoch,

    FP_j = number of training points of other classes whose adversarial prediction was j
    s_j  = (1 - mix) · FP_j / sum FP + mix / K

and in the next epoch each training point of class ``y`` is attacked, with probability ``p``,
toward a target drawn from ``s`` restricted to the classes other than ``y`` (renormalised); the
other points keep the untargeted attack. The confusion is counted from the training attack's
adversarial predictions of the epoch (the ``loss`` hook), as DAFA and CFA count theirs: the
per-epoch validation statistics hold accuracies only. Before the first epoch has been counted
the targets are uniform over the other classes.

Defaults (see the deviations): ``p=1.0`` (every training point targeted, as in the paper's
targeted AT), ``mix=0.1`` (ours: every class stays a possible target, so a class that is
briefly never confused-into is still trained against).

What we could not check, stated honestly: we read the paper's abstract and summaries, not its
equations or code (none found), so the exact false-positive score, whether it is measured on
training or held-out data, and any smoothing are ours; ``mix`` is our addition. FAIR-TAT's
paper fine-tunes an adversarially trained model; here it can run from the first epoch, or
fine-tune from loaded weights. Works with PGD-AT, TRADES (the targeted points minimise the CE to
the target instead of maximising the KL) and FGSM-RS; with standard training there is no
attack. At most one mitigation may set attack targets (not with ``targeted_at`` or ``trix``).

>>> import torch
>>> fp = torch.tensor([0.0, 6.0, 2.0])      # class 1 absorbs most false positives
>>> [[round(v, 3) for v in row] for row in target_matrix(fp, mix=0.0).tolist()]
[[0.0, 0.75, 0.25], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import ClasswiseCounter, DescribedMitigation, SeededStream, all_reduce_sum, as_float

_STREAM = 0xFA17A7


def false_positive_counts(confusion: torch.Tensor) -> torch.Tensor:
    """Column sums of a confusion-count matrix (rows: true class) without its diagonal."""
    return confusion.sum(dim=0) - torch.diagonal(confusion)


def target_matrix(false_positives: torch.Tensor, mix: float) -> torch.Tensor:
    """Row ``y``: the target distribution of a point of class ``y`` (0 on the diagonal).

    A class with no other class to aim at (a row with no mass) gets the uniform row of the
    other classes.
    """
    k = false_positives.numel()
    fp = false_positives.float().clamp_min(0.0)
    total = fp.sum()
    share = fp / total if float(total) > 0 else torch.full_like(fp, 1.0 / k)
    s = (1.0 - mix) * share + mix / k
    rows = s.expand(k, k) * (1.0 - torch.eye(k, device=fp.device))
    mass = rows.sum(dim=1, keepdim=True)
    uniform = (1.0 - torch.eye(k, device=fp.device)) / max(k - 1, 1)
    return torch.where(mass > 0, rows / mass.clamp_min(1e-12), uniform)


@register_mitigation("fair_tat")
class FairTAT(DescribedMitigation):
    """Targeted adversarial training; targets drawn from the classes' false-positive shares."""

    def __init__(self, p: float | str = 1.0, mix: float | str = 0.1) -> None:
        self.p = as_float(p, what="fair_tat p", low=0.0, high=1.0)
        self.mix = as_float(mix, what="fair_tat mix", low=0.0, high=1.0)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        k = ctx.num_classes
        self.false_positives = torch.zeros(k, device=ctx.device)
        self.measured = False
        self.confusion = ClasswiseCounter(k, ctx.device, width=k)
        self.stream = SeededStream(ctx.seed, _STREAM)
        self._rows = self._target_rows()

    def _target_rows(self) -> torch.Tensor:
        if not self.measured:
            k = self.ctx.num_classes
            return (1.0 - torch.eye(k, device=self.ctx.device)) / max(k - 1, 1)
        return target_matrix(self.false_positives, self.mix)

    def targets(self) -> torch.Tensor:
        """Tensor[K, K]: row y, the target distribution for points of class y (fixed for the
        epoch, so the batches never wait on the device)."""
        return self._rows

    def attack_target(self, y: torch.Tensor) -> torch.Tensor | None:
        if self.p == 0.0 or self.ctx.num_classes < 2:
            return None
        gen = self.stream.generator(y.device)
        rows = self.targets().to(y.device)[y]
        drawn = torch.multinomial(rows, 1, generator=gen).squeeze(1)
        aim = torch.rand(y.shape, generator=gen, device=y.device) < self.p
        return torch.where(aim, drawn, torch.full_like(y, -1))

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        source = ctx.get("logits_adv")
        if source is None:
            source = logits
        pred = source.detach().argmax(dim=1)
        onehot = torch.nn.functional.one_hot(pred, self.ctx.num_classes).float()
        self.confusion.add(y, onehot)
        return per_sample_loss

    def end_epoch(self, stats: EpochStats) -> None:
        counts = all_reduce_sum(self.confusion.total)
        if float(counts.sum()) > 0:
            self.false_positives = false_positive_counts(counts)
            self.measured = True
            self._rows = self._target_rows()
        self.confusion.reset()

    def settings(self) -> dict[str, Any]:
        return {"p": self.p, "mix": self.mix}

    def state_dict(self) -> dict[str, Any]:
        return self.stream.save_into({"false_positives": self.false_positives,
                                      "measured": self.measured})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.false_positives = torch.as_tensor(state["false_positives"]).to(self.ctx.device,
                                                                           torch.float32)
        self.measured = bool(state["measured"])
        self._rows = self._target_rows()
        self.stream.load_from(state)
