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

from .._bounds import MAX_CLASSES
from ..errors import DataError
from ._arrays import make_dataset
from ._base import Dataset, register_dataset
from ._npz_members import NpzMembers

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


def _class_names(f: NpzMembers, y: np.ndarray, path: Path) -> list[str]:
    """The ``classes`` member, else ``"0"`` .. the largest label: at most MAX_CLASSES names,
    however large a label is (an unsigned label is compared before any cast can wrap it)."""
    top = int(y.max())
    if "classes" in f.names:
        shape, _ = f.shape("classes")
        if len(shape) > 1 or (shape[0] if shape else 1) > MAX_CLASSES:
            raise DataError(f"{path}: classes must be a list of at most {MAX_CLASSES} names, got "
                            f"shape {shape}")
        classes = [str(c) for c in np.asarray(f.read("classes")).reshape(-1)]
        if top >= len(classes):
            raise DataError(f"{path}: labels go up to {top} but classes names only "
                            f"{len(classes)}")
        if len(set(classes)) != len(classes):
            raise DataError(f"{path}: class names must be distinct")
        return classes
    if top >= MAX_CLASSES:
        present = len(np.unique(y))
        raise DataError(f"{path}: labels go up to {top} ({present} distinct label(s) present), "
                        f"beyond the bound of {MAX_CLASSES} classes; number the classes "
                        f"0..K-1 (and name them with a classes array)")
    return [str(i) for i in range(top + 1)]


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
    with NpzMembers(path) as f:
        missing = [k for k in ("x", "y") if k not in f.names]
        if missing:
            raise DataError(f"{path} lacks array(s) {', '.join(missing)}; it has: "
                            f"{', '.join(f.names) or 'none'}")
        # the headers first: dtypes and lengths are checked before any data is read
        (x_shape, x_dtype), (y_shape, y_dtype) = f.shape("x"), f.shape("y")
        if x_dtype != np.uint8:
            raise DataError(f"{path}: x must be uint8 images (0..255), got {x_dtype}")
        if len(y_shape) != 1 or y_dtype.kind not in "iu":
            raise DataError(f"{path}: y must be a 1-D integer array, got {y_dtype} {y_shape}")
        if not x_shape or y_shape[0] != x_shape[0]:
            raise DataError(f"{path}: {x_shape[0] if x_shape else 0} images but {y_shape[0]} labels")
        if y_shape[0] == 0:
            raise DataError(f"{path}: x and y are empty")
        y = f.read("y")
        if y.min() < 0:
            raise DataError(f"{path}: labels must be >= 0, got {int(y.min())}")
        classes = _class_names(f, y, path)  # before x: a bad label costs no image reading
        x = f.read("x", what=f"{path}: x ({'x'.join(map(str, x_shape))} uint8 images)")
    x = _channels_first(x, path)
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
