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
APGD-T, in the Python API and the CLI alike: an untargeted attack that steers each point
toward each of the ``top_k`` classes the model ranks highest after the label, any
misclassification found on the way counting. AutoAttack's code runs the targets one after the
other on the points still robust; here a point's ``top_k`` runs go at once, in step, and stop
together at its first success (``run_steps``'s ``runs``): each run is the one that order
would make (the same start, the same steps), so the points broken are the same, but a
pass holds a few robust points' runs instead of thinning out, target after target. With
``targeted=True`` the caller picks the target per point and success is reaching it.

>>> checkpoints(100)
[22, 41, 57, 70, 80, 87, 93, 99]
"""
from __future__ import annotations

import torch

from ..errors import AttackError
from ._base import register_attack
from ._geometry import ascent_direction, project, random_start
from ._search import (GradientAttack, Points, Search, check_fraction, check_positive_int, per_run,
                      run_steps)


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


def _as_image_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


@register_attack("apgd")
class APGD(GradientAttack):
    """Auto-PGD with the checkpoint step-size schedule; first success per point kept.

    ``top_k`` (untargeted only; None by default): AutoAttack's APGD-T, steering each point in
    turn toward the ``top_k`` classes the clean logits rank after the top one (``apgd-t``)."""

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
        top_k: int | None = None,
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
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)

    def settings(self) -> dict:
        settings = {**super().settings(), "steps": self.steps, "restarts": self.restarts,
                    "rho": self.rho, "momentum": self.momentum}
        if self.top_k is not None and not self.targeted:
            settings["top_k"] = self.top_k
        if self.eot > 1:
            settings["eot"] = self.eot
        return settings

    def _attack(self, search: Search, eps: torch.Tensor) -> None:
        if self.top_k is None or self.targeted:
            self._restarts(search, eps)
            return
        num_classes = search.clean_logits.shape[1]
        if num_classes < 4:
            raise AttackError(f"{self.name} uses the targeted DLR loss, which needs at least 4 "
                              f"classes; the model has {num_classes}")
        search.any_misclassification = True
        try:
            # every runner-up class at once: one run per target class for each point
            self._restarts(search, eps, search.runner_ups(self.top_k))
        finally:
            search.any_misclassification = False

    def _restarts(self, search: Search, eps: torch.Tensor,
                  targets: list[torch.Tensor] | None = None) -> None:
        """Every restart on the points still robust. ``targets`` (APGD-T: T tensors, each a
        class per point): each point runs toward its T classes at once (``run_steps``'s
        ``runs``), the run toward its r-th class drawing its random start from the stream
        ``("target", r)``, as it would alone."""
        runs = 1 if targets is None else len(targets)
        schedule = torch.zeros(self.steps + 1, dtype=torch.bool, device=eps.device)
        since = torch.zeros(self.steps + 1, dtype=eps.dtype, device=eps.device)
        last = 0
        for w in checkpoints(self.steps):  # iterate w is a checkpoint, w - last steps after the last
            schedule[w], since[w], last = True, w - last, w
        for restart in range(self.restarts):
            waiting = search.remaining_hardest_first()
            if waiting.numel() == 0:
                return

            def admit(idx: torch.Tensor, restart: int = restart) -> Points:
                """A point's random start (one per run); its loss and gradient there come with
                the first pass."""
                x, y, target = search.points(idx)
                e = eps[idx]
                if targets is None:
                    x0 = random_start(x, e, self.norm,
                                      search.random.at(idx, self.name, "start", restart))
                else:
                    x0 = torch.cat([random_start(x, e, self.norm, search.random.at(
                        idx, self.name, "start", "target", r, restart)) for r in range(runs)])
                    target = torch.cat([t[idx] for t in targets])  # run-major, as per_run's
                    idx, x, y, e = (per_run(t, runs) for t in (idx, x, y, e))
                n = len(idx)
                low = torch.full((n,), -float("inf"), dtype=x.dtype, device=x.device)
                return Points(idx, x=x, y=y, target=target, eps=e, x_adv=x0,
                              x_prev=x0, x_best=x0.clone(), f_best=low,
                              g_best=torch.zeros_like(x0), f_prev=-low, f_best_at_check=low,
                              eta=2.0 * e, ups=torch.zeros_like(low),
                              halved=torch.zeros(n, dtype=torch.bool, device=x.device))

            def step(s: Points, out: tuple) -> None:
                f, grad = out
                k = s.taken  # the iterate just evaluated, per point
                first = k == 0
                s.f_best_at_check = torch.where(first, f, s.f_best_at_check)
                s.ups = s.ups + (f > s.f_prev).to(s.ups.dtype)
                s.f_prev = f
                better = f > s.f_best
                s.f_best = torch.where(better, f, s.f_best)
                s.x_best = torch.where(_as_image_mask(better), s.x_adv, s.x_best)
                s.g_best = torch.where(_as_image_mask(better), grad, s.g_best)
                # the step-size checkpoints: halve where the loss rose too rarely or stalled
                at_check = schedule[k]
                halve = at_check & ((s.ups < self.rho * since[k])
                                    | (~s.halved & (s.f_best <= s.f_best_at_check)))
                mask = _as_image_mask(halve)
                s.eta = torch.where(mask, 0.5 * s.eta, s.eta)
                # the halved points go on from their best iterate so far, and its gradient
                s.x_adv = torch.where(mask, s.x_best, s.x_adv)
                grad = torch.where(mask, s.g_best, grad)
                s.f_prev = torch.where(halve, s.f_best, s.f_prev)
                s.halved = torch.where(at_check, halve, s.halved)
                s.f_best_at_check = torch.where(at_check, s.f_best, s.f_best_at_check)
                s.ups = torch.where(at_check, torch.zeros_like(s.ups), s.ups)
                # the projected step mixed with the previous move (none before the first step)
                z = project(s.x_adv + s.eta * ascent_direction(grad, self.norm), s.x, s.eps,
                            self.norm)
                a = self.momentum
                mixed = project(s.x_adv + a * (z - s.x_adv) + (1.0 - a) * (s.x_adv - s.x_prev),
                                s.x, s.eps, self.norm)
                s.x_prev, s.x_adv = s.x_adv, torch.where(_as_image_mask(first), z, mixed)

            run_steps(search, waiting, self.steps, admit, step, runs=runs)


@register_attack("apgd-ce")
class APGDCE(APGD):
    """APGD on cross-entropy (untargeted unless ``targeted=True``: then ``-CE`` to the target)."""

    name = "apgd-ce"
    pinned = {"loss": "ce", "top_k": None}


@register_attack("apgd-dlr")
class APGDDLR(APGD):
    """APGD on the (untargeted) DLR loss; needs at least 3 classes."""

    name = "apgd-dlr"
    pinned = {"loss": "dlr", "targeted": False, "top_k": None}


@register_attack("apgd-t")
class APGDTargeted(APGD):
    """APGD on the targeted DLR loss (>= 4 classes).

    ``targeted=False`` (the default): AutoAttack's APGD-T (Croce & Hein 2020), untargeted. For
    each of the 2nd, 3rd, ... most likely classes of the clean logits (``top_k`` of them, 9 in
    AutoAttack), it runs APGD toward that class, all of a point's runs at once; a point is
    done as soon as it is misclassified as anything. Each target class costs ``steps``
    iterations, so it is up to ``top_k`` times APGD-CE's work on the most robust points.
    ``targeted=True``: give a target per point; success is reaching it.
    """

    name = "apgd-t"
    pinned = {"loss": "dlr", "eot": 1}
    defaults = {"top_k": 9}
