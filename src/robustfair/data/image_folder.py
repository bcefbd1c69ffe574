"""Bring your own images: one sub-folder per class, PNG/JPEG/... read with Pillow.

Two layouts are understood::

    root/train/<class>/*.png  and  root/test/<class>/*.png   (or root/val/... as the test split)
    root/<class>/*.png                                        (split here, stratified by class)

:func:`image_folder_test_set` reads the second layout whole, as a test set (no split).

Images are converted to grey (1 channel) or RGB (3 channels) and must share one size unless
``image_size`` is given, in which case each is resized to image_size×image_size.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .._bounds import check_fits
from ..errors import DataError
from ._arrays import make_dataset, stratified_split
from ._base import Dataset, register_dataset
from ._images import DECODE_THREADS, GREY_MODES, image_header, is_image_file, read_images


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(root: Path, classes: list[str], require_all: bool) -> tuple[list[Path], list[int]]:
    """Image files under ``root/<class>/`` (recursively), with their class indices."""
    paths, labels = [], []
    for i, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)) \
            if folder.is_dir() else []
        if not files and require_all:
            raise DataError(f"image_folder: class folder {folder} holds no images")
        paths += files
        labels += [i] * len(files)
    return paths, labels


def image_folder(
    root: str | Path,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    progress: bool = False,
) -> Dataset:
    """Load a folder of class sub-folders as a :class:`Dataset`.

    ``channels`` None means 1 if every image is greyscale, else 3. ``test_fraction`` and
    ``seed`` apply only when ``root`` has no train/test split of its own.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image_folder: {root} is not a folder")
    test_root = next((root / t for t in ("test", "val") if (root / t).is_dir()), None)
    presplit = (root / "train").is_dir() and test_root is not None
    train_root = root / "train" if presplit else root
    classes = [p.name for p in _class_folders(train_root)]
    if not classes:
        raise DataError(f"image_folder: {train_root} has no class sub-folders")
    paths, labels = _collect(train_root, classes, require_all=True)
    test_paths, test_labels = [], []
    if presplit:
        unknown = sorted({p.name for p in _class_folders(test_root)} - set(classes))
        if unknown:
            raise DataError(f"image_folder: {test_root} has classes not in {train_root}: "
                            f"{', '.join(unknown[:5])}")
        test_paths, test_labels = _collect(test_root, classes, require_all=False)
        if not test_paths:
            raise DataError(f"image_folder: {test_root} holds no images")
    all_paths = paths + test_paths
    x = _read(all_paths, image_size, channels, progress)
    y = np.asarray(labels + test_labels, dtype=np.int64)
    if presplit:
        n = len(paths)
        train, test = (x[:n], y[:n]), (x[n:], y[n:])
    else:
        tr, te = stratified_split(y, test_fraction, seed)
        train, test = (x[tr], y[tr]), (x[te], y[te])
    return make_dataset(name or root.name, train, test, classes, source=str(root),
                        format="image_folder")


def image_folder_test_set(
    root: str | Path,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Dataset:
    """Every image of ``root/<class>/`` as the test split (the train split is empty), in class
    then file-name order: a user's own test set, audited whole."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image_folder: {root} is not a folder")
    classes = [p.name for p in _class_folders(root)]
    if not classes:
        raise DataError(f"image_folder: {root} has no class sub-folders")
    paths, labels = _collect(root, classes, require_all=False)
    if not paths:
        raise DataError(f"image_folder: {root} holds no images")
    x = _read(paths, image_size, channels, progress)
    empty = (x[:0], np.zeros(0, np.int64))
    return make_dataset(name or root.name, empty, (x, np.asarray(labels, dtype=np.int64)), classes,
                        source=str(root), format="image_folder")


def _read(paths: list[Path], image_size: int | None, channels: int | None, progress: bool) -> np.ndarray:
    """The images as uint8 N×C×H×W: grey if all are (unless ``channels``), resized to
    ``image_size`` if given (else all must share one size)."""
    headers = [image_header(p) for p in paths]  # cheap: Pillow reads headers lazily
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode, _ in headers) else 3
    if image_size is not None:
        if isinstance(image_size, bool) or int(image_size) < 1:
            raise DataError(
                f"image_folder: image_size must be a positive integer, got {image_size}"
            )
        width = height = int(image_size)
    else:
        sizes = Counter(size for _, size in headers)
        if len(sizes) > 1:
            (common, _), (other, _) = sizes.most_common(2)
            odd = next(p for p, (_, s) in zip(paths, headers) if s == other)
            raise DataError(
                f"image_folder: images differ in size ({common[0]}x{common[1]} and "
                f"{other[0]}x{other[1]} in {odd}); pass image_size to resize them all"
            )
        width, height = next(iter(sizes))
    _check_decoded_size(paths, headers, channels, height, width)
    return read_images(paths, channels, height, width, progress=progress, desc="image_folder")


def _check_decoded_size(paths: list[Path], headers: list, channels: int, height: int,
                        width: int) -> None:
    """Refuse, before allocating, a folder whose decoded images would not fit in memory: the
    array of all images, plus one full-size decode per reading thread."""
    largest = max(w * h for _, (w, h) in headers) * 4  # RGBA, the widest mode decoded
    total = len(paths) * channels * height * width + DECODE_THREADS * largest
    check_fits(total, f"image_folder: {len(paths)} images decoded at {width}x{height}x{channels}",
               hint="pass a smaller --image-size (image_size=N) or fewer images")


@register_dataset("image_folder")
def load_image_folder(
    data_dir: Path | None = None,
    download: bool = False,
    *,
    path: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    progress: bool = False,
) -> Dataset:
    """Registry entry: ``load_dataset("image_folder", path=...)`` (``data_dir`` is unused)."""
    if path is None:
        raise DataError('image_folder: pass the folder as path=..., e.g. '
                        'load_dataset("image_folder", path="my_images")')
    return image_folder(path, image_size=image_size, channels=channels,
                        test_fraction=test_fraction, seed=seed, name=name, progress=progress)
