"""Atomic file writes: write to a temporary name beside the target, then ``os.replace``.

A reader (or a re-run after a crash or a SIGKILL) therefore sees either the old file or the
complete new one, never half of it. Every file robustfair writes goes through here.
"""
from __future__ import annotations

import os
import shutil
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
    except OSError as exc:
        os.unlink(tmp)
        if exc.filename is None:  # a failed write() names no file; say which one it was
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
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

    Several files of one folder are one unit (``FILES_UNIT``), switched in with one
    rename (:func:`robustfair._publish.publish_version`): a kill leaves the old files or the
    new ones, never a mix. Otherwise every file is first written under a temporary name in its
    own directory; only then are they renamed into place, one ``os.replace`` each.
    """
    paths = [Path(p) for p in writers]
    folder = paths[0].parent if paths else None
    if len(paths) > 1 and all(p.parent == folder for p in paths):
        folder.mkdir(parents=True, exist_ok=True)
        from ._publish import publish_version, symlinks_work

        if symlinks_work(folder):
            def fill(staging: Path) -> None:
                for path, write in writers.items():
                    write(str(staging / Path(path).name))

            # one unit per folder for these files, whichever of them a call writes (a name a
            # call leaves out keeps its bytes)
            publish_version(folder, None, fill, key=FILES_UNIT)
            return paths
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writers.items():
            staged.append((_stage(Path(path), write), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
        from ._publish import fsync_path

        for folder in {path.parent for _, path in staged}:  # the renames on disk too
            fsync_path(folder)
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


STAGING_PREFIX = ".staging-"
FILES_UNIT = "files"  # the unit of write_all_atomically's files in one folder
PENDING = ".pending"


def write_folder_unit(folder: str | os.PathLike, fill: Callable[[Path], None], record: str,
                      write_record: Callable[[Path], None], *, what: str) -> list[Path]:
    """Write a multi-file output into ``folder`` as one unit; return the paths written.

    ``fill(staging)`` writes the companion files into an empty staging folder, and
    ``write_record(path)`` the record file ``record`` (e.g. ``report.json``), which names the
    unit. The new files are written and fsynced beside the old ones and switch in with one
    rename (:mod:`robustfair._publish`: a version folder and a pointer), so whenever the
    process is killed, ``folder`` holds the complete old output or the complete new one, byte
    for byte. (Where the file system has no symbolic links, files are replaced one by one, the
    record removed first and written last: a kill then leaves some files of *one* output and
    no record.) The folder is locked for the publication
    (:func:`~robustfair._lock.folder_lock`), and temporaries a killed publication left behind
    are swept first. A directory under one of the output's names is refused, never deleted;
    other files in ``folder`` are left alone.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> paths = write_folder_unit(d, lambda s: (s / "a.csv").write_text("1"), "r.json",
    ...                           lambda p: p.write_text("{}"), what="a doctest")
    >>> sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
    ['a.csv', 'r.json']
    >>> (d / "a.csv").read_text()
    '1'
    """
    from ._lock import folder_lock
    from ._publish import publish_version, refuse_foreign_directories, symlinks_work

    folder = Path(folder)
    with folder_lock(folder, what):
        sweep_temporaries(folder, names=())  # staging folders of a killed publication
        if symlinks_work(folder):  # the new result switches in with one rename
            names = publish_version(folder, record, fill, write_record)
            return [folder / name for name in names]
        # no symbolic links here: files are replaced one by one, the record last
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        try:
            fill(staging)
            # the record is staged under another name: a reader that looks for it (a study
            # report collecting explain.json files) never finds a staged one
            write_record(staging / (record + PENDING))
            names = sorted(p.name for p in staging.iterdir() if p.name != record + PENDING)
            refuse_foreign_directories(folder, [record, *names])
            for name in (record, *names):  # the record first: from here the folder is "incomplete"
                (folder / name).unlink(missing_ok=True)
            for name in names:
                os.replace(staging / name, folder / name)
            os.replace(staging / (record + PENDING), folder / record)
            sweep_temporaries(folder, names=(record, *names))  # e.g. of an older writer
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in (*names, record)]


def sweep_temporaries(folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> None:
    """Remove what killed writes left in ``folder``: staging folders of
    :func:`write_folder_unit` and the ``.NAME.*.tmp`` files of :func:`atomic_write` (for the
    given ``names``, or every name)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.glob(STAGING_PREFIX + "*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
    patterns = [f".{name}.*.tmp" for name in names] if names is not None else [".*.tmp"]
    for pattern in patterns:
        for tmp in folder.glob(pattern):
            if tmp.is_file() or tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def write_text_unit(folder: str | os.PathLike, texts: dict[str, str], *, record: str,
                    what: str) -> list[Path]:
    """:func:`write_folder_unit` for text files given as ``{name: text}`` (UTF-8); ``record``
    is one of the names, written last."""
    def fill(staging: Path) -> None:
        for name, text in texts.items():
            if name != record:
                (staging / name).write_text(text, encoding="utf-8")

    return write_folder_unit(folder, fill, record,
                             lambda path: path.write_text(texts[record], encoding="utf-8"),
                             what=what)
