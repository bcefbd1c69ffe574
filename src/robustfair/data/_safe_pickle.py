"""Read the CIFAR python-release pickles without ever executing code from the file.

A pickle can name any importable callable and have it called while loading. This unpickler
resolves only the few globals that rebuild numpy arrays (and bytes, for protocol-2 pickles
written by Python 3); any other name is refused with a :class:`DataError` before anything from
the file is called.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._download import one_line

_probe = np.zeros(1, dtype=np.uint8)
_RECONSTRUCT = _probe.__reduce_ex__(2)[0]  # numpy's ndarray rebuild helper, whatever its module
_FROMBUFFER = _probe.__reduce_ex__(5)[0]  # protocol-5 rebuild helper (frombuffer + reshape)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # pickles from numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # pickles from numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 spells a bytes object
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only numpy array reconstruction."""

    def __init__(self, file, *, source: Path | str, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise DataError(
                f"{self.source}: refusing to unpickle {module}.{name} (only numpy arrays are "
                "allowed; the file is not a genuine CIFAR batch)"
            )
        return obj


def load_restricted_pickle(path: Path) -> object:
    """Load one pickle file through :class:`RestrictedUnpickler` (Python 2 strings as latin-1)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, source=path, encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:  # truncated or garbled pickles fail in many ways
        raise DataError(f"{path}: not a readable pickle ({one_line(exc)})") from None
