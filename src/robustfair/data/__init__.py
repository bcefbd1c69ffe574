"""Data sets by name: ``load_dataset("cifar10", data_dir=...)``, plus bring-your-own loaders."""
from ._base import (
    Dataset,
    Split,
    class_index,
    default_data_dir,
    list_datasets,
    load_dataset,
    register_dataset,
    to_float,
)

__all__ = [
    "Dataset",
    "Split",
    "class_index",
    "default_data_dir",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "to_float",
]
