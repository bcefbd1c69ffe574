"""Bring your own arrays: images and labels in memory become a :class:`Dataset`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from ._arrays import stratified_split
from ._base import Dataset, Split


def _as_uint8_images(x, what: str) -> torch.Tensor:
    """uint8 stays; floats must lie in [0, 1] and are scaled to 0..255 (rounded)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"{what} must be an array or tensor of images") from None
    x = x.detach().cpu()  # a Dataset keeps its images in host memory; batches move to devices
    if x.dim() == 3:
        x = x.unsqueeze(1)  # N×H×W: one grey channel
    if x.dim() != 4:
        raise DataError(f"{what} must be N×C×H×W (or N×H×W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise DataError(f"{what} must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    if x.numel():
        if not torch.isfinite(x).all():
            raise DataError(f"{what} contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{what} must lie in [0, 1] as floats (or be uint8 0..255), got range "
                f"[{lo:.4g}, {hi:.4g}]"
            )
    return (x.double() * 255.0).round().to(torch.uint8)


def _as_labels(y, n: int, what: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(np.asarray(y))
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"{what} must be an array or tensor of integers") from None
    y = y.detach().cpu()
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{what} must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}")
    if len(y) != n:
        raise DataError(f"got {n} images but {len(y)} {what}")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{what} must be >= 0, got {int(y.min())}")
    return y.to(torch.int64)


def from_tensors(
    x,
    y,
    classes: Sequence[str] | None = None,
    *,
    x_test=None,
    y_test=None,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str = "custom",
) -> Dataset:
    """Make a :class:`Dataset` from images ``x`` (N×C×H×W, uint8 or float in [0, 1]) and labels.

    Without ``x_test``/``y_test`` a stratified ``test_fraction`` of the samples becomes the
    test split (fixed by ``seed``). ``classes`` defaults to "0", "1", ...

    >>> ds = from_tensors(torch.rand(20, 1, 4, 4), torch.arange(20) % 2, ["even", "odd"])
    >>> len(ds.train), len(ds.test), ds.classes
    (16, 4, ['even', 'odd'])
    """
    xs = _as_uint8_images(x, "images")
    ys = _as_labels(y, len(xs), "labels")
    if (x_test is None) != (y_test is None):
        raise DataError("pass both x_test and y_test, or neither")
    xt = yt = None
    if x_test is not None:
        xt = _as_uint8_images(x_test, "test images")
        yt = _as_labels(y_test, len(xt), "test labels")
    all_labels = ys if yt is None else torch.cat([ys, yt])
    k = int(all_labels.max()) + 1 if len(all_labels) else 0
    classes = [str(i) for i in range(k)] if classes is None else [str(c) for c in classes]
    if len(classes) < k:
        raise DataError(f"labels go up to {k - 1} but only {len(classes)} class names were given")
    if len(set(classes)) != len(classes):
        raise DataError("class names must be distinct")
    if xt is None:
        train_idx, test_idx = (torch.from_numpy(i) for i in
                               stratified_split(ys.numpy(), test_fraction, seed))
        train = Split(xs[train_idx], ys[train_idx])
        test = Split(xs[test_idx], ys[test_idx])
    else:
        train, test = Split(xs, ys), Split(xt, yt)
    return Dataset(name, train, test, classes, {"source": "from_tensors"})
