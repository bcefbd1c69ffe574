"""The points an audit runs on, named the way the CLI and specs name them: a registered data
set (``cifar10``), ``image_folder`` (a folder of class sub-folders) or ``npz:PATH`` (a test set
in one file); and the SHA-256 of the audited images and labels, which says "the same points"
whatever file format they came from.

>>> import torch
>>> x, y = torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1])
>>> points_sha256(x, y) == points_sha256(x.clone(), y.clone())
True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ._base import Dataset, load_dataset

__all__ = ["AuditData", "load_audit_data", "points_sha256"]


@dataclass
class AuditData:
    """A data set, the images and labels of the split to audit, and a label for output."""

    dataset: Dataset
    x: torch.Tensor
    y: torch.Tensor
    label: str


def load_audit_data(name: str, *, split: str = "test", data_dir: str | None = None,
                    image_size: int | None = None, channels: int | None = None,
                    progress: bool = False) -> AuditData:
    """The ``split`` of the data source ``name`` (``npz:PATH`` and a plain image folder are
    test sets only)."""
    from .image_folder import image_folder_test_set
    from .npz import load_npz

    if name.startswith("npz:"):
        path = name[len("npz:"):]
        if not path:
            raise ConfigError("an npz:PATH data set needs a file path after 'npz:'")
        if split != "test":
            raise ConfigError("an npz:PATH data set is a test set only; drop --split train")
        ds = load_npz(path)
        return AuditData(ds, ds.test.x, ds.test.y, name)
    if name == "image_folder":
        if not data_dir:
            raise ConfigError("--dataset image_folder needs its folder: --data-dir FOLDER")
        root = Path(data_dir).expanduser()
        presplit = (root / "train").is_dir() and any((root / t).is_dir() for t in ("test", "val"))
        if not presplit:  # a plain folder of class folders is the user's test set: audit all of it
            if split != "test":
                raise ConfigError(f"{root} has no train/ and test/ sub-folders: it is one test set, "
                                  f"audited whole; drop --split train")
            ds = image_folder_test_set(root, image_size=image_size, channels=channels,
                                       progress=progress)
            return AuditData(ds, ds.test.x, ds.test.y, f"image_folder {root}")
        ds = load_dataset("image_folder", path=root, image_size=image_size, channels=channels,
                          progress=progress)
        part = getattr(ds, split)
        return AuditData(ds, part.x, part.y, f"image_folder {root} ({split})")
    ds = load_dataset(name, data_dir=data_dir)
    part = getattr(ds, split)
    return AuditData(ds, part.x, part.y, name)


def points_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the audited images and labels (uint8 pixels, then int64 labels, in order)."""
    h = hashlib.sha256()
    h.update(f"{tuple(x.shape)}|{x.dtype}|".encode())
    for part in x.split(4096):  # chunks: no second copy of a large test set
        h.update(part.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    h.update(y.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()
