"""Small array helpers shared by the loaders: splits, resizing and building a Dataset."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ._base import Dataset, Split


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted, with every class split in the same proportion.

    Each class of n samples puts round(n * test_fraction) of them, chosen at random (fixed by
    ``seed``), in the test split, but always keeps one for training and, if it has two or
    more, gives one to the test split.

    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    >>> tr, te = stratified_split(y, 0.5, seed=0)
    >>> np.bincount(y[te]).tolist(), len(tr)
    ([2, 3], 5)
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(int(seed))
    test = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        n = len(members)
        n_test = 0 if n < 2 else min(n - 1, max(1, int(np.floor(n * test_fraction + 0.5))))
        test.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def frozen_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` by :func:`stratified_split`, read-only: a loader
    caches them and hands out only copies.

    >>> xs = frozen_split(np.arange(4), np.array([0, 0, 1, 1]), 0.5, seed=0)
    >>> [a.flags.writeable for a in xs]
    [False, False, False, False]
    """
    train, test = stratified_split(y, test_fraction, seed)
    arrays = (x[train], y[train], x[test], y[test])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 N×C×H×W images to size×size (bilinear, antialiased), in chunks.

    >>> resize_uint8(torch.full((2, 3, 8, 8), 7, dtype=torch.uint8), 4).unique().tolist()
    [7]
    """
    size = int(size)
    if size < 1:
        raise DataError(f"image_size must be a positive integer, got {size}")
    if tuple(x.shape[2:]) == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8, device=x.device)
    for start in range(0, x.shape[0], chunk):  # chunks keep the float copy small
        part = x[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def make_dataset(
    name: str,
    train: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor],
    test: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor],
    classes: list[str],
    **info,
) -> Dataset:
    """Wrap uint8 image arrays (N×C×H×W) and integer labels as a :class:`Dataset`."""

    def split(x, y) -> Split:
        if isinstance(x, np.ndarray):
            # read-only views of file bytes are copied: tensors must own writable memory
            x = np.ascontiguousarray(x) if x.flags.writeable else np.array(x, order="C")
            x = torch.from_numpy(x)
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(y.astype(np.int64))
        return Split(x.contiguous(), y.to(torch.int64))

    return Dataset(name, split(*train), split(*test), [str(c) for c in classes], dict(info))
