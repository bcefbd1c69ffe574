"""The pointwise worst case and per-class tallies: the counting that every class-wise number
in robustfair rests on (the audit's ``ClassReport``, the trainer's per-epoch validation, the
explanations).

A point is robust only if it is classified correctly clean and no attack fooled it; its
worst-case prediction is the clean one if that is wrong, else the prediction of the first
attack (in order) that fooled the model, else its true class. A prediction of
:data:`MISSING` (``-1``: the attack was not run on that point) never fools.

Everything here works on numpy arrays and on torch tensors alike; tensors stay on their device
and nothing waits for the device (no ``.item()``, no boolean indexing), so the training loop
can count on the GPU and copy K numbers to the host once per evaluation.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch

__all__ = ["MISSING", "WorstCase", "count_by_class", "worst_case"]

MISSING = -1  # a prediction that was not computed (the attack was skipped for that point)

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _array(a):
    return a if isinstance(a, torch.Tensor) else np.asarray(a)


def _where(mask: Array, a: Array, b: Array) -> Array:
    return torch.where(mask, a, b) if isinstance(mask, torch.Tensor) else np.where(mask, a, b)


class WorstCase:
    """The pointwise worst case, folded in one attack's predictions at a time.

    ``pred`` starts as the clean prediction; ``robust`` (clean-correct and not fooled so far)
    as ``pred == y``. A start value of :data:`MISSING` therefore starts a point as not robust
    and keeps it at ``-1`` (the audit's skipped points).

    >>> wc = WorstCase(np.array([0, 1, 1]), np.array([0, 1, 0]))
    >>> wc.add(np.array([0, 2, 0])).tolist()  # fooled by this attack: the second point
    [False, True, False]
    >>> _ = wc.add(np.array([1, 0, 0]))       # the first point; the second was already fooled
    >>> wc.pred.tolist(), wc.robust.tolist()
    ([1, 2, 0], [False, False, False])
    """

    def __init__(self, y: Array, clean_pred: Array) -> None:
        self.y = y
        self.pred = clean_pred.clone() if isinstance(clean_pred, torch.Tensor) else np.array(clean_pred, copy=True)
        self.robust = clean_pred == y

    def add(self, attack_pred: Array) -> Array:
        """Fold in one attack's predictions; return the points it fooled (robust until now)."""
        fooled = self.robust & (attack_pred != self.y) & (attack_pred != MISSING)
        self.pred = _where(fooled, attack_pred, self.pred)
        self.robust = self.robust & ~fooled
        return fooled


def worst_case(y_true: Array, clean_pred: Array, attack_preds: Sequence[Array]) -> Array:
    """Pointwise worst-case predictions over the clean image and the attacks, in order.

    >>> worst_case(np.array([0, 1, 1]), np.array([0, 1, 0]), [np.array([0, 2, 0]), np.array([1, 0, 0])])
    array([1, 2, 0])
    """
    wc = WorstCase(_array(y_true), _array(clean_pred))
    for pred in attack_preds:
        wc.add(_array(pred))
    return wc.pred


def count_by_class(y: Array, mask: Array | None, num_classes: int) -> Array:
    """How many points of each class have ``mask`` set (all points if ``mask`` is None).

    Integer counts of length ``num_classes``: int64 numpy for arrays, a LongTensor on ``y``'s
    device for tensors (``index_add_``, which, unlike ``torch.bincount``, needs no host sync).

    >>> count_by_class(np.array([0, 2, 2, 2]), np.array([True, True, False, True]), 4).tolist()
    [1, 0, 2, 0]
    >>> count_by_class(torch.tensor([0, 2, 2]), None, 3).tolist()
    [1, 0, 2]
    """
    if isinstance(y, torch.Tensor):
        ones = torch.ones_like(y) if mask is None else mask.to(torch.long)
        return torch.zeros(num_classes, dtype=torch.long, device=y.device).index_add_(0, y, ones)
    y = np.asarray(y)
    return np.bincount(y if mask is None else y[np.asarray(mask, dtype=bool)], minlength=num_classes)
