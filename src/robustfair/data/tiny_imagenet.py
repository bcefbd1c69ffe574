"""Tiny-ImageNet-200 from its folder layout: 200 classes, 64×64 colour, val used as the test split.

Layout: ``wnids.txt`` (class ids), ``words.txt`` (id -> names, first synonym used),
``train/<wnid>/images/*.JPEG`` (500 per class), ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (file, wnid, box). The official test images carry no labels and are
not used. Decoding 110k JPEGs takes about a minute, so the decoded arrays are cached beside the
data as a plain ``.npz`` (read back without pickle) and reused while the file counts match.
"""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from ..errors import DataError
from ._arrays import make_dataset
from ._base import Dataset, register_dataset
from ._download import Remote, find_or_download, read_lines
from ._images import is_image_file, read_images

FOLDER = "tiny-imagenet-200"
SIDE = 64
# Official archive (cs231n.stanford.edu); MD5 as used by several public loaders (e.g.
# ContinualAI/avalanche's TinyImagenet) and matching the archive they verify.
TINY_IMAGENET_REMOTE = Remote("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                              md5="90528d7ca1a48142e341f4ef8d21d0de")


def _complete(folder: Path) -> bool:
    return all(p.exists() for p in (folder / "wnids.txt", folder / "words.txt",
                                    folder / "train", folder / "val" / "val_annotations.txt",
                                    folder / "val" / "images"))


def _class_names(folder: Path, wnids: list[str]) -> list[str]:
    words = {}
    for line in read_lines(folder / "words.txt"):
        wnid, _, names = line.partition("\t")
        words[wnid.strip()] = names.split(",")[0].strip()
    return [words.get(w) or w for w in wnids]


def _file_lists(
    folder: Path, wnids: list[str]
) -> tuple[list[Path], list[int], list[Path], list[int]]:
    index = {w: i for i, w in enumerate(wnids)}
    train_paths, train_y = [], []
    for w in wnids:
        images = folder / "train" / w / "images"
        if not images.is_dir():
            raise DataError(f"{images}: missing training images for class {w}")
        files = sorted(p for p in images.iterdir() if is_image_file(p))
        train_paths += files
        train_y += [index[w]] * len(files)
    test_paths, test_y = [], []
    annotations = folder / "val" / "val_annotations.txt"
    for line in read_lines(annotations):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{annotations}: bad line {line[:60]!r} (unknown class or format)")
        if not _plain_file_name(fields[0]):  # "../x" or "/etc/x" would read outside val/images
            raise DataError(f"{annotations}: refusing image name {fields[0][:60]!r} (not a "
                            f"plain file name in val/images)")
        test_paths.append(folder / "val" / "images" / fields[0])
        test_y.append(index[fields[1]])
    return train_paths, train_y, test_paths, test_y


def _plain_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and ":" not in name and "\0" not in name


_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y")


def _cache_layout(n_train: int, n_test: int, side: int) -> dict[str, tuple[tuple, np.dtype]]:
    """The shape and dtype each cached array must have."""
    return {"train_x": ((n_train, 3, side, side), np.dtype(np.uint8)),
            "train_y": ((n_train,), np.dtype(np.int64)),
            "test_x": ((n_test, 3, side, side), np.dtype(np.uint8)),
            "test_y": ((n_test,), np.dtype(np.int64))}


def _cache_headers_fit(path: Path, layout: dict[str, tuple[tuple, np.dtype]]) -> bool:
    """Whether every array header in the cache has the expected shape and dtype and its
    member the matching size, checked before anything is read (a lying header would
    otherwise make numpy allocate whatever it claims)."""
    with zipfile.ZipFile(path) as zf:
        for key, (shape, dtype) in layout.items():
            info = zf.getinfo(key + ".npy")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                got_shape, fortran, got_dtype = header(f)
                data_start = f.tell()
            if (tuple(got_shape), got_dtype, fortran) != (shape, dtype, False):
                return False
            if info.file_size != data_start + math.prod(shape) * dtype.itemsize:
                return False
    return True


def _load_cache(path: Path, n_train: int, n_test: int,
                side: int = SIDE) -> tuple[np.ndarray, ...] | None:
    """The cached arrays, or None when the cache is missing, stale or damaged (then the
    images are decoded again and the cache rewritten)."""
    if not path.is_file():
        return None
    layout = _cache_layout(n_train, n_test, side)
    try:
        if not _cache_headers_fit(path, layout):
            return None  # the folder changed since the cache was written, or it is damaged
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(z[k] for k in _CACHE_KEYS)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, MemoryError):
        return None
    return arrays


def _save_cache(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **dict(zip(_CACHE_KEYS, arrays)))

    try:
        atomic_write(path, write)  # a fresh temporary file, renamed over a stale cache
    except OSError:
        pass  # a read-only data folder only costs the next load its decoding time


@register_dataset("tiny_imagenet")
def load_tiny_imagenet(
    data_dir: Path, download: bool = True, *, image_size: int | None = None,
    cache: bool = True, progress: bool = False,
) -> Dataset:
    """Tiny-ImageNet: 100000 train / 10000 test (val) images in 200 classes, 64×64 or resized."""
    data_dir = Path(data_dir)
    folder = find_or_download(
        "tiny_imagenet", [data_dir / FOLDER, data_dir / "tiny_imagenet" / FOLDER], _complete,
        expected="wnids.txt, words.txt, train/<wnid>/images/, val/images/, "
                 "val/val_annotations.txt",
        remotes=[TINY_IMAGENET_REMOTE], target=data_dir, download=download, archive=True,
        keep=lambda member: "/test/" not in member, progress=progress,
    )
    side = SIDE if image_size is None else int(image_size)
    if side < 1:
        raise DataError(f"tiny_imagenet: image_size must be a positive integer, got {image_size}")
    wnids = sorted(read_lines(folder / "wnids.txt"))
    classes = _class_names(folder, wnids)
    train_paths, train_y, test_paths, test_y = _file_lists(folder, wnids)
    cache_path = folder / f".robustfair-cache-{side}.npz"
    arrays = _load_cache(cache_path, len(train_paths), len(test_paths), side) if cache else None
    if arrays is None:
        arrays = (
            read_images(train_paths, 3, side, side, progress=progress, desc="tiny_imagenet train"),
            np.asarray(train_y, dtype=np.int64),
            read_images(test_paths, 3, side, side, progress=progress, desc="tiny_imagenet val"),
            np.asarray(test_y, dtype=np.int64),
        )
        if cache:
            _save_cache(cache_path, arrays)
    return make_dataset("tiny_imagenet", arrays[:2], arrays[2:], classes, source=str(folder),
                        format="folder", wnids=wnids, image_size=side)
