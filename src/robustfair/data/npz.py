"""Bring your own test set as one ``.npz`` file: ``x`` (uint8 images) and ``y`` (labels).

``x`` is N×C×H×W or N×H×W×C (channels 1 or 3; N×H×W for grey); ``y`` holds integer labels. An
optional ``classes`` array of strings names the classes (default ``"0"`` .. the largest label).
The file is read with ``allow_pickle=False``: nothing in it is executed. The arrays become the
test split; the train split is empty.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._arrays import make_dataset
from ._base import Dataset, register_dataset

CHANNELS = (1, 3)


def _channels_first(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: x must be N×C×H×W or N×H×W×C images, got shape {x.shape}")
    if x.shape[1] in CHANNELS:
        return x
    if x.shape[3] in CHANNELS:
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: cannot tell the channels of x with shape {x.shape} "
                    f"(expected 1 or 3 in the second or last place)")


def load_npz(path: str | Path, *, name: str | None = None) -> Dataset:
    """A test set from an ``.npz`` file with arrays ``x`` (uint8) and ``y`` (and ``classes``).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.npz")
    >>> np.savez(p, x=np.zeros((4, 8, 8, 3), np.uint8), y=np.array([0, 1, 2, 1]))
    >>> ds = load_npz(p)
    >>> tuple(ds.test.x.shape), ds.classes, len(ds.train)
    ((4, 3, 8, 8), ['0', '1', '2'], 0)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file of plain arrays ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks array(s) {', '.join(missing)}; it has: "
                        f"{', '.join(arrays) or 'none'}")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8:
        raise DataError(f"{path}: x must be uint8 images (0..255), got {x.dtype}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{path}: x and y are empty")
    if y.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, got {int(y.min())}")
    x = _channels_first(x, path)
    if "classes" in arrays:
        classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
        if int(y.max()) >= len(classes):
            raise DataError(f"{path}: labels go up to {int(y.max())} but classes names only "
                            f"{len(classes)}")
        if len(set(classes)) != len(classes):
            raise DataError(f"{path}: class names must be distinct")
    else:
        classes = [str(i) for i in range(int(y.max()) + 1)]
    empty = (np.zeros((0, *x.shape[1:]), np.uint8), np.zeros(0, np.int64))
    return make_dataset(name or path.stem, empty, (x, y.astype(np.int64)), classes,
                        source=str(path), format="npz")


@register_dataset("npz")
def load_npz_dataset(data_dir: Path | None = None, download: bool = False, *,
                     path: str | Path | None = None, name: str | None = None) -> Dataset:
    """Registry entry: ``load_dataset("npz", path=...)`` (``data_dir`` is unused)."""
    if path is None:
        raise DataError('npz: pass the file as path=..., e.g. load_dataset("npz", path="test.npz")')
    return load_npz(path, name=name)
