"""SVHN (cropped digits) from the official MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``.

Each file holds ``X`` (32×32×3×N uint8) and ``y`` (N×1, digits 1..10 where 10 means 0).
Reading MATLAB files needs scipy, imported only here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ._arrays import make_dataset
from ._base import Dataset, register_dataset
from ._download import Remote, find_or_download, one_line

_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
# Official files (ufldl.stanford.edu/housenumbers); MD5s as in torchvision.datasets.SVHN.split_list.
SVHN_REMOTES = [
    Remote("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
           md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
    Remote("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
           md5="eb5a983be6a315427106f1b69d88c2a4"),
]


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images N×3×32×32 uint8 and labels 0..9 from one SVHN .mat file."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            "svhn: reading its .mat files needs scipy; install it with `pip install scipy`"
        ) from None
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises many types for a damaged file
        raise DataError(f"{path}: not a readable MATLAB file ({one_line(exc)})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: missing the X and y variables of an SVHN file")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X must be 32×32×3×N uint8, got {x.shape} {x.dtype}")
    if len(y) != x.shape[3]:
        raise DataError(f"{path}: {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels must lie in 1..10, got {y.min()}..{y.max()}")
    y = y.astype(np.int64) % 10  # the digit 0 is stored as label 10
    return x.transpose(3, 2, 0, 1), y  # H×W×C×N -> N×C×H×W


@register_dataset("svhn")
def load_svhn(data_dir: Path, download: bool = True, *, progress: bool = False) -> Dataset:
    """SVHN: 73257 train / 26032 test 32×32 colour digits, classes "0".."9"."""
    data_dir = Path(data_dir)
    folder = find_or_download(
        "svhn", [data_dir / "svhn", data_dir],
        complete=lambda d: all((d / f).is_file() for f in _FILES.values()),
        expected=", ".join(_FILES.values()), remotes=SVHN_REMOTES, target=data_dir / "svhn",
        download=download, progress=progress,
    )
    train = read_svhn_mat(folder / _FILES["train"])
    test = read_svhn_mat(folder / _FILES["test"])
    return make_dataset("svhn", train, test, [str(i) for i in range(10)],
                        source=str(folder), format="mat")
