"""Per-sample attack losses on logits: cross-entropy, CW margin, DLR (and targeted variants).

Every loss here returns one value per point, and an attack always *maximises*
:func:`objective`; the targeted variants are written so that "larger" means "closer to the
target". Nothing is averaged over the batch, so one point's loss never changes another
point's step (dropping fooled points from a batch leaves the others' trajectories alone).

>>> z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
>>> float(cw_margin(z, torch.tensor([0])))  # best other class (1.0) minus true class (3.0)
-2.0
>>> float(dlr(z, torch.tensor([0])))  # -(3 - 1) / (3 - 0)
-0.6666666865348816
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import AttackError

LOSSES = ("ce", "cw", "dlr")

# Keeps the DLR denominators away from 0 when the top logits tie (the usual 1e-12 of the paper).
_DLR_TINY = 1e-12


def _pick(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``logits[i, cls[i]]`` for every row ``i``."""
    return logits.gather(1, cls.unsqueeze(1)).squeeze(1)


def _best_other(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``max_{j != cls[i]} logits[i, j]``: the strongest competitor of class ``cls[i]``."""
    masked = logits.scatter(1, cls.unsqueeze(1), float("-inf"))
    return masked.amax(dim=1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of ``logits`` against class ``y``."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y``: positive exactly when ``y`` is not the argmax."""
    return _best_other(logits, y) - _pick(logits, y)


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``.

    Dividing by the gap between the largest and third-largest logit makes it invariant to a
    shift and rescaling of the logits, so it does not saturate the way cross-entropy does.
    """
    top = logits.topk(3, dim=1).values
    return -(_pick(logits, y) - _best_other(logits, y)) / (top[:, 0] - top[:, 2] + _DLR_TINY)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, larger when ``t`` beats ``y``."""
    top = logits.topk(4, dim=1).values
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY
    return -(_pick(logits, y) - _pick(logits, target)) / scale


def check_loss(loss: str) -> str:
    """Return ``loss`` if it names a known loss, else raise a one-line :class:`AttackError`."""
    if loss not in LOSSES:
        raise AttackError(f"unknown attack loss {loss!r}; choose from: {', '.join(LOSSES)}")
    return loss


def check_classes(loss: str, num_classes: int, targeted: bool) -> None:
    """Raise if the model has too few classes (logits) for ``loss``."""
    need, why = 2, "an attack needs at least 2 classes"
    if loss == "dlr" and targeted:
        need, why = 4, "the targeted DLR loss needs at least 4 classes (it uses the 4 largest logits)"
    elif loss == "dlr":
        need, why = 3, "the DLR loss needs at least 3 classes (it divides by z_pi1 - z_pi3)"
    if num_classes < need:
        raise AttackError(f"{why}; the model outputs {num_classes} logits")


def objective(
    loss: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """The per-sample quantity an attack maximises.

    Untargeted (``target is None``): push away from ``y``. Targeted: pull towards ``target``
    (``-CE(z, t)``, the target's CW margin ``z_t - max_{j!=t} z_j``, or the targeted DLR).
    """
    if target is None:
        if loss == "ce":
            return cross_entropy(logits, y)
        if loss == "cw":
            return cw_margin(logits, y)
        return dlr(logits, y)
    if loss == "ce":
        return -cross_entropy(logits, target)
    if loss == "cw":
        return -cw_margin(logits, target)
    return dlr_targeted(logits, y, target)
