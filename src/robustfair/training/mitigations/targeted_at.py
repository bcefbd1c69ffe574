"""Targeted adversarial training toward the vulnerable class: the study's planned but never run
mitigation (Benz et al. 2020, "Robustness may be at odds with fairness", Sec. 5: "adversarial
training with a targeted attack toward the vulnerable class").

An attacker can aim at the class that is least robust; training on exactly those attacks
teaches the model to keep the other classes out of it. With probability ``p`` each training
point's attack is *targeted*: it minimises the cross-entropy to the target class instead of
maximising the loss of the true class. Points of the target class itself stay untargeted.

``target="worst"`` (default) re-picks the target after every epoch as the class with the lowest
robust accuracy on the validation split (first epoch: untargeted, nothing is measured yet);
``target=NAME`` or an index fixes it.

Defaults (ours; the paper never ran it): ``p=0.5``, so half the points keep the usual
untargeted attack and the model stays robust to it. The draws come from the mitigation's own
generator, seeded from the run's seed and saved in the state, so a resumed run repeats them.

Works with PGD-AT, FGSM-RS and TRADES (whose KL attack is then replaced by the targeted
cross-entropy for the targeted points). With standard training there is no attack and it has no
effect. At most one mitigation may set attack targets.

>>> import torch
>>> from robustfair.training.mitigations import EpochStats, MitigationContext
>>> m = TargetedAT(p=1.0)
>>> m.setup(MitigationContext(num_classes=3, objective="pgd_at"))
>>> acc = torch.tensor([0.9, 0.3, 0.8])
>>> m.end_epoch(EpochStats(1, acc, acc, 1 - acc, acc * 0, torch.tensor([5, 5, 5])))
>>> m.attack_target(torch.tensor([0, 1, 2])).tolist()   # class 1 is the worst
[1, -1, 1]
"""
from __future__ import annotations

from typing import Any

import torch

from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import DescribedMitigation, SeededStream, as_float, present_classes, worst_class

# offset that separates this mitigation's random stream from the trainer's (seed, epoch) streams
_STREAM = 0x7A11E7


@register_mitigation("targeted_at")
class TargetedAT(DescribedMitigation):
    """With probability ``p``, attack a training point toward the (worst) target class."""

    def __init__(self, p: float | str = 0.5, target: str | int = "worst") -> None:
        self.p = as_float(p, what="targeted_at p", low=0.0, high=1.0)
        self.target = str(target).strip()

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        self.fixed = None if self.target.lower() == "worst" else ctx.class_index(self.target)
        self.current: int | None = self.fixed
        self.stream = SeededStream(ctx.seed, _STREAM)

    def attack_target(self, y: torch.Tensor) -> torch.Tensor | None:
        if self.current is None or self.p == 0.0:
            return None
        draw = torch.rand(y.shape, generator=self.stream.generator(y.device), device=y.device)
        aim = (draw < self.p) & (y != self.current)
        return torch.where(aim, torch.full_like(y, self.current), torch.full_like(y, -1))

    def end_epoch(self, stats: EpochStats) -> None:
        if self.fixed is None and bool(present_classes(stats).any()):
            self.current = worst_class(stats.robust_acc, present_classes(stats))

    def settings(self) -> dict[str, Any]:
        return {"p": self.p, "target": self.target}

    def describe(self) -> str:
        current = getattr(self, "current", None)  # None before setup and before epoch 1
        now = "none yet" if current is None else self.ctx.classes[current]
        return f"{super().describe()}: current target {now}"

    def state_dict(self) -> dict[str, Any]:
        return self.stream.save_into({"current": -1 if self.current is None else self.current})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        current = int(state.get("current", -1))
        self.current = None if current < 0 else current
        self.stream.load_from(state)
