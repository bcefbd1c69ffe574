"""Type checks written once: "an integer, not a bool" and "true or false, as text or bool".

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; an option
such as a batch size must refuse ``True`` all the same.

>>> is_int(3), is_int(True), is_int(3.0)
(True, False, False)
>>> is_real(0.5), is_real(False)
(True, False)
>>> as_bool("off", "fawa")
False
"""
from __future__ import annotations

from typing import Any

from .errors import ConfigError


def is_int(value: Any) -> bool:
    """``value`` is a Python ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """``value`` is a Python ``int`` or ``float`` and not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_bool(value: Any, what: str) -> bool:
    """A bool, or text such as ``"true"``/``"off"``/``"1"``; a one-line ConfigError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what} must be true or false, got {value!r}")
