"""Plain JSON values from what robustfair stores as settings, metadata and manifests.

One rule everywhere: dict keys become strings, tuples lists, numpy scalars, arrays and
tensors plain numbers and lists, anything else (a path, say) its text, and a float that is
not finite becomes ``None`` (JSON ``null``: the value is missing), so the output always
serialises with ``allow_nan=False``.

>>> import numpy as np
>>> jsonable({1: (np.float32(0.5), float("nan")), "p": np.arange(2)})
{'1': [0.5, None], 'p': [0, 1]}
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return jsonable(value.tolist())
    return str(value)
