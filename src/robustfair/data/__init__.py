"""Data sets by name: ``load_dataset("cifar10", data_dir=...)``, plus bring-your-own loaders.

Importing this package registers every built-in loader: digits, gaussian, mnist,
fashion_mnist, mnist5k, svhn, cifar10, cifar100, cifar100_coarse, stl10, tiny_imagenet, image_folder
and npz (a test set in one .npz file).
"""
from ._base import (
    DATASETS,
    Dataset,
    Split,
    class_index,
    default_data_dir,
    list_datasets,
    load_dataset,
    register_dataset,
    to_float,
)

# imported for their @register_dataset side effect (and their public helpers)
from ._download import NO_DOWNLOAD_ENV, downloads_forbidden  # noqa: E402
from . import cifar, digits, gaussian, mnist, mnist5k, stl10, svhn, tiny_imagenet  # noqa: E402,F401
from .from_tensors import from_tensors  # noqa: E402
from .image_folder import image_folder  # noqa: E402
from .npz import load_npz  # noqa: E402

__all__ = [
    "DATASETS",
    "NO_DOWNLOAD_ENV",
    "Dataset",
    "Split",
    "class_index",
    "default_data_dir",
    "downloads_forbidden",
    "from_tensors",
    "image_folder",
    "list_datasets",
    "load_npz",
    "load_dataset",
    "register_dataset",
    "to_float",
]
