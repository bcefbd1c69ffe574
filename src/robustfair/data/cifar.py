"""CIFAR-10 and CIFAR-100 from the binary release, or the python release via a safe unpickler.

Binary records are ``label byte(s)`` then 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
each 32×32 row-major), so a whole file is one ``frombuffer`` and a reshape. CIFAR-100 records
carry two label bytes: coarse (20 super-classes) then fine (100 classes).
Downloads fetch the binary release; an existing python release (``cifar-10-batches-py``,
``cifar-100-python``, as torchvision leaves it) is read if no binary one is found.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ._arrays import make_dataset
from ._base import Dataset, register_dataset
from ._download import Remote, find_or_download, read_bytes, read_lines
from ._safe_pickle import load_restricted_pickle

PIXELS = 3 * 32 * 32

# Official archives and MD5s from the dataset page, www.cs.toronto.edu/~kriz/cifar.html.
CIFAR10_REMOTE = Remote("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                        md5="c32a1d4ab5d03f1284b67883e8d87530")
CIFAR100_REMOTE = Remote("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                         md5="03b5dce01913d631647c71ecec9e9cb8")

CIFAR10_BIN = "cifar-10-batches-bin"
CIFAR10_PY = "cifar-10-batches-py"
CIFAR10_BIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin",
                                                                     "batches.meta.txt"]
CIFAR10_PY_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR100_BIN = "cifar-100-binary"
CIFAR100_PY = "cifar-100-python"
CIFAR100_BIN_FILES = ["train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"]
CIFAR100_PY_FILES = ["train", "test", "meta"]


def read_binary_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images N×3×32×32 and labels N×label_bytes from one binary batch file."""
    raw = read_bytes(path)
    record = label_bytes + PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise DataError(
            f"{path}: size {len(raw)} bytes is not a whole number of {record}-byte records "
            "(truncated or not a CIFAR binary file)"
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    x = rows[:, label_bytes:].reshape(-1, 3, 32, 32)
    return x, rows[:, :label_bytes].astype(np.int64)


def _field(batch: object, key: str, path: Path):
    """``batch[key]`` for str or bytes keys (Python 2 pickles load with either)."""
    if isinstance(batch, dict):
        for k in (key, key.encode()):
            if k in batch:
                return batch[k]
    raise DataError(f"{path}: not a CIFAR batch (no {key!r} entry)")


def _names(values: object, path: Path) -> list[str]:
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{path}: class names must be a list")
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values]


def read_pickle_batch(path: Path, label_keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images N×3×32×32 and labels N×len(label_keys) from one python-release batch."""
    batch = load_restricted_pickle(path)
    data = _field(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS:
        raise DataError(f"{path}: 'data' must be an N×{PIXELS} uint8 array")
    try:
        labels = np.stack(
            [np.asarray(_field(batch, k, path), dtype=np.int64).reshape(-1) for k in label_keys],
            axis=1,
        )
    except (TypeError, ValueError):
        raise DataError(f"{path}: labels must be lists of integers of equal length") from None
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _check_labels(y: np.ndarray, k: int, path: Path) -> np.ndarray:
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataError(f"{path}: label {int(y.max())} outside 0..{k - 1}")
    return y


def _read_all(folder: Path, files: list[str], reader) -> tuple[np.ndarray, np.ndarray]:
    parts = [reader(folder / f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _locate(
    name: str, data_dir: Path, bin_dir: str, bin_files: list[str], py_dir: str,
    py_files: list[str], remote: Remote, download: bool, progress: bool,
) -> tuple[Path, str]:
    """(folder, "binary" | "python"): an existing release, else the downloaded binary one."""
    def has(files):
        return lambda d: all((d / f).is_file() for f in files)

    bin_candidates = [data_dir / bin_dir, data_dir / name / bin_dir]
    if not any(has(bin_files)(d) for d in bin_candidates):
        for folder in (data_dir / py_dir, data_dir / name / py_dir):
            if has(py_files)(folder):
                return folder, "python"
    folder = find_or_download(
        name, bin_candidates, has(bin_files),
        expected=", ".join(bin_files), remotes=[remote], target=data_dir, download=download,
        archive=True, progress=progress,
    )
    return folder, "binary"


@register_dataset("cifar10")
def load_cifar10(data_dir: Path, download: bool = True, *, progress: bool = False) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test 32×32 colour images in 10 classes."""
    data_dir = Path(data_dir)
    folder, fmt = _locate("cifar10", data_dir, CIFAR10_BIN, CIFAR10_BIN_FILES, CIFAR10_PY,
                          CIFAR10_PY_FILES, CIFAR10_REMOTE, download, progress)
    if fmt == "binary":
        def reader(p):
            return read_binary_records(p, 1)
        train_files, test_file = CIFAR10_BIN_FILES[:5], CIFAR10_BIN_FILES[5]
        classes = read_lines(folder / "batches.meta.txt")
        meta = folder / "batches.meta.txt"
    else:
        def reader(p):
            return read_pickle_batch(p, ["labels"])
        train_files, test_file = CIFAR10_PY_FILES[:5], CIFAR10_PY_FILES[5]
        meta = folder / "batches.meta"
        classes = _names(_field(load_restricted_pickle(meta), "label_names", meta), meta)
    if len(classes) != 10:
        raise DataError(f"{meta}: expected 10 class names, found {len(classes)}")
    xtr, ytr = _read_all(folder, train_files, reader)
    xte, yte = _read_all(folder, [test_file], reader)
    ytr = _check_labels(ytr[:, 0], 10, folder / train_files[0])
    yte = _check_labels(yte[:, 0], 10, folder / test_file)
    return make_dataset("cifar10", (xtr, ytr), (xte, yte), classes, source=str(folder), format=fmt)


@register_dataset("cifar100")
def load_cifar100(
    data_dir: Path, download: bool = True, *, labels: str = "fine", progress: bool = False
) -> Dataset:
    """CIFAR-100: 100 fine classes, or with ``labels="coarse"`` its 20 super-classes."""
    return _load_cifar100("cifar100", data_dir, download, labels, progress)


@register_dataset("cifar100_coarse")
def load_cifar100_coarse(data_dir: Path, download: bool = True, *,
                         progress: bool = False) -> Dataset:
    """CIFAR-100 labelled with its 20 super-classes, under a name of its own.

    The same files as ``cifar100`` (read from the same folder), as with ``labels="coarse"``;
    the name is what a training config, a study grid, a checkpoint and ``robustfair audit
    --dataset`` carry, so the paper's "CIFAR-100 (20 super-classes)" runs end to end.
    """
    return _load_cifar100("cifar100_coarse", data_dir, download, "coarse", progress)


def _load_cifar100(name: str, data_dir: Path, download: bool, labels: str,
                   progress: bool) -> Dataset:
    if labels not in ("fine", "coarse"):
        raise DataError(f"cifar100: labels must be 'fine' or 'coarse', got {labels!r}")
    data_dir = Path(data_dir)
    folder, fmt = _locate("cifar100", data_dir, CIFAR100_BIN, CIFAR100_BIN_FILES, CIFAR100_PY,
                          CIFAR100_PY_FILES, CIFAR100_REMOTE, download, progress)
    column = 0 if labels == "coarse" else 1  # binary records: coarse byte, then fine byte
    if fmt == "binary":
        def reader(p):
            return read_binary_records(p, 2)
        meta = folder / f"{labels}_label_names.txt"
        classes = read_lines(meta)
    else:
        def reader(p):
            return read_pickle_batch(p, ["coarse_labels", "fine_labels"])
        meta = folder / "meta"
        classes = _names(_field(load_restricted_pickle(meta), f"{labels}_label_names", meta),
                         meta)
    k = 20 if labels == "coarse" else 100
    if len(classes) != k:
        raise DataError(f"{meta}: expected {k} class names, found {len(classes)}")
    train_file, test_file = (("train.bin", "test.bin") if fmt == "binary" else ("train", "test"))
    xtr, ytr = reader(folder / train_file)
    xte, yte = reader(folder / test_file)
    ytr = _check_labels(ytr[:, column], k, folder / train_file)
    yte = _check_labels(yte[:, column], k, folder / test_file)
    return make_dataset(name, (xtr, ytr), (xte, yte), classes, source=str(folder),
                        format=fmt, labels=labels)
