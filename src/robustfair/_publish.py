"""Publish a multi-file output over an older one in one step: a versioned folder and a pointer.

A unit of files (an audit's ``report.json``, ``by_class.csv``, ... ; a card's ``card.html``,
``card.png``, ``report.json``) is named by its *record* file. Its files live in a hidden
version folder beside them, and each visible name is a relative symbolic link through one
pointer, itself a symbolic link to the current version::

    out/report.json        -> .report.json.now/report.pub.json
    out/by_class.csv       -> .report.json.now/by_class.pub.csv
    out/.report.json.now   -> .report.json.v3f9a1c     (the pointer: the one switch)
    out/.report.json.v3f9a1c/report.pub.json, by_class.pub.csv, ...

Publishing writes the new version folder whole, fsyncs its files and the folder, then replaces
the pointer with one ``os.replace`` (atomic on POSIX) and fsyncs ``out``. So at every instant
every visible name reads the complete old result or the complete new one, byte for byte; a
kill leaves at most an unreferenced version folder, swept by the next publication. Stored
names carry ``.pub`` before their extension (:func:`stored`).

An output folder written before this layout (plain files) is first moved under a version of its
own without changing a byte that a reader sees: each old file is hard-linked into the version,
then replaced by its link, one atomic rename each.

Nothing robustfair did not write is deleted: a *directory* under a name the unit publishes is
refused (:class:`~robustfair.errors.ConfigError`), and names the new unit lacks keep the old
version's bytes (they are carried into the new version).
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

from .errors import ConfigError

MARK = ".pub"


def stored(name: str) -> str:
    """The name a visible file has inside a version folder: ``.pub`` before its extension, so
    that a search for ``**/report.json`` finds the visible file only, and a browser opening
    ``card.html`` (through its link) still sees an ``.html`` file.

    >>> stored("card.html"), stored("done"), published(stored("card.html"))
    ('card.pub.html', 'done.pub', 'card.html')
    """
    stem, dot, ext = name.rpartition(".")
    return f"{stem}{MARK}.{ext}" if dot and stem else name + MARK


def published(name: str) -> str | None:
    """The visible name of a stored one (None: not a stored name)."""
    if name.endswith(MARK):
        return name[: -len(MARK)]
    stem, dot, ext = name.rpartition(".")
    return stem[: -len(MARK)] + "." + ext if dot and stem.endswith(MARK) else None


def symlinks_work(folder: Path) -> bool:
    """Whether ``folder`` takes symbolic links (not on some Windows setups or file systems)."""
    probe = folder / f".symlink-probe-{secrets.token_hex(4)}"
    try:
        os.symlink("target", probe)
    except (OSError, NotImplementedError):
        return False
    probe.unlink()
    return True


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (folders: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) * path.is_dir())
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: nothing more can be done
        pass
    finally:
        os.close(fd)


def pointer(folder: Path, record: str) -> Path:
    return folder / f".{record}.now"


def version_prefix(record: str) -> str:
    return f".{record}.v"


def current_version(folder: Path, record: str) -> Path | None:
    """The version folder the pointer names, or None."""
    link = pointer(folder, record)
    if not link.is_symlink():
        return None
    target = folder / os.readlink(link)
    return target if target.is_dir() else None


def _link_to(folder: Path, record: str, name: str) -> str:
    return f".{record}.now/{stored(name)}"


def _replace_with_symlink(path: Path, target: str) -> None:
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.lnk"
    os.symlink(target, tmp)
    os.replace(tmp, path)


def refuse_foreign_directories(folder: Path, names: list[str]) -> None:
    """A directory under an output's name is not robustfair's: never delete it."""
    for name in names:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            raise ConfigError(f"{target} is a directory, where robustfair would write its "
                              f"{name} file; robustfair deletes nothing it did not write: "
                              f"move it away or choose another folder")


def _drop_copied_pointer(folder: Path, record: str) -> None:
    """A copy of the folder that followed links (``shutil.copytree``, ``cp -rL``) made the
    pointer a plain folder: turn any visible link through it into a plain copy of its file
    (the same bytes, one rename each), then remove it, so the next publication starts over."""
    link = pointer(folder, record)
    if not link.is_dir() or link.is_symlink():
        return
    for entry in folder.iterdir():
        if entry.is_symlink() and os.readlink(entry).startswith(f"{link.name}/") and entry.exists():
            tmp = folder / f".{entry.name}.{secrets.token_hex(4)}.lnk"
            shutil.copy2(entry, tmp)
            os.replace(tmp, entry)
    shutil.rmtree(link)


def sweep(folder: Path, record: str) -> None:
    """Remove versions the pointer does not name and the temporary links of killed writes."""
    _drop_copied_pointer(folder, record)
    keep = current_version(folder, record)
    for entry in folder.glob(version_prefix(record) + "*"):
        if entry.is_dir() and not entry.is_symlink() and (keep is None or entry.name != keep.name):
            shutil.rmtree(entry, ignore_errors=True)
    for tmp in folder.glob(".*.lnk"):
        if tmp.is_symlink() or tmp.is_file():
            tmp.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    """A second name for the same bytes (a copy where the file system has no hard links)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _adopt_plain_files(folder: Path, record: str, names: list[str]) -> None:
    """Move an older plain-file output (no pointer yet) under a version of its own, keeping
    every visible byte: hard links (or copies) first, then each name becomes its link."""
    plain = [n for n in names if (folder / n).is_file() and not (folder / n).is_symlink()]
    if not plain:
        return
    old = folder / f"{version_prefix(record)}{secrets.token_hex(6)}"
    old.mkdir()
    for name in plain:
        _link_or_copy(folder / name, old / stored(name))
        fsync_path(old / stored(name))
    fsync_path(old)
    _replace_with_symlink(pointer(folder, record), old.name)
    fsync_path(folder)
    for name in plain:
        _replace_with_symlink(folder / name, _link_to(folder, record, name))
    fsync_path(folder)


def publish_version(folder: Path, record: str | None, fill: Callable[[Path], None],
                    write_record: Callable[[Path], None] | None = None, *,
                    key: str | None = None) -> list[str]:
    """Publish ``fill``'s files and the record as the new version of a unit in ``folder``
    (which the caller has locked); return the unit's names. The unit is named ``key``
    (default: ``record``); a key must not change between publications of the same files."""
    key = key or record
    sweep(folder, key)
    new = folder / f"{version_prefix(key)}{secrets.token_hex(6)}"
    new.mkdir()
    try:
        fill(new)
        names = sorted(p.name for p in new.iterdir())
        if record is not None:
            names.append(record)
        refuse_foreign_directories(folder, names)
        for name in names:
            if name != record:
                os.replace(new / name, new / stored(name))
        if record is not None:
            write_record(new / stored(record))
        old = current_version(folder, key)
        if old is None:
            _adopt_plain_files(folder, key, names)
            old = current_version(folder, key)
        if old is not None:  # names the new unit lacks keep their old bytes
            for entry in old.iterdir():
                if published(entry.name) and not (new / entry.name).exists():
                    _link_or_copy(entry, new / entry.name)
        for entry in new.iterdir():
            fsync_path(entry)
        fsync_path(new)
        names = sorted(published(e.name) for e in new.iterdir())
        for name in names:  # visible names (dangling until the switch for a new name)
            path = folder / name
            if not path.is_symlink() or os.readlink(path) != _link_to(folder, key, name):
                _replace_with_symlink(path, _link_to(folder, key, name))
        fsync_path(folder)
        _replace_with_symlink(pointer(folder, key), new.name)  # the switch
        fsync_path(folder)
    except BaseException:
        if current_version(folder, key) != new:
            shutil.rmtree(new, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return names
