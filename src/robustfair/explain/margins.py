"""Per-point margins: the smallest perturbation budget at which PGD flips each point.

For every point the budget is bracketed by ``[lo, hi]`` (``lo``: a budget at which PGD failed,
``hi``: the norm of the smallest adversarial example found so far) and the bracket is halved
by running PGD at the midpoint, with a *per-sample* eps so the whole batch moves at once:
a success lowers ``hi`` to the norm of the example found (at most the midpoint), a failure
raises ``lo`` to the midpoint. The search stops when ``hi - lo <= tol`` for every point.
A point misclassified on the clean image has margin 0; a point PGD cannot flip even at
``eps_max`` has margin ``inf`` (censored: "more than eps_max").

The margin is the budget of a *found* adversarial example, so it is an upper bound on the true
distance to the decision boundary (PGD is not exact), and the bisection assumes that PGD
succeeding at one budget would also succeed at a larger one.

Robust accuracy as a function of eps follows from the margins alone: a point counts as robust
at budget ``eps`` if and only if its margin is larger than ``eps`` (so clean errors, with margin
0, are never robust). The curve is therefore what PGD with these settings would report at each
eps, up to the bisection tolerance, without running one attack per eps.

>>> import numpy as np
>>> round(censored_quantile(np.array([0.1, 0.2, np.inf, np.inf]), 0.25), 6)
0.175
>>> censored_quantile(np.array([0.1, 0.2, np.inf, np.inf]), 0.5)
inf
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._device import model_device
from ..attacks import build_attack
from ..attacks import NORMS, eval_mode
from ..errors import RobustfairError
from ._common import (check_batch_size, check_inputs, finite_or_none, float_batches, output_width, records,
                      resolve_classes)

__all__ = [
    "Margins",
    "censored_quantile",
    "margin_analysis",
    "minimal_eps",
    "per_class_margins",
    "robust_accuracy_curve",
]


def _perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)


def minimal_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    eps_max: float,
    tol: float | None = None,
    steps: int = 20,
    restarts: int = 1,
    loss: str = "ce",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Per-point smallest eps (``norm``-ball) at which PGD flips the prediction; see module doc.

    Returns a float64 tensor on the CPU: 0 for clean errors, ``inf`` for points not flipped at
    ``eps_max``. ``tol`` (default ``eps_max / 64``) is the bisection's final bracket width.
    """
    if norm not in NORMS:
        raise RobustfairError(f"unknown norm {norm!r}; choose from: {', '.join(NORMS)}")
    if not (isinstance(eps_max, (int, float)) and math.isfinite(eps_max) and eps_max > 0):
        raise RobustfairError(f"eps_max must be a positive number, got {eps_max!r}")
    tol = eps_max / 64 if tol is None else tol
    if not (isinstance(tol, (int, float)) and 0 < tol < eps_max):
        raise RobustfairError(f"tol must lie in (0, eps_max), got {tol!r}")
    check_batch_size(batch_size)
    device = model_device(model)
    y = check_inputs(x, y, output_width(model, x))
    out = []
    with eval_mode(model):
        bar = tqdm(total=len(x), desc="margins", unit="img", disable=not progress, leave=False)
        with bar:
            for start, xb in float_batches(x, batch_size, device):
                yb = y[start:start + len(xb)].to(device)
                out.append(_batch_margins(model, xb, yb, norm, float(eps_max), float(tol),
                                          dict(steps=steps, restarts=restarts, loss=loss, seed=seed)))
                bar.update(len(xb))
    return torch.cat(out).cpu()


def _batch_margins(model, x, y, norm, eps_max, tol, settings) -> torch.Tensor:
    n = len(x)
    with torch.no_grad():
        logits = model(x)
    margin = torch.zeros(n, dtype=torch.float64, device=x.device)
    correct = logits.argmax(dim=1) == y

    def attack_at(idx: torch.Tensor, eps: torch.Tensor):
        attack = build_attack("pgd", eps=eps.to(x.dtype), norm=norm, **settings)
        res = attack.perturb(model, x[idx], y[idx])
        size = _perturbation_norm(res.x_adv - x[idx], norm).double()
        return res.success, size

    # 1. which clean-correct points flip at all within eps_max
    idx = correct.nonzero().squeeze(1)
    if idx.numel() == 0:
        return margin
    success, size = attack_at(idx, torch.full((idx.numel(),), eps_max, device=x.device))
    margin[idx[~success]] = math.inf
    idx, hi = idx[success], size[success]
    lo = torch.zeros_like(hi)
    # 2. bisection, on the points whose bracket is still wider than tol
    while idx.numel():
        active = (hi - lo) > tol
        done = ~active
        margin[idx[done]] = hi[done]
        idx, lo, hi = idx[active], lo[active], hi[active]
        if idx.numel() == 0:
            break
        mid = (lo + hi) / 2
        success, size = attack_at(idx, mid)
        # a success gives an example of norm <= mid; a failure says nothing below mid was found
        hi = torch.where(success, torch.minimum(size, mid), hi)
        lo = torch.where(success, lo, mid)
    return margin


def censored_quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile where ``inf`` (censored) values sort last; ``inf`` if the
    quantile touches a censored value (numpy's own quantile gives NaN there)."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        return float("nan")
    h = (v.size - 1) * q
    lo, hi = int(math.floor(h)), int(math.ceil(h))
    if math.isinf(v[hi]):
        return float("inf")
    return float(v[lo] + (h - lo) * (v[hi] - v[lo]))


def per_class_margins(margins: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Per class: ``n``, ``median``, quartiles ``q1``/``q3`` of the margins, and ``censored``
    (share of points not flipped within ``eps_max``, whose margin is only known to exceed it)."""
    m, y = np.asarray(margins, dtype=float), np.asarray(y)
    rows = []
    for k in range(len(classes)):
        v = m[y == k]
        rows.append({
            "n": int(v.size),
            "q1": censored_quantile(v, 0.25),
            "median": censored_quantile(v, 0.5),
            "q3": censored_quantile(v, 0.75),
            "censored": float(np.isinf(v).mean()) if v.size else float("nan"),
        })
    return pd.DataFrame(rows, index=pd.Index([str(c) for c in classes], name="class"))


def robust_accuracy_curve(margins: np.ndarray, y: np.ndarray, classes: Sequence[str],
                          eps: Sequence[float]) -> pd.DataFrame:
    """Robust accuracy per class (columns, plus ``"all"``) at each budget in ``eps`` (rows).

    A point is robust at ``eps`` iff its margin is larger than ``eps`` (see module doc).
    """
    m, y = np.asarray(margins, dtype=float), np.asarray(y)
    grid = np.asarray(eps, dtype=float)
    robust = m[None, :] > grid[:, None]  # E × N
    k = len(classes)
    onehot = np.eye(k)[y]                # N × K
    n = onehot.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = robust @ onehot / n
    frame = pd.DataFrame(per_class, index=pd.Index(grid, name="eps"), columns=[str(c) for c in classes])
    frame["all"] = robust.mean(axis=1)
    return frame


@dataclass
class Margins:
    """Per-point margins and their per-class summary and robust-accuracy curve."""

    classes: list[str]
    margins: np.ndarray        # per point; 0 = clean error, inf = not flipped within eps_max
    y: np.ndarray
    norm: str
    eps_max: float
    tol: float
    settings: dict

    @property
    def by_class(self) -> pd.DataFrame:
        return per_class_margins(self.margins, self.y, self.classes)

    def curve(self, eps: Sequence[float] | None = None, points: int = 41) -> pd.DataFrame:
        """Robust accuracy per class against eps (default: ``points`` budgets from 0 to ``eps_max``)."""
        grid = np.linspace(0.0, self.eps_max, points) if eps is None else eps
        return robust_accuracy_curve(self.margins, self.y, self.classes, grid)

    def to_dict(self) -> dict:
        curve = self.curve(points=21)
        return {
            "norm": self.norm,
            "eps_max": self.eps_max,
            "tol": self.tol,
            "settings": self.settings,
            "by_class": records(self.by_class),
            "curve": {"eps": curve.index.tolist(),
                      **{c: [finite_or_none(v) for v in curve[c]] for c in curve.columns}},
            "margins": [finite_or_none(v) if np.isfinite(v) else "inf" for v in self.margins],
        }


def margin_analysis(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    classes: Sequence[str] | None = None,
    norm: str = "linf",
    eps_max: float,
    tol: float | None = None,
    steps: int = 20,
    restarts: int = 1,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> Margins:
    """:func:`minimal_eps` for every point, packaged with the class names for summaries and curves."""
    names = resolve_classes(model, classes, x)
    y = check_inputs(x, y, len(names))
    tol = eps_max / 64 if tol is None else tol
    m = minimal_eps(model, x, y, norm=norm, eps_max=eps_max, tol=tol, steps=steps, restarts=restarts,
                    seed=seed, batch_size=batch_size, progress=progress)
    settings = {"attack": "pgd", "steps": steps, "restarts": restarts, "seed": seed}
    return Margins(names, m.numpy(), y.cpu().numpy(), norm, float(eps_max), float(tol), settings)
