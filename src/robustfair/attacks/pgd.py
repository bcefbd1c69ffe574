"""PGD (Madry et al. 2018), L-inf and L2, on cross-entropy or the CW margin; and ``cw`` (CW-inf).

Each step moves ``alpha`` along the steepest-ascent direction of the loss (sign of the
gradient for L-inf, unit gradient for L2) and projects back onto the eps-ball ∩ [0, 1].
Defaults: 10 steps, ``alpha = eps / 4`` (the common 2/255 at eps = 8/255), a random start
drawn uniformly from the ball, 1 restart.

Every point's first success is kept and that point leaves the working batch, so a run costs
``steps`` forward+backward passes on the *still robust* points only, plus one gradient-free
forward at the end (and one clean pass). With ``perturb(..., batch_size=B)`` on more than
``B`` points, waiting points fill the places of those that left, so passes stay ``B`` full.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> attack = PGD(eps=0.1, steps=5)
>>> sorted(attack.settings())[:4]
['alpha', 'amp', 'attack', 'eps']
>>> res = attack.perturb(model, torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.long))
>>> bool((res.x_adv - res.x_adv.clamp(0, 1)).abs().max() == 0)
True
"""
from __future__ import annotations

import torch

from ..errors import AttackError
from ._base import per_sample, register_attack
from ._geometry import ascent_direction, project, random_start
from ._search import GradientAttack, Points, Search, check_positive_int, run_steps

# alpha = eps * DEFAULT_ALPHA_FRACTION unless given: 2/255 at eps = 8/255.
DEFAULT_ALPHA_FRACTION = 0.25


@register_attack("pgd")
class PGD(GradientAttack):
    """Projected gradient ascent with random start and restarts (first success per point kept)."""

    name = "pgd"

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        steps: int = 10,
        alpha: float | torch.Tensor | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        targeted: bool = False,
        amp: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed, loss=loss, amp=amp)
        self.steps = check_positive_int("steps", steps, minimum=0)
        self.restarts = check_positive_int("restarts", restarts)
        if not isinstance(random_start, bool):
            raise AttackError(f"random_start must be True or False, got {random_start!r}")
        if restarts > 1 and not random_start:
            raise AttackError("restarts > 1 needs random_start=True (each restart would repeat the first)")
        if alpha is not None:
            bad = (
                bool((alpha <= 0).any()) if isinstance(alpha, torch.Tensor)
                else not (isinstance(alpha, (int, float)) and alpha > 0)
            )
            if bad:
                raise AttackError(f"alpha (step size) must be positive, got {alpha!r}")
        self.alpha = alpha
        self.random_start = random_start

    def settings(self) -> dict:
        if self.alpha is None:
            alpha = (
                self.eps * DEFAULT_ALPHA_FRACTION if not isinstance(self.eps, torch.Tensor)
                else f"eps*{DEFAULT_ALPHA_FRACTION}"
            )
        else:
            alpha = self.alpha if not isinstance(self.alpha, torch.Tensor) else "per-sample"
        return {**super().settings(), "steps": self.steps, "alpha": alpha,
                "random_start": self.random_start, "restarts": self.restarts}

    def _attack(self, search: Search, eps: torch.Tensor) -> None:
        if self.alpha is None:
            alpha = eps * DEFAULT_ALPHA_FRACTION
        else:
            alpha = per_sample(self.alpha, len(eps), eps)
        for restart in range(self.restarts):
            waiting = search.remaining_hardest_first()
            if waiting.numel() == 0:
                return
            self._run(search, waiting, eps, alpha, restart)

    def _run(self, search: Search, waiting: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor,
             restart: int) -> None:
        """One restart on the points ``waiting``: ``steps`` steps each, in a refilling batch."""

        def admit(idx: torch.Tensor) -> Points:
            """Points entering the working batch at their starting iterate (each point's own
            random start, whenever it is admitted)."""
            x, y, target = search.points(idx)
            e = eps[idx]
            x_adv = (random_start(x, e, self.norm, search.random.at(idx, self.name, "start", restart))
                     if self.random_start else x.clone())
            return Points(idx, x=x, y=y, target=target, x_adv=x_adv, eps=e, alpha=alpha[idx])

        def step(work: Points, out: tuple) -> None:
            """Madry et al.'s step: along the steepest-ascent direction, back onto the ball."""
            _, grad = out
            work.x_adv = project(work.x_adv + work.alpha * ascent_direction(grad, self.norm),
                                 work.x, work.eps, self.norm)

        run_steps(search, waiting, self.steps, admit, step)


@register_attack("cw")
class CW(PGD):
    """CW-inf: PGD on the Carlini-Wagner margin ``max_{j!=y} z_j - z_y`` (L-inf unless told)."""

    name = "cw"
    pinned = {"loss": "cw"}
