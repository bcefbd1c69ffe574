"""Find a data set's files on disk, or download them once, verified and atomically.

A download goes to a fresh ``.<file>.<random>.part`` (created exclusively, so a planted link is
never written through), is checked against its published checksum and only then
renamed into place, so an interrupted or tampered download never looks like a good file.
Archives are unpacked into a temporary folder beside the target and moved into place at the
end, with every member checked to stay inside the target (no ``..``, no absolute paths, no
links or devices).

``ROBUSTFAIR_NO_DOWNLOAD=1`` (what ``--no-download`` sets) forbids every download: a missing
data set is then an error that says where to put its files, and nothing is fetched.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm import tqdm

from .._atomic import _umask
from ..errors import DataError

# set (to anything but 0/false/no) to forbid every download; `--no-download` sets it
NO_DOWNLOAD_ENV = "ROBUSTFAIR_NO_DOWNLOAD"


@dataclass(frozen=True)
class Remote:
    """A published file: where it lives and its checksum (MD5 and/or SHA-256, hex)."""

    url: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def one_line(exc: BaseException) -> str:
    """An exception as one short line (URLError reasons may span lines)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksum_problem(path: Path, remote: Remote) -> str | None:
    """None when ``path`` matches every checksum ``remote`` publishes, else what differs."""
    for algorithm, expected in (("md5", remote.md5), ("sha256", remote.sha256)):
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if got != expected.lower():
            return f"{algorithm} {got}, expected {expected.lower()}"
    return None


def downloads_forbidden() -> bool:
    """Whether ``ROBUSTFAIR_NO_DOWNLOAD`` (set by ``--no-download``) forbids every download."""
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def forbid_if_offline(url: str) -> None:
    """Raise :class:`DataError` instead of fetching ``url`` when downloads are switched off."""
    if downloads_forbidden():
        raise DataError(f"downloads are switched off ({NO_DOWNLOAD_ENV} is set, e.g. by "
                        f"--no-download); not fetching {url}")


def _fetch(url: str, dest: Path, progress: bool) -> None:
    """Stream ``url`` into ``dest``, an existing file (no checks here; the caller verifies)."""
    forbid_if_offline(url)
    # O_NOFOLLOW: writes only ever go to the file the caller created, never through a link
    flags = os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with urllib.request.urlopen(url, timeout=60) as response, \
            os.fdopen(os.open(dest, flags), "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=url.rstrip("/").rsplit("/", 1)[-1],
            disable=not progress,
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))


def download_file(remote: Remote, folder: Path, progress: bool = False) -> Path:
    """Download ``remote`` into ``folder`` unless a verified copy is there; return its path.

    Raises :class:`DataError` on a checksum mismatch; network and disk errors propagate as
    ``OSError`` (``URLError`` is one) for the caller to phrase.
    """
    if remote.md5 is None and remote.sha256 is None:
        raise DataError(f"{remote.url}: no checksum to verify the download against")
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.filename
    if dest.is_file() and _checksum_problem(dest, remote) is None:
        return dest
    forbid_if_offline(remote.url)
    # a fresh file (O_EXCL, random name): a planted `<file>.part` symlink is never followed
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    part = Path(tmp)
    os.chmod(part, 0o666 & ~_umask())  # mkstemp's 0600 would stay on the data file
    try:
        _fetch(remote.url, part, progress)
        problem = _checksum_problem(part, remote)
        if problem is not None:
            raise DataError(
                f"{remote.filename}: checksum mismatch ({problem}) for the download from "
                f"{remote.url}; the file was discarded"
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")):
        raise DataError(f"{archive}: refusing archive member with an unsafe path {name!r}")
    return path


def extract_archive(
    archive: Path, folder: Path, keep: Callable[[str], bool] = lambda name: True
) -> None:
    """Unpack a .tar[.gz] or .zip into ``folder``; members for which ``keep`` is false are skipped.

    Top-level entries of the archive replace any same-named (possibly half-extracted) entries
    in ``folder``.
    """
    tmp = folder / f".{archive.name}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _safe_member_path(info.filename, archive)
                    if keep(info.filename):
                        zf.extract(info, tmp)
        else:
            with tarfile.open(archive) as tf:
                members = []
                for m in tf.getmembers():
                    _safe_member_path(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise DataError(
                            f"{archive}: refusing archive member {m.name!r} (not a plain file "
                            "or folder)"
                        )
                    if keep(m.name):
                        members.append(m)
                if hasattr(tarfile, "data_filter"):  # belt and braces where Python has it
                    tf.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp, members=members)
        for entry in tmp.iterdir():
            target = folder / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{archive}: not a readable archive ({one_line(exc)})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _how_to_get(remotes: list[Remote], target: Path, archive: bool) -> str:
    urls = ", ".join(r.url for r in remotes)
    if archive:
        return f"download {urls} and extract it into {target}"
    return f"download {urls} and put {'it' if len(remotes) == 1 else 'them'} in {target}"


def find_or_download(
    name: str,
    candidates: list[Path],
    complete: Callable[[Path], bool],
    expected: str,
    remotes: list[Remote],
    target: Path,
    download: bool,
    *,
    archive: bool = False,
    keep: Callable[[str], bool] = lambda member: True,
    progress: bool = False,
) -> Path:
    """Return the first folder in ``candidates`` that ``complete`` accepts, downloading if allowed.

    ``target`` is where downloads go (archives are unpacked there, then deleted); after a
    download the candidates are searched again. Every failure is one :class:`DataError` line
    that says which files were expected where and how to get them.
    """
    for folder in candidates:
        if complete(folder):
            return folder
    where = " or ".join(str(c) for c in candidates)
    how = _how_to_get(remotes, target, archive)
    if not download:
        raise DataError(
            f"{name}: files not found ({expected}) in {where} and download=False; {how}"
        )
    if downloads_forbidden():
        raise DataError(f"{name}: files not found ({expected}) in {where} and downloads are "
                        f"switched off ({NO_DOWNLOAD_ENV} / --no-download); {how}")
    try:
        for remote in remotes:
            path = download_file(remote, target, progress)
            if archive:
                extract_archive(path, target, keep)
                path.unlink()  # the unpacked folder is what loading needs
    except DataError as exc:
        raise DataError(f"{name}: {exc}; {how}") from None
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise DataError(
            f"{name}: files not found ({expected}) in {where} and download failed "
            f"({one_line(exc)}); {how}"
        ) from None
    for folder in candidates:
        if complete(folder):
            return folder
    raise DataError(f"{name}: the download did not provide {expected} in {where}; {how}")


def read_bytes(path: Path) -> bytes:
    """A whole file as bytes, a clear error if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)})") from None


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a small text file (class-name lists)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
