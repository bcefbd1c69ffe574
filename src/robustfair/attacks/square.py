"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L-inf and L2.

A black-box attack by random search: it only reads the model's logits (forward passes under
``torch.no_grad()``, never a gradient), so a model whose input gradients are zero or useless
(gradient masking) does not stop it. Each point keeps its best image so far, ``x_best``; each
query proposes a change of ``x_best`` confined to a random square window and keeps it when
the loss improves. The module follows the paper's Algorithm 1, one small function per rule:

* :func:`p_selection`: the fraction ``p`` of the pixels a square covers. It starts at
  ``p_init`` and is halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
  iterations of a 10,000-query budget (the iteration is rescaled to that budget first);
  the square's side is ``s = round(sqrt(p * h * w))``, at least 1 (L-inf) or 3 (L2);
* :func:`_linf_init`: vertical stripes: every column of every channel moves by ``+eps`` or
  ``-eps``;
* :func:`_linf_step`: one square of ``x_best``, per channel, set to ``x +- eps`` (signs drawn
  again until the square changes something, as in the paper's code);
* :func:`_l2_init`: a grid of squares, each holding a "pseudo-Gaussian" bump
  (:func:`_bump`) with a random sign per channel, rescaled to L2 norm ``eps``;
* :func:`_l2_step`: a new bump is added to the normalised content of a first window, whose
  norm is then set to what the first and a second window held plus the budget still free;
  the second window is emptied; the whole perturbation is rescaled to norm ``eps``.

Loss (``loss``): any of :mod:`losses`'s, maximised. ``None`` takes the official code's
choice: the CW margin of the label untargeted, ``-CE`` to the target when targeted. A
proposal is kept when it raises the loss strictly; a point leaves the working batch as soon
as it meets the goal (its first adversarial image is kept), so later queries run only on
the points still robust.

Budget: ``n_queries`` iterations after the initial point, as in AutoAttack's SquareAttack
(at most ``n_queries + 1`` forward rows per point and restart). Unlike AutoAttack's version,
which draws one window and one set of signs per iteration for the whole batch, each point
draws its own (as in the paper's code), the L-inf step draws signs again rather than spend
a query on an unchanged image (as the paper's code; AutoAttack's does not), and a window
may start on any row or column from which it fits (both official versions never draw the
last one, so on small images the last row and column keep their initial value). On 8×8
digits these make it clearly stronger than AutoAttack's (tests/test_square.py). Each image
may be of any size and number of channels; a square never exceeds the shorter side. Every
model call goes through ``query`` in :meth:`Square._run`; ``perturb(..., batch_size=B)`` caps a pass
at ``B`` points. Every draw (windows, signs, bump orientations) comes from the point's own
stream at (restart, iteration) (:mod:`._random`), so results do not depend on ``B`` or on
which points share a pass; they are made a block of iterations at a time
(:class:`._random.DrawBlock`, the same numbers), which spares a few dozen small tensor
operations per query.

>>> p_selection(0, 5000), p_selection(10, 5000), p_selection(4999, 5000)
(0.8, 0.4, 0.0015625)
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> res = Square(eps=0.1, n_queries=20).perturb(model, torch.rand(6, 1, 2, 2),
...                                              torch.zeros(6, dtype=torch.long))
>>> bool(((res.x_adv - res.x_adv.clamp(0, 1)).abs().max() == 0))
True
"""
from __future__ import annotations

import math
import torch
from torch import nn

from ._base import Attack, AttackResult, CallOptions, per_sample, register_attack
from ._geometry import l2_norm
from ._random import DrawBlock, Draws
from ._search import Points, Search, check_fraction, check_positive_int, run_steps
from .losses import check_loss, objective

# Guards divisions by a norm that can be exactly 0 (an empty window, a zero perturbation).
_TINY = 1e-12
# (iterations of a 10,000-query budget after which p halves)
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# iterations whose random draws are made at once (fewer, larger tensor operations), and the
# most elements of a block's window masks (N x iterations x H x W booleans, 16 MiB)
_BLOCK = 100
_BLOCK_MASK_ELEMENTS = 1 << 24


def p_selection(it: int, n_queries: int, p_init: float = 0.8) -> float:
    """The fraction of pixels the square of iteration ``it`` (0-based) covers.

    ``it`` is first rescaled to a 10,000-query budget; ``p`` is ``p_init`` halved once per
    threshold of :data:`_HALVINGS` that the rescaled iteration has passed.
    """
    it = int(it / n_queries * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVINGS)


def _same_p_until(it: int, n_queries: int, p_init: float, longest: int) -> int:
    """The first iteration after ``it`` (at most ``it + longest``, at most ``n_queries``) whose
    ``p`` differs from iteration ``it``'s: a block of draws never spans two square sizes."""
    p, end = p_selection(it, n_queries, p_init), it + 1
    while end < min(n_queries, it + longest) and p_selection(end, n_queries, p_init) == p:
        end += 1
    return end


def _side(p: float, h: int, w: int, smallest: int) -> int:
    """The side of a square covering about ``p * h * w`` pixels, within [smallest, min(h, w)]."""
    return min(max(int(round(math.sqrt(p * h * w))), smallest), h, w)


def _corners(draws: Draws | DrawBlock, s: int, h: int, w: int,
             tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners, one per point, of ``s``×``s`` windows that fit in an ``h``×``w`` image
    (every position from which the window fits equally likely)."""
    return draws.integers((), h - s + 1, tag + ":top"), draws.integers((), w - s + 1, tag + ":left")


def _window_mask(top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """N×1×H×W (for corners of any shape N×...: N×...×1×H×W), True inside each ``s``×``s``
    window."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + s)
    in_cols = (cols >= left[..., None]) & (cols < left[..., None] + s)
    return (in_rows[..., :, None] & in_cols[..., None, :]).unsqueeze(-3)


def _random_window(draws: Draws | DrawBlock, s: int, h: int, w: int, tag: str) -> torch.Tensor:
    """N×1×H×W: each point's random ``s``×``s`` window (from a :class:`DrawBlock`, the masks
    of the whole block are made at its first place)."""
    def make(d: Draws) -> torch.Tensor:
        return _window_mask(*_corners(d, s, h, w, tag), s, h, w)

    if isinstance(draws, DrawBlock):
        return draws.derived(("window", tag, s, h, w), make)
    return make(draws)


def _window_index(top: torch.Tensor, left: torch.Tensor, s: int) -> tuple[torch.Tensor, ...]:
    """Indices that read (or write) each point's window of an N×C×H×W tensor as N×S×S×C."""
    steps = torch.arange(s, device=top.device)
    rows = (top[:, None] + steps)[:, :, None]
    cols = (left[:, None] + steps)[:, None, :]
    points = torch.arange(len(top), device=top.device)[:, None, None]
    return points, slice(None), rows, cols


# ------------------------------------------------------------------------------ L-inf

def _linf_init(x: torch.Tensor, eps: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Vertical stripes: each column of each channel of each point moves by ``+eps`` or ``-eps``."""
    _, c, _, w = x.shape
    return (x + eps * draws.signs((c, 1, w), "stripes", x)).clamp(0.0, 1.0)


def _linf_step(x: torch.Tensor, x_best: torch.Tensor, eps: torch.Tensor, p: float,
               draws: Draws | DrawBlock) -> torch.Tensor:
    """``x_best`` with one random square per point set, per channel, to ``x + eps`` or ``x - eps``.

    Where the drawn signs would leave the square as it is (it already sits on that corner of
    the ball), the opposite signs are taken, so no query is spent on an unchanged image (with
    one channel that is the only other choice; the official code redraws until it changes).
    """
    _, c, h, w = x.shape
    s = _side(p, h, w, smallest=1)
    inside = _random_window(draws, s, h, w, "window")
    signs = draws.signs((c, 1, 1), "signs", x)
    proposal = torch.where(inside, (x + eps * signs).clamp(0.0, 1.0), x_best)
    unchanged = (proposal == x_best).flatten(1).all(dim=1).view(-1, 1, 1, 1)
    opposite = torch.where(inside, (x - eps * signs).clamp(0.0, 1.0), x_best)
    return torch.where(unchanged, opposite, proposal)


# --------------------------------------------------------------------------------- L2

def _bump_half(a: int, b: int, like: torch.Tensor) -> torch.Tensor:
    """An ``a``×``b`` block of nested rectangles around its centre, unit L2 norm.

    Rectangle ``k`` holds the cells within Chebyshev distance ``k`` of the centre cell and
    adds ``1 / (k + 1)**2`` to each, so the block peaks at the centre and decays outwards.
    """
    rows = (torch.arange(a, device=like.device) - a // 2).abs()
    cols = (torch.arange(b, device=like.device) - b // 2).abs()
    distance = torch.maximum(rows[:, None], cols[None, :])
    weights = 1.0 / torch.arange(1, max(a // 2, b // 2) + 2, device=like.device,
                                 dtype=like.dtype) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum of the weights of rectangles >= d
    block = tail[distance]
    return block / block.norm().clamp_min(_TINY)


def _bump(s: int, like: torch.Tensor) -> torch.Tensor:
    """The paper's ``s``×``s`` update: a positive bump on the top half, a negative one below.

    Unit L2 norm; the two halves' opposite signs keep the update's mean near zero.
    """
    top = _bump_half(s // 2, s, like)
    bottom = -_bump_half(s - s // 2, s, like)
    bump = torch.cat([top, bottom])
    return bump / bump.norm().clamp_min(_TINY)


def _random_bumps(draws: Draws | DrawBlock, shape: tuple[int, ...], s: int,
                  like: torch.Tensor) -> torch.Tensor:
    """N×``shape``×S×S bumps, each transposed (bump on the left/right halves) with probability 1/2."""
    bump = _bump(s, like)
    flip = draws.integers((*shape, 1, 1), 2, "flip").bool()
    return torch.where(flip, bump.T, bump)


def _l2_init(x: torch.Tensor, eps: torch.Tensor, draws: Draws) -> torch.Tensor:
    """A grid of bumps of side ``min(h, w) // 5`` (about 5×5 of them, centred), each with a
    random sign per channel, rescaled to L2 norm ``eps`` and clipped to [0, 1]."""
    n, c, h, w = x.shape
    s = max(min(h, w) // 5, 1)
    k_h, k_w = h // s, w // s
    off_h, off_w = (h - k_h * s) // 2, (w - k_w * s) // 2
    bumps = _random_bumps(draws, (1, k_h, k_w), s, x)
    tiles = bumps * draws.signs((c, k_h, k_w), "signs", x)[..., None, None]  # N×C×kh×kw×S×S
    delta = torch.zeros_like(x)
    delta[:, :, off_h:off_h + k_h * s, off_w:off_w + k_w * s] = (
        tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, k_h * s, k_w * s))
    return (x + delta / l2_norm(delta).clamp_min(_TINY) * eps).clamp(0.0, 1.0)


def _l2_step(x: torch.Tensor, x_best: torch.Tensor, eps: torch.Tensor, p: float,
             draws: Draws | DrawBlock) -> torch.Tensor:
    """``x_best`` with mass moved between two random windows of odd side ``s`` (per point).

    Window 1 gets its current content (normalised) plus a new bump with a random sign per
    channel, rescaled per channel to ``sqrt(norm of both windows' content**2 + free / c)``,
    where ``free = max(eps**2 - ||delta||**2, 0)`` is the budget not yet used; window 2 is
    emptied (window 1 wins where they overlap). The perturbation is then rescaled to norm
    ``eps`` and the image clipped to [0, 1].
    """
    _, c, h, w = x.shape
    s = _side(p, h, w, smallest=3)
    if s % 2 == 0 and s < min(h, w):
        s += 1  # odd, so the bump has a centre cell (unless the image is too small)
    delta = x_best - x
    first, second = (_corners(draws, s, h, w, tag) for tag in ("first", "second"))
    where_first = _window_index(*first, s)

    content = delta[where_first].permute(0, 3, 1, 2)  # N×C×S×S
    content_norm = content.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    both = _window_mask(*first, s, h, w) | _window_mask(*second, s, h, w)
    both_norm = (delta * both).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # N×C×1×1
    free = (eps.pow(2) - l2_norm(delta).pow(2)).clamp_min(0.0)

    update = _random_bumps(draws, (1,), s, x) * draws.signs((c, 1, 1), "signs", x)
    update = update + content / (content_norm + _TINY)
    update = update / (update.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + _TINY)
    update = update * (free / c + both_norm.pow(2)).sqrt()

    delta = delta.masked_fill(_window_mask(*second, s, h, w), 0.0)
    delta[where_first] = update.permute(0, 2, 3, 1)
    return (x + delta / l2_norm(delta).clamp_min(_TINY) * eps).clamp(0.0, 1.0)


_INIT = {"linf": _linf_init, "l2": _l2_init}
_STEP = {"linf": _linf_step, "l2": _l2_step}


# ----------------------------------------------------------------------- the attack

@register_attack("square")
class Square(Attack):
    """Square Attack: score-based random search in the eps-ball (L-inf or L2), no gradients."""

    name = "square"
    uses_gradient = False

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str | None = None,
        targeted: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed)
        self.n_queries = check_positive_int("n_queries", n_queries)
        self.p_init = check_fraction("p_init", p_init)
        self.restarts = check_positive_int("restarts", restarts)
        # The official code's choice: the margin untargeted, cross-entropy to the target.
        self.loss = check_loss(loss if loss is not None else ("ce" if targeted else "cw"))

    def settings(self) -> dict:
        return {**super().settings(), "loss": self.loss, "n_queries": self.n_queries,
                "p_init": self.p_init, "restarts": self.restarts}

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, options: CallOptions) -> AttackResult:
        with torch.no_grad():
            search = Search(model, x, y, target, loss=self.loss, amp=False,
                            clean_logits=options.clean_logits, capacity=options.batch_size,
                            seed=options.seed, index=options.index)
            eps = per_sample(self.eps, len(x), x)
            for restart in range(self.restarts):
                self._run(search, eps, restart)
        return search.result()

    def _run(self, search: Search, eps: torch.Tensor, restart: int) -> None:
        """One restart on the points still robust: the initial image, then ``n_queries``
        proposals, each kept where it raises the loss. The points of a pass move in step (the
        square's size depends on the iteration); each point's draws at iteration ``it`` come
        from its own stream at ``(restart, it)``, whichever points share the pass."""
        init, propose = _INIT[self.norm], _STEP[self.norm]

        def admit(idx: torch.Tensor) -> Points:
            x, y, target = search.points(idx)
            x_init = init(x, eps[idx], search.random.at(idx, self.name, restart, "init"))
            low = torch.full((len(idx),), -float("inf"), dtype=x.dtype, device=x.device)
            return Points(idx, x=x, y=y, target=target, eps=eps[idx], x_adv=x_init,
                          x_best=x_init, f_best=low)

        def query(work: Points, need_step: bool) -> tuple[torch.Tensor, torch.Tensor]:
            """The attack's only way to the model: logits (forward only) and the loss."""
            logits = search.logits(work.x_adv)
            return logits, objective(self.loss, logits, work.y, work.target)

        block = {"start": 0, "end": 0}  # the iterations whose draws work.draws holds

        def step(work: Points, f: torch.Tensor) -> None:
            better = f > work.f_best
            work.f_best = torch.where(better, f, work.f_best)
            work.x_best = torch.where(better.view(-1, 1, 1, 1), work.x_adv, work.x_best)
            it = int(work.taken[0])  # the same for every point of the pass
            if it == 0 or it >= block["end"]:  # a new pass, or the block is used up
                longest = min(_BLOCK, max(1, _BLOCK_MASK_ELEMENTS // work.x[0, 0].numel()
                                            // len(work.idx)))
                end = _same_p_until(it, self.n_queries, self.p_init, longest)
                places = torch.arange(it, end, device=work.idx.device)
                work.draws = DrawBlock(search.random.at(work.idx, self.name, restart, places))
                block.update(start=it, end=end)
            work.draws.place = it - block["start"]
            work.x_adv = propose(work.x, work.x_best, work.eps,
                                 p_selection(it, self.n_queries, self.p_init), work.draws)

        run_steps(search, search.remaining(), self.n_queries, admit, step, query, refill=False)
