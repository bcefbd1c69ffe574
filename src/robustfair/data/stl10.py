"""STL-10 (labelled part) from the binary release ``stl10_binary/``.

``*_X.bin`` is raw uint8: per image 3 channels, each 96×96 stored column by column (MATLAB
order), so after reshaping to N×3×96×96 the last two axes must be swapped. ``*_y.bin`` holds
one byte per image, 1..10. 96×96 is large for adversarial training; ``image_size`` resizes
(bilinear, antialiased) once at load time. The 100k unlabelled images are not read and not
even unpacked from the archive.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ._arrays import make_dataset, resize_uint8
from ._base import Dataset, register_dataset
from ._download import Remote, find_or_download, read_bytes, read_lines

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
_FILES = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"]
# Official archive (ai.stanford.edu/~acoates/stl10); MD5 as in torchvision.datasets.STL10.tgz_md5.
STL10_REMOTE = Remote("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                      md5="91f7769df0f17e558f3565bffb0c7dfb")


def read_stl10_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images N×3×96×96 and labels 0..9 for ``split`` ("train" or "test")."""
    xpath, ypath = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = read_bytes(xpath)
    if len(raw) == 0 or len(raw) % IMAGE_BYTES:
        raise DataError(
            f"{xpath}: size {len(raw)} bytes is not a whole number of {IMAGE_BYTES}-byte images"
        )
    # stored as [image][channel][column][row]: swap to [image][channel][row][column]
    x = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2)
    y = np.frombuffer(read_bytes(ypath), dtype=np.uint8).astype(np.int64)
    if len(y) != len(x):
        raise DataError(f"{ypath}: {len(y)} labels for {len(x)} images in {xpath.name}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{ypath}: labels must lie in 1..10, got {y.min()}..{y.max()}")
    return x, y - 1


@register_dataset("stl10")
def load_stl10(
    data_dir: Path, download: bool = True, *, image_size: int | None = None,
    progress: bool = False,
) -> Dataset:
    """STL-10: 5000 train / 8000 test colour images in 10 classes, 96×96 or ``image_size``."""
    data_dir = Path(data_dir)
    folder = find_or_download(
        "stl10", [data_dir / "stl10_binary", data_dir / "stl10" / "stl10_binary"],
        complete=lambda d: all((d / f).is_file() for f in _FILES),
        expected=", ".join(_FILES), remotes=[STL10_REMOTE], target=data_dir,
        download=download, archive=True, keep=lambda member: "unlabeled" not in member,
        progress=progress,
    )
    classes = read_lines(folder / "class_names.txt")
    if len(classes) != 10:
        raise DataError(f"{folder / 'class_names.txt'}: expected 10 class names, "
                        f"found {len(classes)}")
    splits = []
    for split in ("train", "test"):
        x, y = read_stl10_split(folder, split)
        x = torch.from_numpy(np.ascontiguousarray(x))  # the transpose makes this a copy
        if image_size is not None:
            x = resize_uint8(x, image_size)
        splits.append((x, y))
    return make_dataset("stl10", splits[0], splits[1], classes, source=str(folder),
                        format="binary", image_size=int(image_size or SIDE))
