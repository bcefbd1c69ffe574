"""Atomic file writes: write to a temporary name beside the target, then ``os.replace``.

A reader (or a re-run after a crash or a SIGKILL) therefore sees either the old file or the
complete new one, never half of it. Every file robustfair writes goes through here.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stage(path: Path, write: Callable[[str], None]) -> Path:
    """Write a temporary file beside ``path`` with ``write(tmp)``, flushed to disk; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp (and e.g. safetensors) make 0600 files; give the permissions the umask intends
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:  # on disk before the rename makes it visible
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then rename it to ``path``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a.txt", lambda tmp: pathlib.Path(tmp).write_text("hi")).read_text()
    'hi'
    """
    return write_all_atomically({path: write})[0]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_all_atomically(writers: dict[str | os.PathLike, Callable[[str], None]]) -> list[Path]:
    """Write several files so that none is replaced unless all were written in full.

    Every file is first written under a temporary name in its own directory; only then are
    they renamed into place, one ``os.replace`` each.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writers.items():
            staged.append((_stage(Path(path), write), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in staged]


def write_files_atomically(files: dict[str | os.PathLike, str]) -> list[Path]:
    """Write several text files so that none is replaced unless all were written in full."""
    return write_all_atomically({
        path: (lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
        for path, text in files.items()
    })
