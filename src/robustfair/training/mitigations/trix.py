"""TRIX: mixed targeted / untargeted adversarial training (Medi, Jung & Keuper 2025, "TRIX -
Trading Adversarial Fairness via Mixed Adversarial Training", arXiv:2507.07768).

TRIX's observation: strong classes (well separated, robust) do not need strong adversaries,
their non-robust features are suppressed quickly; weak classes do. So a strong class's points
are attacked with a *weaker, targeted* adversary whose target is drawn uniformly from the other
classes (diverse perturbations), a weak class's points with the usual *untargeted* attack, and
on top of that the weak classes get larger loss weights and a larger training radius.

Here, after every epoch, from the classes' robust errors ``e_c`` on the validation split and
their mean ``ebar``:

* strong classes: ``e_c < ebar`` (robust accuracy above the mean); their points are attacked
  toward a target drawn uniformly from the other classes, with probability ``p``;
* class weight ``w_c = clip(1 + weight·(e_c - ebar), w_min, w_max)`` (a weak class weighs more);
* training radius ``eps_c = eps·clip(1 + radius·(e_c - ebar), r_min, r_max)`` (a weak class is
  trained at a larger radius; ``radius=0`` keeps the common radius).

The first epoch is plain (untargeted) training at the common radius with weight 1.

What we could not check, stated honestly: we read the paper's abstract (arXiv, July 2025), not
its equations or code (none found), so the strong/weak split (here: above/below the mean
validation robust accuracy), the weight and radius rules and every constant are ours, modelled
on the rules the paper says it builds on (FRL's and CFA's per-class weights and radii):
``p=1.0``, ``weight=1.0`` with ``[0.5, 2.0]``, ``radius=0.5`` with ``[0.8, 1.2]``.

A per-class radius can become the label on data with a flat background (docs/MITIGATIONS.md,
"A per-class radius can become the label"); ``radius=0`` avoids that. Works with PGD-AT, TRADES
and FGSM-RS (targets and radii change the training attack only); with standard training it
only weights the loss. Sets attack targets (not with ``targeted_at`` or ``fair_tat``) and
per-class eps (not with ``class_eps``, ``frl`` re-margin, ``cfa`` CCM or ``dafa`` margins).

>>> import torch
>>> from robustfair.training.mitigations import EpochStats, MitigationContext
>>> m = TRIX()
>>> m.setup(MitigationContext(num_classes=3, eps=0.2))
>>> acc = torch.tensor([0.9, 0.5, 0.4])   # errors 0.1, 0.5, 0.6; mean 0.4
>>> m.end_epoch(EpochStats(1, acc, acc, 1 - acc, acc * 0, torch.tensor([5, 5, 5])))
>>> m.strong.tolist(), [round(v, 2) for v in m.class_weights().tolist()]
([True, False, False], [0.7, 1.1, 1.2])
>>> [round(v, 3) for v in m.class_eps().tolist()]
[0.17, 0.21, 0.22]
"""
from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError
from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import DescribedMitigation, SeededStream, as_float, robust_error_gap

_STREAM = 0x7A1C5


@register_mitigation("trix")
class TRIX(DescribedMitigation):
    """Weak targeted attacks for strong classes, untargeted for weak; class weights and radii."""

    def __init__(self, p: float | str = 1.0, weight: float | str = 1.0,
                 w_min: float | str = 0.5, w_max: float | str = 2.0,
                 radius: float | str = 0.5, r_min: float | str = 0.8,
                 r_max: float | str = 1.2) -> None:
        self.p = as_float(p, what="trix p", low=0.0, high=1.0)
        self.weight = as_float(weight, what="trix weight", low=0.0)
        self.w_min = as_float(w_min, what="trix w_min", low=0.0, low_open=True)
        self.w_max = as_float(w_max, what="trix w_max", low=self.w_min)
        self.radius = as_float(radius, what="trix radius", low=0.0)
        self.r_min = as_float(r_min, what="trix r_min", low=0.0)
        self.r_max = as_float(r_max, what="trix r_max", low=self.r_min)
        if not self.r_min <= 1.0 <= self.r_max:
            raise ConfigError("trix radius bounds must contain 1 (r_min <= 1 <= r_max)")

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        k = ctx.num_classes
        self.gap = torch.zeros(k, device=ctx.device)      # e_c - mean e
        self.strong = torch.zeros(k, dtype=torch.bool, device=ctx.device)
        self.measured = False
        self.stream = SeededStream(ctx.seed, _STREAM)

    def end_epoch(self, stats: EpochStats) -> None:
        gap, present = robust_error_gap(stats, self.gap.device)
        if not bool(present.any()):
            return
        self.gap = gap
        # a class at the mean (up to float rounding) counts as weak
        self.strong = present & (gap < -1e-6)
        self.measured = True

    def class_weights(self) -> torch.Tensor | None:
        if not self.measured or self.weight == 0.0:
            return None
        return (1.0 + self.weight * self.gap).clamp(self.w_min, self.w_max)

    def class_eps(self) -> torch.Tensor | None:
        if not self.measured or self.radius == 0.0:
            return None
        return float(self.ctx.eps) * (1.0 + self.radius * self.gap).clamp(self.r_min, self.r_max)

    def attack_target(self, y: torch.Tensor) -> torch.Tensor | None:
        k = self.ctx.num_classes
        if not self.measured or self.p == 0.0 or k < 2:
            return None
        gen = self.stream.generator(y.device)
        # a uniform target among the other classes: y + 1 + U{0..K-2} (mod K)
        other = (y + 1 + torch.randint(0, k - 1, y.shape, generator=gen, device=y.device)) % k
        aim = (torch.rand(y.shape, generator=gen, device=y.device) < self.p) & \
            self.strong.to(y.device)[y]
        return torch.where(aim, other, torch.full_like(y, -1))

    def settings(self) -> dict[str, Any]:
        return {"p": self.p, "weight": self.weight, "w_min": self.w_min, "w_max": self.w_max,
                "radius": self.radius, "r_min": self.r_min, "r_max": self.r_max}

    def describe(self) -> str:
        strong = getattr(self, "strong", None)
        if strong is None or not getattr(self, "measured", False):
            return f"{super().describe()}: strong classes none yet"
        names = [self.ctx.classes[i] for i in range(len(strong)) if bool(strong[i])]
        return f"{super().describe()}: strong classes {', '.join(names) or 'none'}"

    def state_dict(self) -> dict[str, Any]:
        return self.stream.save_into({"gap": self.gap, "strong": self.strong.float(),
                                      "measured": self.measured})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gap = torch.as_tensor(state["gap"]).to(self.ctx.device, torch.float32)
        self.strong = torch.as_tensor(state["strong"]).to(self.ctx.device) > 0.5
        self.measured = bool(state["measured"])
        self.stream.load_from(state)
