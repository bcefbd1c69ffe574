"""Adaptive class weights, the study's mitigation 2 (Benz et al. 2020, "Robustness may be at
odds with fairness", Sec. 5).

All class weights start at 1. After every epoch, a class whose accuracy on the validation split
is at or below the mean class accuracy gets ``+step``, every other class ``-step``.

Defaults and where they come from:

- ``step=0.05``: the paper's value.
- ``by="robust"``: which accuracy drives the update. The paper does not say which one it used
  for its adversarially trained runs; we default to the robust accuracy because the gap being
  closed is the robust one (``by=clean`` gives the other reading).
- ``floor=0.05``: not in the paper. Without a floor an easy class's weight reaches 0 after
  20 epochs and then turns negative; we stop it at one step above zero so it can recover in
  one epoch.

Works with every objective (it only weights the per-sample loss).

>>> import torch
>>> from robustfair.training.mitigations import EpochStats, MitigationContext
>>> m = AdaptiveWeight()
>>> m.setup(MitigationContext(num_classes=3))
>>> acc = torch.tensor([0.2, 0.5, 0.8])
>>> m.end_epoch(EpochStats(0, acc, acc, 1 - acc, acc * 0, torch.tensor([5, 5, 5])))
>>> [round(w, 2) for w in m.class_weights().tolist()]
[1.05, 1.05, 0.95]
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import DescribedMitigation, as_choice, as_float, present_classes


@register_mitigation("adaptive_weight")
class AdaptiveWeight(DescribedMitigation):
    """Per-class loss weights moved by ``±step`` each epoch toward the below-average classes."""

    def __init__(self, step: float | str = 0.05, by: str = "robust",
                 floor: float | str = 0.05) -> None:
        self.step = as_float(step, what="adaptive_weight step", low=0.0, low_open=True)
        self.by = as_choice(by, ("robust", "clean"), what="adaptive_weight 'by'")
        self.floor = as_float(floor, what="adaptive_weight floor", low=0.0, low_open=True)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        self.weights = torch.ones(ctx.num_classes, device=ctx.device)

    def class_weights(self) -> torch.Tensor:
        return self.weights

    def end_epoch(self, stats: EpochStats) -> None:
        acc = (stats.robust_acc if self.by == "robust" else stats.clean_acc).to(self.weights.device)
        present = present_classes(stats).to(self.weights.device)
        if not bool(present.any()):
            return
        mean = acc[present].mean()
        # "at or below the mean": compare with a small slack so that classes whose accuracy
        # equals the mean up to float rounding count as at the mean
        low = acc <= mean + 1e-6
        delta = torch.where(low, self.step, -self.step)
        updated = (self.weights + delta).clamp_min(self.floor)
        # a class without validation points has no accuracy: leave its weight alone
        self.weights = torch.where(present, updated, self.weights)

    def settings(self) -> dict[str, Any]:
        return {"step": self.step, "by": self.by, "floor": self.floor}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = torch.as_tensor(state["weights"]).to(self.ctx.device, torch.float32)
