"""The engine every attack runs on: the clean pass, "first success per point", one search loop.

:class:`Search` keeps, for each point of the batch, the first adversarial example found by any
step of any restart. :func:`run_steps` is the one search loop: each attack gives it only its
paper's start rule (``admit``), what one model pass computes (``evaluate``) and its step rule
(``step``), on a :class:`Points` (the per-point state: iterate, step size, best loss, ...).
Every iterate is checked with the logits of the pass that ran anyway, so checking success
costs no extra forward pass; fooled points leave at once, so later passes only spend model
rows on points still robust. ``Search.capacity`` is the most points one pass may hold
(``perturb(..., batch_size=...)``; default: all of them); waiting points take the places of
those that left, so passes stay full.

A success found in mixed precision (``amp``) or on a randomised model (``eot`` > 1) is only
kept once it holds where it will be evaluated: in full precision, and, with ``eot`` passes,
for the majority of the model's random draws.

``Search.random`` holds the batch's per-point random streams (:mod:`._random`): every draw an
attack makes for a point is keyed by the call's seed, the point's index in the whole test set
and the place of the draw, never by the point's position in the batch.

:class:`GradientAttack` is the base of FGSM, PGD, APGD and FAB: it validates the shared
settings (``loss``, ``amp``), turns gradients on even under a caller's ``torch.no_grad()`` /
``inference_mode()``, runs the clean pass (or takes the caller's ``clean_logits``) and hands
the attack a :class:`Search`.
"""
from __future__ import annotations

import collections
import contextlib
from abc import abstractmethod
from typing import Callable, Iterator

import torch
from torch import nn

from .._checks import is_int, is_real
from .._tensor_checks import check_labels, check_logits
from ..errors import AttackError
from ._base import Attack, AttackResult, CallOptions, per_sample
from ._random import PointRandom
from .losses import check_classes, check_loss, cw_margin, objective


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise a one-line :class:`AttackError`."""
    if not is_int(value) or value < minimum:
        raise AttackError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value: object, *, open_low: bool = True) -> float:
    """Return ``value`` as a float in (0, 1] (or [0, 1] if not ``open_low``), else raise."""
    ok = is_real(value)
    if ok:
        ok = (0.0 < value <= 1.0) if open_low else (0.0 <= value <= 1.0)
    if not ok:
        low = "(0" if open_low else "[0"
        raise AttackError(f"{name} must be a number in {low}, 1], got {value!r}")
    return float(value)


# On CUDA, attack passes on fewer points than capacity run on one of this many sizes per
# doubling of the number of points (pass_rows).
PASS_SIZES = 8


def pads(device: torch.device) -> bool:
    """Whether passes on ``device`` are padded to :func:`pass_rows` rows: only on CUDA."""
    return device.type == "cuda"


def pass_rows(n: int, capacity: int) -> int:
    """Rows of a CUDA pass that evaluates ``n`` points: ``n`` rounded up to one of a few sizes.

    A memory measure, kept only on CUDA (:attr:`Search.pad`). A shrinking working batch would
    otherwise run the model on a new batch size at almost every step; allocators fragment on
    activations of ever new sizes (measured on the CPU, where glibc's heap did so: a CPU audit
    of 10x the images had a 37% higher peak RSS without the padding, 10% with it,
    ``benchmarks/bench_memory.py``), and cuDNN picks its kernels per shape. On a CPU the
    padding rows were pure extra model work (the official AutoAttack spends none), so there
    passes hold exactly the points being attacked. ``n`` is rounded up to a multiple of a
    power of two, ``PASS_SIZES`` steps per doubling (8: 64, 72, ..., 128, 144, ...): the idle
    rows stay under 1/8 of a pass.
    """
    if n >= capacity or n == 0:
        return n
    quantum = max(1, (1 << (n.bit_length() - 1)) // PASS_SIZES)
    return min(capacity, -(-n // quantum) * quantum)


class Search:
    """The batch being attacked, and the first success found so far for each of its points.

    The constructor runs the clean pass: points the model already gets "wrong" (untargeted:
    misclassified; targeted: already predicted as the target) are successes with ``x_adv = x``.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        *,
        loss: str,
        amp: bool,
        clean_logits: torch.Tensor | None = None,
        capacity: int | None = None,
        eot: int = 1,
        seed: int | None = 0,
        index: torch.Tensor | None = None,
    ) -> None:
        self.model, self.loss, self.amp, self.eot = model, loss, amp, eot
        # per-point random streams keyed by (seed, each point's index in the whole test set)
        self.random = PointRandom(seed, torch.arange(len(x), device=x.device) if index is None else index)
        self.x, self.target = x, target
        self.capacity = max(1, len(x)) if capacity is None else capacity
        self.pad = pads(x.device)  # pass sizes rounded up (pass_rows) only on CUDA
        if clean_logits is None:
            with torch.no_grad():
                # Full precision even with amp: this pass decides which points need attacking.
                logits = torch.cat([check_logits(model(piece)) for piece in x.split(self.capacity)])
        else:  # the caller's full-precision clean pass on the same images
            logits = check_logits(clean_logits.detach())
            if logits.shape[0] != len(x):
                raise AttackError(f"clean_logits has {logits.shape[0]} rows for {len(x)} images")
        num_classes = logits.shape[1]
        self.y = check_labels(y, num_classes, len(x))
        if target is not None:
            if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
                raise AttackError(
                    f"target classes must lie in 0..{num_classes - 1} (the model's classes)"
                )
        check_classes(loss, num_classes, targeted=target is not None)
        self.pred = logits.argmax(dim=1)
        self.success = self.goal_met(self.pred, self.y, target)
        # True while an untargeted attack steers toward chosen classes (AutoAttack's APGD-T):
        # ``target`` then feeds the loss only, and any misclassification is a success
        self.any_misclassification = False
        self.x_adv = x.clone()
        self.clean_logits = logits

    @staticmethod
    def goal_met(pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Untargeted: ``pred != y``; targeted: ``pred == target``."""
        return pred != y if target is None else pred == target

    def remaining(self) -> torch.Tensor:
        """Indices of the points not fooled yet (one host sync; called once per restart)."""
        return (~self.success).nonzero().squeeze(1)

    def remaining_hardest_first(self) -> torch.Tensor:
        """:meth:`remaining`, the points farthest from the goal (clean margin) first.

        A refilling attack admits them in this order: the points likely to hold out through
        every step run while the batch is being refilled, and those likely to fall in a few
        steps come last, so the final stretch, where nobody is left to fill the places of
        leaving points and passes run part-empty, is short. Longest job first: the order
        changes which points share a pass, not what any point's attack finds.
        """
        idx = self.remaining()
        logits = self.clean_logits[idx].float()
        # how far from the goal: untargeted, by how much class y still wins (-CW margin of y);
        # targeted, by how much the best other class still beats the target (CW margin of t)
        if self.target is None:
            distance = -cw_margin(logits, self.y[idx])
        else:
            distance = cw_margin(logits, self.target[idx])
        return idx[distance.argsort(descending=True, stable=True)]

    def runner_ups(self, top_k: int) -> list[torch.Tensor]:
        """Per point, the classes its clean logits rank 2nd, 3rd, ... (``top_k`` of them, at
        most ``K - 1``): the targets AutoAttack's APGD-T and FAB-T steer toward."""
        num_classes = self.clean_logits.shape[1]
        # column r: the class the clean logits rank r-th (0: the top one, the label if correct)
        ranked = self.clean_logits.argsort(dim=1, descending=True)
        return [ranked[:, rank] for rank in range(1, min(top_k, num_classes - 1) + 1)]

    def points(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Clean images, labels and targets of the points ``idx``."""
        return self.x[idx], self.y[idx], None if self.target is None else self.target[idx]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits on ``x``, under autocast when ``amp`` is on (float16 on CUDA,
        bfloat16 elsewhere); on CUDA from a pass of :func:`pass_rows` rows (padding sliced off)."""
        n = len(x)
        rows = pass_rows(n, self.capacity) if self.pad else n
        if rows > n:  # pad with copies of a point; detached, so no gradient flows back to it
            x = torch.cat([x, x[-1:].detach().expand(rows - n, *x.shape[1:])])
        if not self.amp:
            return self.model(x)[:n]
        dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            return self.model(x)[:n].float()

    def loss_and_grad(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, need_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits, per-sample attack objective and its gradient w.r.t. ``x`` (only ``x``: no parameter grads).

        With ``eot`` > 1 (expectation over transformation, for randomised models) the objective
        and its gradient are averaged over ``eot`` passes; the logits are the last pass's.
        """
        if not need_grad:
            with torch.no_grad():
                logits = self.logits(x)
                return logits, objective(self.loss, logits, y, target), None
        x = x.detach().requires_grad_(True)
        total_values, total_grad = None, None
        for _ in range(self.eot):
            logits = self.logits(x)
            values = objective(self.loss, logits, y, target)
            # Summing keeps each point's gradient its own (no 1/N factor that could underflow).
            (grad,) = torch.autograd.grad(values.sum(), x)
            total_values = values.detach() if total_values is None else total_values + values.detach()
            total_grad = grad if total_grad is None else total_grad + grad
        if self.eot > 1:
            total_values, total_grad = total_values / self.eot, total_grad / self.eot
        return logits.detach(), total_values, total_grad

    def confirmed_pred(self, x: torch.Tensor) -> torch.Tensor:
        """The prediction that counts: full precision, and with ``eot`` > 1 the majority vote of
        ``eot`` passes (a randomised model's single lucky draw is not an adversarial example)."""
        with torch.no_grad():
            if self.eot == 1:
                return self.model(x).argmax(dim=1)
            votes = torch.stack([self.model(x).argmax(dim=1) for _ in range(self.eot)])
            return votes.mode(dim=0).values

    def record(
        self,
        idx: torch.Tensor,
        x_cand: torch.Tensor,
        logits: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        counts: torch.Tensor | None = None,
        rank: torch.Tensor | None = None,
    ) -> bool:
        """Store the candidates that meet the goal as those points' (first) adversarial examples.

        ``idx`` are the candidates' positions in the full batch (none of them a success yet; a
        point may have several candidates, one per concurrent run); ``counts`` (optional, bool
        per candidate): which of them may count at all (FAB: those within eps of the clean
        point); ``rank`` (with several candidates per point): of a point's candidates that
        meet the goal at once, the one of lowest rank is kept.
        Returns whether any point was fooled.
        """
        pred = logits.argmax(dim=1)
        if self.any_misclassification:
            target = None
        hit = self.goal_met(pred, y, target)
        if counts is not None:
            hit = hit & counts
        hits = hit.nonzero().squeeze(1)  # the one host sync per step; it lets the batch shrink
        if hits.numel() == 0:
            return False
        if self.amp or self.eot > 1:
            # A low-precision or single-draw "success" must hold where it will be evaluated.
            exact = self.confirmed_pred(x_cand[hits])
            t_hits = None if target is None else target[hits]
            confirmed = self.goal_met(exact, y[hits], t_hits)
            hits, pred = hits[confirmed], pred.clone()
            pred[hits] = exact[confirmed]
            if hits.numel() == 0:
                return False
        if rank is not None:
            hits = _lowest_rank_per_point(hits, idx[hits], rank[hits])
        where = idx[hits]
        self.x_adv[where] = x_cand[hits].detach()
        self.pred[where] = pred[hits]
        self.success[where] = True
        return True

    def result(self) -> AttackResult:
        return AttackResult(self.x_adv, self.pred, self.success)


def _lowest_rank_per_point(hits: torch.Tensor, points: torch.Tensor,
                           rank: torch.Tensor) -> torch.Tensor:
    """Of ``hits`` (candidate positions, of ``points``), one per point: the lowest ``rank``."""
    by_rank = rank.argsort(stable=True)
    hits, points = hits[by_rank], points[by_rank]
    by_point = points.argsort(stable=True)  # stable: within a point, lowest rank first
    sorted_points = points[by_point]
    first = torch.ones_like(sorted_points, dtype=torch.bool)
    first[1:] = sorted_points[1:] != sorted_points[:-1]
    return hits[by_point[first]]


def per_run(t: torch.Tensor, runs: int) -> torch.Tensor:
    """``t`` (one row per point) repeated for ``runs`` concurrent runs: run-major, so row
    ``r * n + i`` is point ``i`` in run ``r`` (an attack's ``admit`` with ``runs`` > 1)."""
    return t.repeat(runs, *(1,) * (t.dim() - 1))


class Points:
    """The per-point state of the points an attack is working on: their positions in the
    search (``idx``), the steps each has taken (``taken``) and whatever tensors the attack keeps
    per point (clean image, iterate, step size, best loss so far, ...), each indexed by point
    along dim 0 and read and written as attributes (``work.x_adv``; ``None`` allowed)."""

    def __init__(self, idx: torch.Tensor, **fields: torch.Tensor | None) -> None:
        fields.setdefault("taken", torch.zeros(len(idx), dtype=torch.long, device=idx.device))
        self.__dict__.update(idx=idx, **fields)

    def take(self, keep: torch.Tensor) -> "Points":
        """The same state for the points ``keep`` only."""
        return Points(**{k: None if v is None else v[keep] for k, v in vars(self).items()})

    def put(self, slots: torch.Tensor, other: "Points") -> None:
        """Write ``other``'s points into ``slots``, in place."""
        for k, v in vars(self).items():
            if v is not None:
                v[slots] = getattr(other, k)


Evaluate = Callable[[Points, bool], tuple[torch.Tensor, object]]


def gradient_of_objective(search: Search) -> Evaluate:
    """The usual model pass: logits at ``work.x_adv`` and ``(objective, gradient)`` there
    (gradient ``None`` when no step follows)."""

    def evaluate(work: Points, need_grad: bool) -> tuple[torch.Tensor, object]:
        logits, values, grad = search.loss_and_grad(work.x_adv, work.y, work.target, need_grad)
        return logits, (values, grad)

    return evaluate


def run_steps(search: Search, waiting: torch.Tensor, steps: int,
              admit: Callable[[torch.Tensor], Points],
              step: Callable[[Points, object], None],
              evaluate: Evaluate | None = None, *, refill: bool = True,
              counts: Callable[[Points], torch.Tensor] | None = None, runs: int = 1) -> None:
    """The search loop of every attack: ``steps`` steps on each point of ``waiting``.

    The attack says how a point enters (``admit``: its starting iterate ``x_adv`` and its own
    state), what one model pass computes (``evaluate``, default: the objective and its
    gradient) and how a point moves (``step``: the next ``work.x_adv`` from what ``evaluate``
    returned); this loop does the rest. Every iterate is checked (``counts``: which may count as
    a success, e.g. FAB's within-eps ones), the fooled points are recorded (their first success)
    and leave, and so do the points whose last iterate has been checked. With ``refill`` a
    waiting point takes each free slot, so every pass runs on a full batch (at most
    ``search.capacity`` rows) until the queue is empty, then the batch shrinks; without it
    (a step rule that depends on the iteration shared by the batch, as Square's square size
    does) the points run in consecutive pieces of ``capacity`` rows, each on a shrinking batch.

    ``runs`` > 1: each point runs that many searches at once, one row each (APGD-T's and
    FAB-T's targets: ``admit`` gives ``runs`` rows per point, run-major (:func:`per_run`);
    this loop numbers each row's run, ``work.rank``). A point's runs enter together and move in step, so its first success is the one of
    the earliest step (of the lowest rank among runs that succeed at the same step), however
    the points are batched; all its runs leave with it. Rather than one run after the other
    on a batch that thins out, a few robust points fill a pass, at the price of the steps its
    other runs take until one succeeds. A pass holds at least one point's runs.
    """
    per_pass = max(1, search.capacity // runs)  # points per pass
    if not refill:
        for piece in waiting.split(per_pass):
            run_steps(search, piece, steps, admit, step, evaluate, counts=counts, runs=runs)
        return
    evaluate = evaluate or gradient_of_objective(search)

    def enter(idx: torch.Tensor) -> Points:
        """The points ``idx`` as the attack admits them; with runs, each row's run number."""
        points = admit(idx)
        if runs > 1:
            points.rank = torch.arange(runs, device=idx.device).repeat_interleave(len(idx))
        return points

    first = waiting[:per_pass]
    work = enter(first)
    admitted, iteration = len(first), 0
    joined: collections.deque[int] = collections.deque([0])  # iteration each live group joined
    while len(work.idx):
        while joined[0] < iteration - steps:  # groups whose last check has passed
            joined.popleft()
        final_check = joined[0] == iteration - steps  # some points are at their last iterate
        need_step = joined[-1] != iteration - steps  # not all of them: a step follows
        logits, out = evaluate(work, need_step)
        fooled = search.record(work.idx, work.x_adv, logits, work.y, work.target,
                               None if counts is None else counts(work),
                               getattr(work, "rank", None))
        # the rows of every point now fooled leave (with runs > 1, its other runs too)
        leave = search.success[work.idx] if fooled else None
        if final_check:  # points checked after their last step leave too
            done = work.taken >= steps
            leave = done if leave is None else leave | done
        if need_step:
            step(work, out)
            work.taken += 1
        iteration += 1
        if leave is None:
            continue
        free = leave.nonzero().squeeze(1)  # host sync: which slots to fill or drop
        new = waiting[admitted:admitted + len(free) // runs]
        filled = free[:len(new) * runs]
        if len(new):
            admitted += len(new)
            work.put(filled, enter(new))
            joined.append(iteration)
            leave[filled] = False
        if len(filled) < len(free):  # nobody left to admit: the batch shrinks
            work = work.take((~leave).nonzero().squeeze(1))


@contextlib.contextmanager
def _gradients_on() -> Iterator[None]:
    """Attacks need autograd even when called under ``torch.no_grad()`` or ``inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class GradientAttack(Attack):
    """Base of the gradient attacks: shared settings, the clean pass, eps per sample."""

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        targeted: bool = False,
        seed: int | None = 0,
        loss: str = "ce",
        amp: bool = False,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed)
        if not isinstance(amp, bool):
            raise AttackError(f"amp must be True or False, got {amp!r}")
        self.loss = check_loss(loss)
        self.amp = amp

    def settings(self) -> dict:
        return {**super().settings(), "loss": self.loss, "amp": self.amp}

    # passes per loss evaluation (expectation over transformation); APGD sets it for version="rand"
    eot: int = 1

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
        options: CallOptions,
    ) -> AttackResult:
        with _gradients_on():
            # Tensors made under inference_mode() cannot take part in autograd: copy them.
            x, y, target = (t.clone() if t is not None and t.is_inference() else t
                            for t in (x, y, target))
            to_channels_last = x.is_cuda and x.dim() == 4
            if to_channels_last:  # faster convolutions on CUDA
                x = x.contiguous(memory_format=torch.channels_last)
            search = Search(model, x, y, target, loss=self.loss, amp=self.amp,
                            clean_logits=options.clean_logits, capacity=options.batch_size,
                            eot=self.eot, seed=options.seed, index=options.index)
            self._attack(search, per_sample(self.eps, len(x), x))
            result = search.result()
        if to_channels_last:
            result.x_adv = result.x_adv.contiguous()
        return result

    @abstractmethod
    def _attack(self, search: Search, eps: torch.Tensor) -> None:
        """Look for adversarial examples and ``search.record`` them; ``eps`` is N×1×1×1.
        Random draws come from ``search.random`` (per point, keyed by the call's seed and
        each point's index)."""
