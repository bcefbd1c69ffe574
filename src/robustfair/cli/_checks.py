"""Checks and flags shared by the sub-commands (checkpoint and data set fit, progress bars)."""
from __future__ import annotations


from ..errors import ConfigError


def check_int(value: int | None, flag: str, minimum: int) -> None:
    """An integer option (None: not given) must be at least ``minimum``."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {value}")


def check_model_fits(model, ds, checkpoint: str, dataset_name: str) -> None:
    """The checkpoint's class count, channels and image size must be the data set's."""
    from ..models.source import DataShape, check_checkpoint_fits

    check_checkpoint_fits(model, DataShape(ds.num_classes, ds.channels, ds.image_size,
                                           f"dataset {dataset_name!r}"), checkpoint)


def add_progress_flags(parser) -> None:
    """``--progress`` (the default) / ``--no-progress``."""
    parser.add_argument("--progress", dest="progress", action="store_const", const=True,
                        help="say what the long work is doing (the default): a bar on a terminal, "
                             "one line per finished step in a log")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                        help="no progress output")


def progress_said(args) -> bool:
    """Whether long work says what it is doing: yes unless ``--no-progress`` (a bar on a
    terminal, else one line per finished piece, so that a log file shows progress too)."""
    return getattr(args, "progress", None) is not False
