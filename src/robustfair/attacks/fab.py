"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), L-inf and L2.

FAB looks for the adversarial example *closest* to the clean point ``x0``. From the current
iterate ``x`` it linearises the decision boundary, ``f(z) ~ f(x) + <grad f(x), z - x> = 0``
with ``f = f_t - f_y`` (class ``t`` against the label ``y``), and takes one step of the paper's
Algorithm 1 (:func:`_fab_step`):

* project both ``x`` and ``x0`` onto that hyperplane intersected with the [0, 1] box, with the
  minimal L-inf (:func:`_project_linf`) or L2 (:func:`_project_l2`) move ``d`` / ``d0``;
* bias the step toward the original point: ``alpha = min(|d| / (|d| + |d0|), alpha_max)``;
* overshoot by ``eta`` (extrapolation) and mix:
  ``x <- clip((1 - alpha) (x + eta d) + alpha (x0 + eta d0), 0, 1)``;
* when ``x`` is adversarial, keep it and step back toward ``x0``: ``x <- x0 + beta (x - x0)``,
  so the search goes on for a closer one.

Here FAB serves an evaluation at a fixed ``eps``: a point is broken when FAB finds an
adversarial example within ``eps`` of it, and then it leaves the search at once (with the
smallest-norm adversarial example found so far being the first one within ``eps``, the
answer is the same as running every step and comparing the smallest norm with ``eps``).
Adversarial examples beyond ``eps`` only trigger the backward step; points never broken
within ``eps`` come back as their clean image.

Registered as ``fab-t`` (:class:`FABTargeted`, the version of AutoAttack's standard suite):
for each of the 2nd, 3rd, ... classes of the clean logits (``top_k`` = 9 of them, or all
``K - 1`` when the model has fewer classes), FAB toward that one hyperplane, one backward pass
per step; a point's runs go at once and stop together at its first success (as APGD-T's).
The goal stays untargeted: any misclassification within ``eps`` counts. And as ``fab``
(:class:`FAB`), the untargeted original: each step uses the closest of the ``K - 1``
hyperplanes ``f_k - f_y = 0`` (``K`` backward passes per step).

Defaults are AutoAttack's: 100 steps, 1 restart, ``alpha_max = 0.1``, ``eta = 1.05``,
``beta = 0.9``. Restart 0 starts from ``x0``; each further restart starts at distance
``eps / 2`` from ``x0`` in a random direction (AutoAttack's random-start scale).

Every model pass (forward, and backward when a step needs the gradient) goes through
:meth:`FAB._evaluate`. A step costs, on the points still robust, one gradient pass (which
linearises and checks the iterate) and one forward pass (which checks the new iterate), as in
the paper's code.

>>> t, w, b = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 1.0]]), torch.tensor([1.5])
>>> _project_linf(t, w, b).tolist()  # move both coordinates by 0.25 to reach x1 + x2 = 1.5
[[0.25, 0.25]]
>>> d = _project_l2(torch.tensor([[0.2, 0.95]]), w, b)  # equal moves of 0.175 would leave the box
>>> [round(v, 4) for v in d[0].tolist()]  # so the second stops at 1.0 and the first does the rest
[0.3, 0.05]
"""
from __future__ import annotations

import torch

from .._checks import is_real
from ..errors import AttackError
from ._base import register_attack
from ._random import Draws
from ._search import (GradientAttack, Points, Search, check_fraction, check_positive_int, per_run,
                      run_steps)

# Guards the divisions of the projections and the step (a zero gradient, a zero move); the
# 1e-8 floor on the move lengths in alpha is the paper's code's.
_TINY = 1e-12
_MIN_MOVE = 1e-8


# ------------------------------------------------------------------ the projections

def _hyperplane_moves(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """Shared set-up of both projections of the points ``t`` (N×D) onto ``<w, z> = b`` in [0, 1]^D.

    The move must change ``<w, z>`` by ``r = b - <w, t>``. Flipping the sign of ``w`` where
    ``r < 0`` makes every ``r >= 0``: each coordinate then moves (if at all) along ``sign(w_i)``,
    contributing ``|w_i| m_i`` for a distance ``m_i`` between 0 and ``room_i``, how far the box
    lets it go that way. Returns ``(direction, |w|, room, r)``.
    """
    r = b - (w * t).sum(dim=1)
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype).unsqueeze(1)
    w = w * flip
    room = torch.where(w > 0, 1.0 - t, t)
    return w.sign(), w.abs(), room, r.abs()


def _saturation_point(breaks: torch.Tensor, weight_room: torch.Tensor, slope: torch.Tensor,
                      r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a piecewise-linear, non-decreasing gain reaches ``r``.

    The gain of moving by a parameter ``s`` is ``sum_i min(s * slope_i, room_i) * |w_i|``: each
    coordinate grows with ``s`` until it hits the box at ``s = breaks_i``. Sorted by break,
    the gain at the k-th break is (the saturated coordinates before it) + (break_k times the
    slopes of the others). Returns ``(s, feasible)``: the smallest ``s`` reaching ``r``, and
    whether even moving every coordinate to the box reaches it.
    """
    order = breaks.argsort(dim=1)
    breaks_s, wr_s = breaks.gather(1, order), weight_room.gather(1, order)
    slope_s = slope.gather(1, order)
    saturated_before = wr_s.cumsum(dim=1) - wr_s  # sum over j < k
    # sum over j >= k, exactly 0 on a tail of zero slopes (whose breaks are infinite)
    slope_from = slope_s.flip(1).cumsum(dim=1).flip(1)
    unsaturated = torch.where(slope_from > 0, breaks_s * slope_from, torch.zeros_like(slope_from))
    gain_at_break = saturated_before + unsaturated
    k = (gain_at_break < r.unsqueeze(1)).sum(dim=1, keepdim=True)  # breaks passed before r
    feasible = k.squeeze(1) < breaks.shape[1]
    k = k.clamp(max=breaks.shape[1] - 1)
    s = (r.unsqueeze(1) - saturated_before.gather(1, k)) / slope_from.gather(1, k).clamp_min(_TINY)
    return s.clamp_min(0.0), feasible


def _project_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L-inf move ``d`` with ``<w, t + d> = b`` and ``t + d`` in [0, 1]^D (rows: N×D).

    Every coordinate moves by the same ``lam`` unless the box stops it first:
    ``d_i = sign(w_i) min(lam, room_i)``. Where the hyperplane does not meet the box, every
    coordinate goes to the box face (the closest the box gets to the hyperplane).
    """
    direction, weight, room, r = _hyperplane_moves(t, w, b)
    lam, feasible = _saturation_point(room, weight * room, weight, r)
    move = torch.where(feasible.unsqueeze(1), torch.minimum(lam, room), room)
    return direction * move


def _project_l2(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L2 move ``d`` with ``<w, t + d> = b`` and ``t + d`` in [0, 1]^D (rows: N×D).

    The box-constrained projection is the plain one, ``mu * w``, clipped: ``d_i = sign(w_i)
    min(mu |w_i|, room_i)`` for the ``mu`` that reaches the hyperplane (coordinate ``i`` hits
    the box at ``mu = room_i / |w_i|``). Where the hyperplane does not meet the box, every
    coordinate goes to the box face.
    """
    direction, weight, room, r = _hyperplane_moves(t, w, b)
    # a coordinate with w_i = 0 never moves: its break is at infinity
    never = torch.full_like(room, float("inf"))
    breaks = torch.where(weight > 0, room / weight.clamp_min(_TINY), never)
    mu, feasible = _saturation_point(breaks, weight * room, weight * weight, r)
    move = torch.where(feasible.unsqueeze(1), torch.minimum(mu * weight, room), room)
    return direction * move


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row L-inf or L2 norm of the flattened moves ``d`` (N×D), shaped N×1."""
    return (d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)).unsqueeze(1)


# ------------------------------------------------------------------ one step

def _closest_hyperplane(f: torch.Tensor, g: torch.Tensor,
                        norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the hyperplanes ``f_k + <g_k, z - x> = 0`` (f: N×H, g: N×H×D), the closest to ``x``.

    Its distance in the ``norm`` is ``|f_k| / ||g_k||_*`` with the dual norm (L1 for L-inf,
    L2 for L2). Returns that hyperplane's ``f`` (N) and ``g`` (N×D).
    """
    dual = g.abs().sum(dim=2) if norm == "linf" else g.norm(dim=2)
    k = (f.abs() / (dual + _TINY)).argmin(dim=1)
    rows = torch.arange(len(f), device=f.device)
    return f[rows, k], g[rows, k]


def _fab_step(x: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor, norm: str,
              alpha_max: float, eta: float) -> torch.Tensor:
    """One FAB step from ``x`` (N×D, flattened) for the linearised boundary ``f + <g, z - x> = 0``.

    ``f`` (N) and ``g`` (N×D): the logit difference at ``x`` and its gradient. Both ``x`` and
    ``x0`` are projected onto the hyperplane within the box, and the two moves are mixed with
    weight ``alpha`` (capped at ``alpha_max``) toward ``x0``, overshooting by ``eta``.
    """
    b = (g * x).sum(dim=1) - f
    project = _project_linf if norm == "linf" else _project_l2
    d, d0 = project(torch.cat([x, x0]), torch.cat([g, g]), torch.cat([b, b])).chunk(2)
    size, size0 = _size(d, norm).clamp_min(_MIN_MOVE), _size(d0, norm).clamp_min(_MIN_MOVE)
    alpha = (size / (size + size0)).clamp(0.0, alpha_max)
    return ((1.0 - alpha) * (x + eta * d) + alpha * (x0 + eta * d0)).clamp(0.0, 1.0)


def _random_start(x0: torch.Tensor, eps: torch.Tensor, norm: str, draws: Draws) -> torch.Tensor:
    """A start ``eps / 2`` from ``x0`` (N×D) in a random direction, clipped to [0, 1]; row ``i``
    drawn from point ``i``'s stream in ``draws``."""
    if norm == "linf":
        t = 2.0 * draws.uniform(tuple(x0.shape[1:]), "direction", x0.dtype) - 1.0
    else:
        t = draws.normal(tuple(x0.shape[1:]), "direction", x0.dtype)
    t = t / _size(t, norm).clamp_min(_TINY)
    return (x0 + 0.5 * eps * t).clamp(0.0, 1.0)


# ------------------------------------------------------------------ the attacks

@register_attack("fab")
class FAB(GradientAttack):
    """Untargeted FAB: each step toward the closest linearised boundary ``f_k - f_y = 0``."""

    name = "fab"

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        top_k: int | None = None,
        amp: bool = False,
        seed: int | None = 0,
    ) -> None:
        # FAB has no loss to choose: the GradientAttack's "ce" only sets its class check (>= 2)
        super().__init__(eps, norm=norm, targeted=False, seed=seed, loss="ce", amp=amp)
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.alpha_max = check_fraction("alpha_max", alpha_max, open_low=False)
        self.beta = check_fraction("beta", beta)
        number = is_real(eta)
        if not (number and 1.0 <= eta < float("inf")):
            raise AttackError(f"eta (the overshoot) must be a number >= 1, got {eta!r}")
        self.eta = float(eta)
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)

    def settings(self) -> dict:
        settings = {**super().settings(), "steps": self.steps, "restarts": self.restarts,
                    "alpha_max": self.alpha_max, "eta": self.eta, "beta": self.beta}
        del settings["loss"]  # not a setting of FAB (see __init__)
        if self.top_k is not None:
            settings["top_k"] = self.top_k
        return settings

    def _targets(self, search: Search) -> list[torch.Tensor | None]:
        """The class to steer each point toward, per run: ``None`` (the closest boundary), or
        with ``top_k`` (FAB-T) each of the runner-up classes of the clean logits."""
        if self.top_k is None:
            return [None]
        num_classes = search.clean_logits.shape[1]
        if num_classes < 3:
            raise AttackError(f"{self.name} steers toward the runner-up classes and needs at "
                              f"least 3 classes; the model has {num_classes}")
        return search.runner_ups(self.top_k)

    def _evaluate(self, search: Search, x: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None, need_grad: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The one model pass: logits at ``x`` and, if ``need_grad``, the linearised boundaries.

        Returns ``(logits, f, g)``: ``f`` (N×H) the logit differences ``f_k - f_y`` and ``g``
        (N×H×D) their gradients w.r.t. ``x``: H = 1 (``k = target``, one backward pass) when
        steering toward a target, else every class (K backward passes; ``f_y`` itself is set
        to +inf so that it is never the closest).
        """
        if not need_grad:
            with torch.no_grad():
                return search.logits(x), None, None
        x = x.detach().requires_grad_(True)
        logits = search.logits(x)
        rows = torch.arange(len(x), device=x.device)
        if target is not None:
            diff = (logits[rows, target] - logits[rows, y]).unsqueeze(1)
        else:
            diff = logits - logits[rows, y].unsqueeze(1)
        grads = []
        for k in range(diff.shape[1]):  # summed over the batch: each row's gradient is its own
            (grad,) = torch.autograd.grad(diff[:, k].sum(), x, retain_graph=k + 1 < diff.shape[1])
            grads.append(grad.flatten(1))
        diff = diff.detach()
        if target is None:
            diff[rows, y] = float("inf")
        return logits.detach(), diff, torch.stack(grads, dim=1)

    # -- the search

    def _attack(self, search: Search, eps: torch.Tensor) -> None:
        def evaluate(work: Points, need_step: bool) -> tuple[torch.Tensor, object]:
            """Each FAB step takes two passes (the points move in step; ``taken`` says which):
            a gradient pass that linearises the boundary at the iterate (and checks it), then,
            after the step, a forward pass that checks the new iterate."""
            gradient_pass = int(work.taken[0]) % 2 == 0
            logits, f, g = self._evaluate(search, work.x_adv, work.y, work.steer, gradient_pass)
            return logits, ((f, g) if gradient_pass else logits)

        targets = self._targets(search)  # every run of a point at once (FAB-T: per target)
        runs = len(targets)
        for restart in range(self.restarts):

            def admit(idx: torch.Tensor, restart: int = restart) -> Points:
                """Restart 0 starts at the clean point, the others eps / 2 away from it (the run
                toward the r-th target drawing from its own stream, as it would alone)."""
                x, y, _ = search.points(idx)
                e = eps[idx].flatten(1)
                starts = [x] * runs
                if restart:
                    starts = [_random_start(x.flatten(1), e, self.norm, search.random.at(
                        idx, self.name, "start", rank, restart)).view_as(x)
                        for rank in range(runs)]
                steer = None if targets[0] is None else torch.cat([t[idx] for t in targets])
                return Points(per_run(idx, runs), x=per_run(x, runs), y=per_run(y, runs),
                              target=None, steer=steer, eps=per_run(e, runs),
                              x_adv=torch.cat(starts))

            run_steps(search, search.remaining(), 2 * self.steps - 1, admit, self._step,
                      evaluate, refill=False, counts=self._within, runs=runs)

    def _within(self, work: Points) -> torch.Tensor:
        """FAB's iterates may leave the ball: only those within eps count as broken."""
        return (_size((work.x_adv - work.x).flatten(1), self.norm) <= work.eps).squeeze(1)

    def _step(self, work: Points, out: object) -> None:
        x, x0 = work.x_adv.flatten(1), work.x.flatten(1)
        if isinstance(out, tuple):  # after the gradient pass: the paper's step
            f, g = _closest_hyperplane(*out, self.norm)  # the only one when steering
            x = _fab_step(x, x0, f, g, self.norm, self.alpha_max, self.eta)
        else:  # after the check: adversarial beyond eps, so look for a closer one nearer x0
            adversarial = (out.argmax(dim=1) != work.y).unsqueeze(1)
            x = torch.where(adversarial, x0 + self.beta * (x - x0), x)
        work.x_adv = x.view_as(work.x_adv)


@register_attack("fab-t")
class FABTargeted(FAB):
    """FAB-T, as in AutoAttack's standard suite: FAB toward each of the ``top_k`` runner-up
    classes of the clean logits, all at once (untargeted goal: any misclassification counts).
    Needs at least 3 classes; with fewer than ``top_k + 1`` it uses all ``K - 1`` others."""

    name = "fab-t"
    defaults = {"top_k": 9}
