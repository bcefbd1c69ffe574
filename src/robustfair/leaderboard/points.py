"""The points every model of a leaderboard is audited on, chosen once and recorded once.

``points_per_class: K`` takes K points of every class: within each class a seeded random
permutation, its first K, then all of them sorted into the split's order. The same seed and
labels give the same indices on any machine (numpy's PCG64 with a fixed seed). The indices
and the SHA-256 of the chosen images and labels go into ``settings.json``, the leaderboard's
record of what every model was audited on.

>>> import numpy as np
>>> y = np.array([0, 1, 0, 1, 0, 1, 2, 2])
>>> idx = stratified_indices(y, 2, seed=0)
>>> np.bincount(y[idx]).tolist(), bool(np.all(np.diff(idx) > 0))
([2, 2, 2], True)
"""
from __future__ import annotations

import numpy as np

__all__ = ["class_shortfall", "stratified_indices"]


def class_shortfall(labels: np.ndarray, per_class: int, num_classes: int) -> list[tuple[int, int]]:
    """The classes with fewer than ``per_class`` points: ``(class, points it has)``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return [(c, int(n)) for c, n in enumerate(counts) if n < per_class]


def stratified_indices(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """``per_class`` points of every class (all points when ``None``), sorted; a class with
    fewer points gives all it has (check :func:`class_shortfall` first to refuse instead)."""
    labels = np.asarray(labels, dtype=np.int64)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))  # one permutation: each class's points in random order
    picked = []
    for c in np.unique(labels):
        members = order[labels[order] == c]
        picked.append(members[:per_class])
    return np.sort(np.concatenate(picked)) if picked else np.arange(0)
