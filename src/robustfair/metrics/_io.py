"""Atomic file writes: write to a temporary name beside the target, then ``os.replace``.

A reader (or a re-run after a crash) therefore sees either the old file or the complete new one,
never half of it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (the parent directory must exist)."""
    return write_files_atomically({path: text})[0]


def write_files_atomically(files: dict[str | os.PathLike, str]) -> list[Path]:
    """Write several text files so that none is replaced unless all were written in full.

    Every file is first written (and flushed to disk) under a temporary name in its own
    directory; only then are they renamed into place, one ``os.replace`` each.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((Path(tmp), path))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in staged]
