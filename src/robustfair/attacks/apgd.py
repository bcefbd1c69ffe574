"""APGD (Croce & Hein 2020, the attack at the core of AutoAttack), L-inf and L2.

PGD without a step size to tune:

* the step size starts at ``2 * eps`` and is halved, per point, at checkpoints
  ``w_j ~ p_j * steps``, ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``,
  when (1) the loss went up in fewer than ``rho`` (0.75) of the steps since the last
  checkpoint, or (2) the step size was not halved at the last checkpoint and the best loss
  has not improved since then;
* when it halves, the point restarts from the best iterate found so far (and its gradient);
* each step mixes the projected gradient step with the previous move (momentum 0.75):
  ``z = P(x_k + eta * dir(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``.

Losses: ``"ce"``, ``"dlr"`` (shift- and scale-invariant; needs >= 3 classes) and, targeted,
``-CE`` to the target or the targeted DLR (needs >= 4 classes). Registered as ``apgd`` (any
loss), ``apgd-ce``, ``apgd-dlr`` and ``apgd-t`` (targeted DLR). ``apgd-t`` is AutoAttack's
APGD-T, in the Python API and the CLI alike: an untargeted attack that steers each point in
turn toward the ``top_k`` classes the model ranks highest after the label, any
misclassification found on the way counting. With ``targeted=True`` the caller picks the
target per point and success is reaching it.

>>> checkpoints(100)
[22, 41, 57, 70, 80, 87, 93, 99]
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..errors import AttackError
from ._base import register_attack
from ._geometry import ascent_direction, project, random_start
from ._random import Draws
from ._search import GradientAttack, Search, check_fraction, check_positive_int


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve a point's step size (``w_j`` of the paper).

    Interval lengths start at 22% of the budget and shrink by 3% of it per checkpoint, down
    to 6% (rounded down, at least 1 iteration each).
    """
    length = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, w = [], 0
    while w + length <= steps:
        w += length
        points.append(w)
        length = max(length - shrink, shortest)
    return points


@dataclass
class _Run:
    """The per-point state of one APGD restart; every field is indexed by point (dim 0)."""

    idx: torch.Tensor          # positions in the full batch
    x: torch.Tensor            # clean images
    y: torch.Tensor
    target: torch.Tensor | None
    eps: torch.Tensor
    x_cur: torch.Tensor        # current iterate x_k
    x_prev: torch.Tensor       # previous iterate x_{k-1} (for the momentum term)
    grad: torch.Tensor | None  # gradient at x_cur
    f_prev: torch.Tensor       # loss at the previous iterate
    x_best: torch.Tensor       # best iterate so far, its loss and gradient
    f_best: torch.Tensor
    g_best: torch.Tensor | None
    eta: torch.Tensor          # step size, N×1×1×1
    ups: torch.Tensor          # steps since the last checkpoint on which the loss went up
    f_best_at_check: torch.Tensor
    halved_at_check: torch.Tensor

    def take(self, keep: torch.Tensor) -> "_Run":
        """The same state for the points ``keep`` only."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return _Run(**{k: None if v is None else v[keep] for k, v in values.items()})


def _as_image_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


@register_attack("apgd")
class APGD(GradientAttack):
    """Auto-PGD with the checkpoint step-size schedule; first success per point kept."""

    name = "apgd"

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        momentum: float = 0.75,
        targeted: bool = False,
        amp: bool = False,
        seed: int | None = 0,
        eot: int = 1,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed, loss=loss, amp=amp)
        # eot > 1: each loss and gradient averaged over eot passes (randomised models)
        self.eot = check_positive_int("eot", eot)
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.rho = check_fraction("rho", rho)
        # momentum is the weight `a` of the new projected step (1.0 = no momentum).
        self.momentum = check_fraction("momentum", momentum)

    def settings(self) -> dict:
        settings = {**super().settings(), "steps": self.steps, "restarts": self.restarts,
                    "rho": self.rho, "momentum": self.momentum}
        if self.eot > 1:
            settings["eot"] = self.eot
        return settings

    def _attack(self, search: Search, eps: torch.Tensor, stream: tuple = ()) -> None:
        """Every restart on the points still robust; ``stream`` names the run (APGD-T: the
        target's rank) in the key of each point's random start."""
        for restart in range(self.restarts):
            for idx in search.pieces():  # empty once every point is fooled
                start = search.random.at(idx, self.name, "start", *stream, restart)
                self._run(search, idx, eps[idx], start)

    def _step(self, s: _Run, first: bool) -> torch.Tensor:
        """The next iterate: projected step, then the momentum mix, projected again."""
        z = project(s.x_cur + s.eta * ascent_direction(s.grad, self.norm), s.x, s.eps, self.norm)
        if first:  # no previous move yet
            return z
        a = self.momentum
        mixed = s.x_cur + a * (z - s.x_cur) + (1.0 - a) * (s.x_cur - s.x_prev)
        return project(mixed, s.x, s.eps, self.norm)

    def _run(self, search: Search, idx: torch.Tensor, eps: torch.Tensor, start: Draws) -> None:
        """One restart on the points ``idx`` from random starts drawn from ``start``; the
        batch shrinks as points get fooled."""
        x, y, target = search.points(idx)
        x0 = random_start(x, eps, self.norm, start)
        logits, f, grad = search.loss_and_grad(x0, y, target)
        s = _Run(idx=idx, x=x, y=y, target=target, eps=eps, x_cur=x0, x_prev=x0, grad=grad,
                 f_prev=f, x_best=x0, f_best=f, g_best=grad, eta=2.0 * eps,
                 ups=torch.zeros_like(f), f_best_at_check=f,
                 halved_at_check=torch.zeros_like(f, dtype=torch.bool))
        still = search.record(idx, x0, logits, y, target)
        if still is not None:
            if still.numel() == 0:
                return
            s = s.take(still)

        schedule, last_check = set(checkpoints(self.steps)), 0
        for i in range(self.steps):
            x_new = self._step(s, first=i == 0)
            need_grad = i < self.steps - 1  # no step follows the last iterate
            logits, f, grad = search.loss_and_grad(x_new, s.y, s.target, need_grad)
            s.x_prev, s.x_cur, s.grad = s.x_cur, x_new, grad
            still = search.record(s.idx, x_new, logits, s.y, s.target)
            if still is not None:
                if still.numel() == 0:
                    return
                s, f = s.take(still), f[still]

            s.ups = s.ups + (f > s.f_prev).to(s.ups.dtype)
            s.f_prev = f
            better = f > s.f_best
            s.f_best = torch.where(better, f, s.f_best)
            s.x_best = torch.where(_as_image_mask(better), s.x_cur, s.x_best)
            if need_grad:
                s.g_best = torch.where(_as_image_mask(better), s.grad, s.g_best)

            if i + 1 in schedule:
                few_ups = s.ups < self.rho * (i + 1 - last_check)
                stalled = ~s.halved_at_check & (s.f_best <= s.f_best_at_check)
                halve = few_ups | stalled
                mask = _as_image_mask(halve)
                s.eta = torch.where(mask, 0.5 * s.eta, s.eta)
                # Restart the halved points from their best iterate so far.
                s.x_cur = torch.where(mask, s.x_best, s.x_cur)
                if need_grad:
                    s.grad = torch.where(mask, s.g_best, s.grad)
                s.f_prev = torch.where(halve, s.f_best, s.f_prev)
                s.halved_at_check, s.f_best_at_check = halve, s.f_best
                s.ups = torch.zeros_like(s.ups)
                last_check = i + 1


@register_attack("apgd-ce")
class APGDCE(APGD):
    """APGD on cross-entropy (untargeted unless ``targeted=True``: then ``-CE`` to the target)."""

    name = "apgd-ce"

    def __init__(self, eps: float | torch.Tensor, *, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                 targeted: bool = False, amp: bool = False, seed: int | None = 0,
                 eot: int = 1) -> None:
        super().__init__(eps, norm=norm, steps=steps, restarts=restarts, loss="ce", rho=rho,
                         momentum=momentum, targeted=targeted, amp=amp, seed=seed, eot=eot)


@register_attack("apgd-dlr")
class APGDDLR(APGD):
    """APGD on the (untargeted) DLR loss; needs at least 3 classes."""

    name = "apgd-dlr"

    def __init__(self, eps: float | torch.Tensor, *, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                 amp: bool = False, seed: int | None = 0, eot: int = 1) -> None:
        super().__init__(eps, norm=norm, steps=steps, restarts=restarts, loss="dlr", rho=rho,
                         momentum=momentum, targeted=False, amp=amp, seed=seed, eot=eot)


@register_attack("apgd-t")
class APGDTargeted(APGD):
    """APGD on the targeted DLR loss (>= 4 classes).

    ``targeted=False`` (the default): AutoAttack's APGD-T (Croce & Hein 2020), untargeted. For
    the 2nd, 3rd, ... most likely class of the clean logits in turn (``top_k`` of them, 9 in
    AutoAttack), it runs APGD toward that class on the points still robust; a point is done
    as soon as it is misclassified as anything. Each target class costs ``steps`` iterations,
    so it is up to ``top_k`` times APGD-CE's work on the most robust points.
    ``targeted=True``: give a target per point; success is reaching it.
    """

    name = "apgd-t"

    def __init__(self, eps: float | torch.Tensor, *, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                 targeted: bool = False, top_k: int = 9, amp: bool = False,
                 seed: int | None = 0) -> None:
        super().__init__(eps, norm=norm, steps=steps, restarts=restarts, loss="dlr", rho=rho,
                         momentum=momentum, targeted=targeted, amp=amp, seed=seed)
        self.top_k = check_positive_int("top_k", top_k)

    def settings(self) -> dict:
        settings = super().settings()
        if not self.targeted:
            settings["top_k"] = self.top_k
        return settings

    def _attack(self, search: Search, eps: torch.Tensor, stream: tuple = ()) -> None:
        if self.targeted:
            super()._attack(search, eps)
            return
        num_classes = search.clean_logits.shape[1]
        if num_classes < 4:
            raise AttackError(f"apgd-t uses the targeted DLR loss, which needs at least 4 "
                              f"classes; the model has {num_classes}")
        search.any_misclassification = True
        try:
            for rank, target in enumerate(search.runner_ups(self.top_k)):
                search.target = target
                super()._attack(search, eps, ("target", rank))  # on the points no earlier class fooled
        finally:
            search.target, search.any_misclassification = None, False
