"""One writer per output folder: an advisory lock on the folder itself.

Two ``train`` runs into one ``--out`` (or two audits publishing into one folder) would
otherwise interleave their files and both report success. The lock is a ``flock`` on the
folder's own descriptor (no lock file is added to the user's folder): the kernel drops it when
its holder exits, even by SIGKILL, so a killed run never leaves a stale lock behind. (Where
``fcntl`` is missing, not POSIX, nothing is locked.)

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with folder_lock(d, "a test"):
...     with folder_lock(d, "another test"):
...         pass
Traceback (most recent call last):
...
robustfair._lock.FolderBusy: ... is in use by another robustfair process (another test); wait for it to finish or choose another folder
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from .errors import ConfigError

class FolderBusy(ConfigError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the block; :class:`FolderBusy` at once
    if another process holds it. ``what`` says what the lock is for, in the error.

    The lock belongs to this open file: a second ``folder_lock`` on the same folder in the same
    process is refused too, like one from another process.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{folder} is in use by another robustfair process ({what}); "
                             f"wait for it to finish or choose another folder") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
