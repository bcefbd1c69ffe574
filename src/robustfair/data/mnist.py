"""MNIST and Fashion-MNIST from the standard IDX files (plain or gzipped).

IDX layout (big-endian): two zero bytes, a type code (0x08 = uint8), the number of dimensions,
one 4-byte size per dimension, then the values. Files are looked for in ``<data_dir>/<name>/``,
its ``raw/`` sub-folder and torchvision's ``<data_dir>/MNIST/raw`` (``FashionMNIST/raw``).
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._arrays import make_dataset
from ._base import Dataset, register_dataset
from ._download import Remote, find_or_download, one_line, read_bytes

# IDX type code -> numpy dtype (big-endian where it matters)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# MNIST: the mirror and MD5s torchvision uses (torchvision.datasets.MNIST.resources), checked
# against other public copies of the same list.
MNIST_REMOTES = [
    Remote("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
           md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    Remote("https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
           md5="d53e105ee54ea40749a09fcbcd1e9432"),
    Remote("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
           md5="9fb629c4189551a2d022fa330f9573f3"),
    Remote("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
           md5="ec29112dd5afa0611ce80d1b7f02629c"),
]
# Fashion-MNIST: Zalando's official bucket (github.com/zalandoresearch/fashion-mnist README);
# MD5s as published there and in torchvision.datasets.FashionMNIST.resources.
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_REMOTES = [
    Remote(_FASHION + "train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    Remote(_FASHION + "train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe"),
    Remote(_FASHION + "t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79"),
    Remote(_FASHION + "t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310"),
]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (``.gz`` is decompressed); a one-line DataError if it is malformed."""
    raw = read_bytes(path)
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a valid gzip file ({one_line(exc)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: wrong size: header says {'x'.join(map(str, dims))} values "
            f"({expected} bytes) but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The file for ``stem``: plain or .gz, also the ``train-images.idx3-ubyte`` spelling."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx_dataset(
    name: str, torchvision_name: str, remotes: list[Remote], classes: list[str],
    data_dir: Path, download: bool, progress: bool,
) -> Dataset:
    candidates = [data_dir / name, data_dir / name / "raw", data_dir / torchvision_name / "raw"]
    folder = find_or_download(
        name, candidates,
        complete=lambda d: all(_idx_file(d, stem) for stem in _FILES.values()),
        expected=", ".join(f"{stem}[.gz]" for stem in _FILES.values()),
        remotes=remotes, target=data_dir / name, download=download, progress=progress,
    )
    arrays = {}
    for key, stem in _FILES.items():
        path = _idx_file(folder, stem)
        a = read_idx(path)
        want_ndim = 3 if key.endswith("images") else 1
        if a.ndim != want_ndim or a.dtype != np.uint8:
            raise DataError(f"{path}: expected {want_ndim}-D uint8 data, got {a.ndim}-D {a.dtype}")
        if key.endswith("labels") and len(a) and int(a.max()) >= len(classes):
            raise DataError(f"{path}: label {int(a.max())} outside 0..{len(classes) - 1}")
        arrays[key] = (a, path)
    for split in ("train", "test"):
        (x, xpath), (y, ypath) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DataError(f"{xpath}: {len(x)} images but {ypath.name} has {len(y)} labels")
    return make_dataset(
        name,
        (arrays["train_images"][0][:, None], arrays["train_labels"][0]),
        (arrays["test_images"][0][:, None], arrays["test_labels"][0]),
        classes, source=str(folder), format="idx",
    )


@register_dataset("mnist")
def load_mnist(data_dir: Path, download: bool = True, *, progress: bool = False) -> Dataset:
    """MNIST: 60000 train / 10000 test 28×28 grey digits, classes "0".."9"."""
    return _load_idx_dataset("mnist", "MNIST", MNIST_REMOTES, [str(i) for i in range(10)],
                             Path(data_dir), download, progress)


@register_dataset("fashion_mnist")
def load_fashion_mnist(data_dir: Path, download: bool = True, *, progress: bool = False) -> Dataset:
    """Fashion-MNIST: same layout as MNIST, ten clothing classes."""
    return _load_idx_dataset("fashion_mnist", "FashionMNIST", FASHION_MNIST_REMOTES,
                             FASHION_MNIST_CLASSES, Path(data_dir), download, progress)
