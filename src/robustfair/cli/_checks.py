"""Checks and flags shared by the sub-commands (checkpoint and data set fit, progress bars)."""
from __future__ import annotations

import sys

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
    """``--progress`` / ``--no-progress``; neither given: bars only when stderr is a terminal."""
    parser.add_argument("--progress", dest="progress", action="store_const", const=True,
                        help="show progress bars (default: only on a terminal, so logs stay clean)")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                        help="no progress bars")


def progress_wanted(args) -> bool:
    """The ``--progress`` choice, or whether stderr is a terminal when none was made."""
    chosen = getattr(args, "progress", None)
    return sys.stderr.isatty() if chosen is None else bool(chosen)


def progress_said(args) -> bool:
    """Whether long work says what it is doing: yes unless ``--no-progress`` (a bar on a
    terminal, else one line per finished piece, so that a log file shows progress too)."""
    return getattr(args, "progress", None) is not False
