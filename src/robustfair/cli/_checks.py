"""Checks shared by the sub-commands that load a checkpoint and a data set."""
from __future__ import annotations

from ..errors import ConfigError, ModelError


def check_int(value: int | None, flag: str, minimum: int) -> None:
    """An integer option (None: not given) must be at least ``minimum``."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {value}")


def check_model_fits(model, ds, checkpoint: str, dataset_name: str) -> None:
    """The checkpoint's class count, channels and image size must be the data set's."""
    config = getattr(model, "robustfair_config", {}) or {}
    if config.get("num_classes") != ds.num_classes:
        raise ModelError(f"checkpoint {checkpoint} has {config.get('num_classes')} classes but "
                         f"dataset {dataset_name!r} has {ds.num_classes}")
    shape = (config.get("in_channels"), config.get("image_size"))
    if shape != (ds.channels, ds.image_size):
        raise ModelError(f"checkpoint {checkpoint} expects {shape[0]}-channel {shape[1]}x{shape[1]} "
                         f"images but dataset {dataset_name!r} has {ds.channels}-channel "
                         f"{ds.image_size}x{ds.image_size}")
