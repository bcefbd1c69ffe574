"""Per-class training radius: a fixed map, or one adapted each epoch from the class-wise
robust error.

Fixed: ``eps={"cat": 0.1, "dog": 0.2}`` (CLI: ``class_eps:eps=cat:0.1;dog:0.2``; classes by name
or index, values like ``8/255`` allowed); unlisted classes keep the run's base eps.

Adaptive (``adaptive=true``): the idea of CFA's class-wise calibrated margin (Wei et al. 2023,
"CFA: Class-wise calibrated fair adversarial training", CVPR): a class that is hard to make
robust is better served by a *smaller* training radius. After every epoch

    eps_c = base_eps · clip(1 - strength · (e_c - mean_k e_k), min_scale, max_scale)

where ``e_c`` is the class's robust error on the validation split (so above-average error
shrinks the radius and below-average error grows it). The rule is memoryless (it uses the
latest epoch only) and starts from the base eps for every class in the first epoch.

Defaults (ours; CFA itself is the ``cfa`` mitigation): ``strength=1`` (a class 10 points worse
than average trains at 0.9·eps), ``min_scale=0.5`` and ``max_scale=1.5`` (the range CFA's own
rule ``(0.5 + robust_acc)·eps`` can reach).

Only the training attack changes; evaluation always uses the base eps. Works with PGD-AT,
TRADES and FGSM-RS; with standard training there is no attack and it has no effect. At most
one mitigation may set per-class eps (``frl`` with re-margin, ``cfa`` with CCM and ``dafa``
also do).

>>> import torch
>>> from robustfair.training.mitigations import MitigationContext
>>> m = ClassEps(eps="b:0.1")
>>> m.setup(MitigationContext(num_classes=3, classes=["a", "b", "c"], eps=0.2))
>>> [round(v, 3) for v in m.class_eps().tolist()]
[0.2, 0.1, 0.2]
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..._checks import as_bool
from ...errors import ConfigError
from ._base import EpochStats, MitigationContext, register_mitigation
from ._common import DescribedMitigation, as_float, parse_class_map, present_classes


@register_mitigation("class_eps")
class ClassEps(DescribedMitigation):
    """Training-attack radius per class: fixed values, or adapted from the robust error."""

    def __init__(self, eps: Mapping[str, Any] | str | None = None,
                 adaptive: bool | str = False, strength: float | str = 1.0,
                 min_scale: float | str = 0.5, max_scale: float | str = 1.5) -> None:
        self.fixed = parse_class_map(eps, what="eps")
        for k, v in self.fixed.items():
            if v < 0:
                raise ConfigError(f"eps of class {k!r} must be >= 0, got {v:g}")
        self.adaptive = as_bool(adaptive, what="class_eps adaptive")
        if self.adaptive and self.fixed:
            raise ConfigError("class_eps takes either a fixed eps map or adaptive=true, not both")
        if not self.adaptive and not self.fixed:
            raise ConfigError("class_eps needs eps=CLASS:VALUE,... or adaptive=true")
        self.strength = as_float(strength, what="class_eps strength", low=0.0)
        self.min_scale = as_float(min_scale, what="class_eps min_scale", low=0.0)
        self.max_scale = as_float(max_scale, what="class_eps max_scale", low=self.min_scale)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        eps = torch.full((ctx.num_classes,), float(ctx.eps), dtype=torch.float32)
        for name, value in self.fixed.items():
            eps[ctx.class_index(name)] = value
        self.eps = eps.to(ctx.device)

    def class_eps(self) -> torch.Tensor:
        return self.eps

    def scales(self) -> torch.Tensor:
        """The current per-class radius as a multiple of the base eps."""
        return self.eps / max(float(self.ctx.eps), 1e-12)

    def end_epoch(self, stats: EpochStats) -> None:
        if not self.adaptive:
            return
        present = present_classes(stats).to(self.eps.device)
        if not bool(present.any()):
            return
        err = 1.0 - stats.robust_acc.to(self.eps.device, torch.float32)
        scale = (1.0 - self.strength * (err - err[present].mean())).clamp(self.min_scale,
                                                                          self.max_scale)
        new = float(self.ctx.eps) * scale
        self.eps = torch.where(present, new, self.eps)

    def settings(self) -> dict[str, Any]:
        if self.adaptive:
            return {"adaptive": True, "strength": self.strength, "min_scale": self.min_scale,
                    "max_scale": self.max_scale}
        return {"eps": dict(self.fixed)}

    def describe(self) -> str:
        if self.adaptive:
            return (f"{super().describe()}: eps_c = eps*clip(1 - {self.strength:g}*(robust_err_c"
                    f" - mean), {self.min_scale:g}, {self.max_scale:g}) from the validation "
                    f"split, every epoch")
        return super().describe()

    def state_dict(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eps = torch.as_tensor(state["eps"]).to(self.ctx.device, torch.float32)
