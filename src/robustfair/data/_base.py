"""The data contract: a :class:`Dataset` holds uint8 N×C×H×W images, int64 labels and class names.

Images stay uint8 in memory (4× smaller than float; CIFAR-10's train split is 150 MB) and are
turned into floats in [0, 1] per batch, on the device, with :func:`to_float`.
Loaders register themselves by name with :func:`register_dataset`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .._registry import Registry
from ..errors import DataError


@dataclass(frozen=True)
class Split:
    """One split: ``x`` uint8 images N×C×H×W, ``y`` int64 labels N."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise DataError(
                f"split images must be uint8 N×C×H×W, got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1 or len(self.y) != len(self.x):
            raise DataError(
                f"split labels must be int64 of length {len(self.x)}, got {self.y.dtype} "
                f"{tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A named data set with train and test splits and class names.

    >>> import torch
    >>> s = Split(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    >>> ds = Dataset("toy", s, s, ["a", "b"])
    >>> ds.num_classes, ds.channels, ds.image_size
    (2, 1, 8)
    """

    name: str
    train: Split
    test: Split
    classes: list[str]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.classes)
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) and (int(split.y.min()) < 0 or int(split.y.max()) >= k):
                raise DataError(
                    f"{self.name}: {split_name} labels fall outside the {k} class names"
                )
            if split.x.shape[1:] != self.train.x.shape[1:]:
                raise DataError(f"{self.name}: train and test images differ in shape")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        """Height of the images (all built-in data sets are square)."""
        return int(self.train.x.shape[2])

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the train images in [0, 1], for a model's normaliser."""
        x = self.train.x
        idx = torch.arange(0, len(x), max(1, len(x) // 10000))  # a sample is plenty
        xf = to_float(x[idx])
        mean = xf.mean(dim=(0, 2, 3))
        std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by name or by index; a clear error for an unknown class."""
        return class_index(self.classes, name_or_index)


def class_index(classes: list[str], name_or_index: str | int) -> int:
    """Resolve a class by name (or a string/int index) against ``classes``."""
    if isinstance(name_or_index, str) and name_or_index in classes:
        return classes.index(name_or_index)
    try:
        i = int(name_or_index)
    except (TypeError, ValueError):
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise DataError(f"unknown class {name_or_index!r}; classes are: {shown}") from None
    if not 0 <= i < len(classes):
        raise DataError(f"class index {i} out of range 0..{len(classes) - 1}")
    return i


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1] (on whatever device ``x`` is on)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def default_data_dir() -> Path:
    """``$ROBUSTFAIR_DATA`` if set, else ``~/.cache/robustfair``."""
    return Path(os.environ.get("ROBUSTFAIR_DATA", "~/.cache/robustfair")).expanduser()


Loader = Callable[..., Dataset]
# a loader is called as fn(data_dir, download, **options); its options are the rest
DATASETS: Registry[Loader] = Registry("dataset", DataError)


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(data_dir: Path, download: bool, **options) -> Dataset``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """The registered data sets' names, sorted (``load_dataset`` loads one by name)."""
    return DATASETS.names()


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, download: bool = True, **options
) -> Dataset:
    """Load a registered data set by name; an unknown name or option is a one-line DataError.

    >>> ds = load_dataset("digits")
    >>> ds.num_classes, ds.train.x.dtype
    (10, torch.uint8)
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return DATASETS.build(name, root, download, **options)
