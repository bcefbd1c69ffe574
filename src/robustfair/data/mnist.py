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
from ._download import Remote, find_or_download, one_line

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


# an IDX file is read into memory whole, so the size its header promises is checked before
# anything is allocated: at most MAX_IDX_BYTES (EMNIST, the largest IDX set in use, is 0.55
# GB), and for a .gz at most MAX_GZIP_RATIO times the compressed size (MNIST's images
# compress 5:1; deflate's limit is about 1000:1, which is what a 4 MB "zip bomb" uses)
MAX_IDX_BYTES = 1 << 30
MAX_GZIP_RATIO = 200


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (``.gz`` is streamed); a one-line DataError if it is malformed.

    Memory is bounded by the size the header promises, which is checked first (see
    :data:`MAX_IDX_BYTES`); a file holding more or less than that is refused.
    """
    try:
        on_disk = path.stat().st_size
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)})") from None
    with handle:
        if path.suffix != ".gz":
            return _read_idx_stream(handle, path, on_disk)
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") as f:
                return _read_idx_stream(f, path, on_disk)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a valid gzip file ({one_line(exc)})") from None


def _read_idx_stream(f, path: Path, on_disk: int) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
    ndim = magic[3]
    raw_dims = f.read(4 * ndim)
    if ndim == 0 or len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(_IDX_TYPES[magic[2]])
    expected = math.prod(dims) * dtype.itemsize
    shape = "x".join(map(str, dims))
    limit = MAX_IDX_BYTES if path.suffix != ".gz" else min(MAX_IDX_BYTES,
                                                           MAX_GZIP_RATIO * max(on_disk, 1))
    if expected > limit:
        raise DataError(f"{path}: the header promises {shape} values ({expected} bytes), more "
                        f"than a {path.suffix == '.gz' and 'compressed ' or ''}file of "
                        f"{on_disk} bytes can sensibly hold; refusing to read it")
    data = bytearray(expected)
    view, got = memoryview(data), 0
    while got < expected:
        n = f.readinto(view[got:got + (1 << 22)])
        if not n:
            break
        got += n
    extra = f.read(1)
    if got != expected or extra:
        held = f"{got}" if not extra else f"more than {expected}"
        raise DataError(f"{path}: wrong size: header says {shape} values ({expected} bytes) "
                        f"but the file holds {held}")
    return np.frombuffer(data, dtype=dtype).reshape(dims)


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
