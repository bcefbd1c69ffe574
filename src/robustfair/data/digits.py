"""scikit-learn's bundled 8×8 handwritten digits: real data with no download, for tests and demos.

1797 images, values 0..16 scaled to 0..255, split 70/30 once and for all (stratified, fixed
seed) so every run and every user sees the same test set.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ._arrays import frozen_split, make_dataset
from ._base import Dataset, register_dataset

TEST_FRACTION = 0.3  # per class: round(0.3 * n) test images
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # slow import; only when asked for

    bunch = load_digits()
    # 0..16 -> 0..255, rounding half up (exact: v*255/16 is a multiple of 1/16)
    x = np.floor(bunch.images * 255.0 / 16.0 + 0.5).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return frozen_split(x, y, TEST_FRACTION, SPLIT_SEED)


@register_dataset("digits")
def load_digits(data_dir: Path | None = None, download: bool = False) -> Dataset:
    """The 8×8 digits, 1 channel, classes "0".."9" (``data_dir``/``download`` are unused).

    >>> ds = load_digits()
    >>> len(ds.train) + len(ds.test), tuple(ds.train.x.shape[1:])
    (1797, (1, 8, 8))
    """
    xtr, ytr, xte, yte = _digits_arrays()
    return make_dataset(
        "digits", (xtr, ytr), (xte, yte), [str(i) for i in range(10)],
        source="sklearn.datasets.load_digits", test_fraction=TEST_FRACTION, split_seed=SPLIT_SEED,
    )
