"""WAT: worst-class adversarial training (Li & Liu 2023, "WAT: Improve the Worst-class
Robustness in Adversarial Training", AAAI; authors' code: github.com/boqili/WAT).

WAT plays a no-regret game between the model and a weighting over ``K + 1`` "experts": the ``K``
classes and one extra expert, the average over all classes (so the weighting can always fall
back on plain adversarial training). After every epoch each expert's loss is measured on a
held-out validation split and Hedge (exponentiated gradient) re-weights them from the
*cumulative* losses:

    h = K · softmax(eta · sum_{epochs} loss)          (K + 1 entries, summing to K)

and the next epoch minimises ``sum_c h_c · L_c + h_avg · L_avg``: point ``i`` has loss weight
``h[y_i] + h_avg``. Before the first measurement every expert has ``h = K/(K+1)``, so the first
epoch is plain training.

Defaults and where they come from: ``eta=0.1`` (the authors' code); on top of TRADES (the
paper's objective; the authors weight TRADES' CE and KL terms by the same ``h``, which a class
weight does here). Also works with PGD-AT and FGSM-RS (it only weights the per-sample loss).

Deviations, honestly:

- The expert losses. The authors measure each class's TRADES loss (CE + beta·KL) on their
  validation split. The per-epoch statistics the trainer hands to mitigations hold accuracies,
  not losses, so the default ``signal=robust_error`` uses each class's robust error (``1 -
  robust accuracy`` under the trainer's validation PGD) on the held-out validation split; the
  average expert's loss is the error of the whole split. A 0-1 loss is the loss the paper's
  regret bound is stated for, but its scale differs from the TRADES loss, so ``eta`` means a
  milder step here. ``signal=train_loss`` uses the mean per-sample training loss of each class
  over the epoch (the objective's loss, TRADES' CE + beta·KL under TRADES): the authors' kind of
  loss, measured on training data instead of held-out data.
- The reduction. The authors divide the weighted sum by the batch size, so the loss scale moves
  with the weights; here it is divided by the batch's sum of weights (the toolkit's convention),
  so only the relative weights are the paper's.
- A class with no validation point in an epoch gets the average expert's loss for that epoch.

>>> import torch
>>> from robustfair.training.mitigations import EpochStats, MitigationContext
>>> m = WAT(eta=1.0)
>>> m.setup(MitigationContext(num_classes=2))
>>> acc = torch.tensor([0.5, 1.0])     # class 0: error 0.5, class 1: 0; average 0.25
>>> m.end_epoch(EpochStats(1, acc, acc, 1 - acc, acc * 0, torch.tensor([10, 10])))
>>> [round(v, 4) for v in m.expert_weights().tolist()]   # 2·softmax([0.5, 0, 0.25])
[0.8385, 0.5086, 0.653]
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import (ClasswiseCounter, DescribedMitigation, all_reduce_sum, as_choice, as_float,
                      present_classes)

SIGNALS = ("robust_error", "train_loss")


def hedge_weights(cumulative: torch.Tensor, eta: float, num_classes: int) -> torch.Tensor:
    """``K · softmax(eta · cumulative)`` over the K + 1 experts (sums to K)."""
    return num_classes * torch.softmax(eta * cumulative.float(), dim=0)


@register_mitigation("wat")
class WAT(DescribedMitigation):
    """Hedge class weights from cumulative per-class validation losses (+ an average expert)."""

    def __init__(self, eta: float | str = 0.1, signal: str = "robust_error") -> None:
        self.eta = as_float(eta, what="wat eta", low=0.0)
        self.signal = as_choice(signal, SIGNALS, what="wat signal")

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        # cumulative losses of the K class experts and the average expert (last entry)
        self.cumulative = torch.zeros(ctx.num_classes + 1, device=ctx.device)
        self.train_losses = ClasswiseCounter(ctx.num_classes, ctx.device)

    def expert_weights(self) -> torch.Tensor:
        """Tensor[K + 1]: the Hedge weights of the classes, then of the average expert."""
        return hedge_weights(self.cumulative, self.eta, self.ctx.num_classes)

    def class_weights(self) -> torch.Tensor:
        h = self.expert_weights()
        return h[:-1] + h[-1]   # point i is in its class's term and in the average term

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        if self.signal == "train_loss":
            self.train_losses.add(y, per_sample_loss)
        return per_sample_loss

    def end_epoch(self, stats: EpochStats) -> None:
        dev = self.cumulative.device
        if self.signal == "robust_error":
            losses = 1.0 - stats.robust_acc.to(dev, torch.float32)
            present = present_classes(stats).to(dev)
            counts = stats.counts.to(dev, torch.float32)
        else:
            losses, present = self.train_losses.mean()
            counts = all_reduce_sum(self.train_losses.count)
            self.train_losses.reset()
        if not bool(present.any()):
            return
        average = (losses * counts).sum() / counts.sum().clamp_min(1.0)
        losses = torch.where(present, losses, average)
        self.cumulative = self.cumulative + torch.cat([losses, average.view(1)])

    def settings(self) -> dict[str, Any]:
        return {"eta": self.eta, "signal": self.signal}

    def state_dict(self) -> dict[str, Any]:
        return {"cumulative": self.cumulative}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cumulative = torch.as_tensor(state["cumulative"]).to(self.ctx.device, torch.float32)
