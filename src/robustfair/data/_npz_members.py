"""Read named arrays from an ``.npz`` file, only those asked for, each checked before reading.

``np.load`` would read any member on access, sized by the member's own header: a 2 MB file can
declare (or, compressed, inflate to) gigabytes. Here an array's header (dtype and shape) is read
first; the bytes it declares must equal what the zip says the member holds, must fit in memory
(:func:`robustfair._bounds.check_fits`), and only then is the array read. Members nobody asked
for are never opened. Object arrays are refused (nothing is unpickled).
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from .._bounds import check_fits
from ..errors import DataError

MAX_HEADER = 10_000  # numpy's own default limit on an array header's size


def _header(fh, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of the .npy stream ``fh`` (read up to its data)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
        else:
            shape, _, dtype = fmt._read_array_header(fh, version, max_header_size=MAX_HEADER)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} is not a .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return tuple(int(s) for s in shape), np.dtype(dtype), fh.tell()


class NpzMembers:
    """The arrays of an ``.npz`` file by name (without ``.npy``), read on request.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez(p, x=np.arange(3), junk=np.zeros(5))
    >>> with NpzMembers(p) as f:
    ...     sorted(f.names), f.read("x").tolist()
    (['junk', 'x'], [0, 1, 2])
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile:
            with open(self.path, "rb") as fh:
                start = fh.read(6)
            what = ("a single .npy array named .npz" if start == b"\x93NUMPY"
                    else "not a zip archive")
            raise DataError(f"{self.path} is not an .npz file ({what}); an .npz is a zip of "
                            f".npy arrays, as np.savez writes it") from None
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        self._members = {info.filename: info for info in self._zip.infolist()}
        self.names = [n[: -len(".npy")] if n.endswith(".npy") else n for n in self._members]

    def __enter__(self) -> "NpzMembers":
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def _info(self, name: str) -> zipfile.ZipInfo:
        if name + ".npy" in self._members:
            return self._members[name + ".npy"]
        if name in self._members:
            raise DataError(f"{self.path}: member {name!r} is not a .npy array (an .npz holds "
                            f"NAME.npy members, as np.savez writes them)")
        raise KeyError(name)

    def shape(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """The declared shape and dtype of ``name``, checked against its size, unread."""
        info = self._info(name)
        where = f"{self.path}: member {name!r}"
        with self._zip.open(info) as fh:
            shape, dtype, header = _header(fh, where)
        if dtype.hasobject:
            raise DataError(f"{where} holds Python objects ({dtype}); only plain arrays are read "
                            f"(nothing is unpickled)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - header:
            raise DataError(f"{where} declares shape {shape} of {dtype} ({nbytes} bytes) but "
                            f"holds {info.file_size - header} bytes of data: a damaged or "
                            f"forged file")
        return shape, dtype

    def read(self, name: str, *, what: str | None = None) -> np.ndarray:
        """Read ``name`` after :meth:`shape`'s checks and a memory bound."""
        shape, dtype = self.shape(name)
        check_fits(math.prod(shape) * dtype.itemsize,
                   what or f"{self.path}: member {name!r} ({'x'.join(map(str, shape))} {dtype})")
        try:
            with self._zip.open(self._info(name)) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False, max_header_size=MAX_HEADER)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"{self.path}: member {name!r} cannot be read ({exc})") from None
