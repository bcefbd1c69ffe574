"""FGSM (Goodfellow et al. 2015): one full-size step along the gradient's sign.

L-inf: ``x + eps * sign(grad)``; L2 (the normalised-gradient variant): ``x + eps * grad / ||grad||``;
both clipped to [0, 1]. ``loss="cw"`` steps on the CW margin instead of cross-entropy.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> res = FGSM(eps=0.1).perturb(model, torch.rand(5, 1, 2, 2), torch.zeros(5, dtype=torch.long))
>>> bool(((res.x_adv - res.x_adv.clamp(0, 1)).abs().max() == 0))
True
"""
from __future__ import annotations

import torch

from ._base import register_attack
from ._geometry import ascent_direction
from ._search import GradientAttack, Points, Search, run_steps


@register_attack("fgsm")
class FGSM(GradientAttack):
    """Fast Gradient Sign Method; points it fails on are returned unperturbed."""

    name = "fgsm"

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        targeted: bool = False,
        loss: str = "ce",
        amp: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed, loss=loss, amp=amp)

    def _attack(self, search: Search, eps: torch.Tensor) -> None:
        def admit(idx: torch.Tensor) -> Points:  # the gradient is taken at the clean point
            x, y, target = search.points(idx)
            return Points(idx, x=x, y=y, target=target, x_adv=x, eps=eps[idx])

        def step(work: Points, out: tuple) -> None:
            _, grad = out
            work.x_adv = (work.x + work.eps * ascent_direction(grad, self.norm)).clamp(0.0, 1.0)

        run_steps(search, search.remaining(), 1, admit, step)
