"""Type checks written once: "an integer, not a bool", "a positive integer" and "true or false,
as text or bool".

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; an option
such as a batch size must refuse ``True`` all the same.

>>> is_int(3), is_int(True), is_int(3.0)
(True, False, False)
>>> is_real(0.5), is_real(False)
(True, False)
>>> as_bool("off", "fawa")
False
>>> positive_int(3, "steps")
3
>>> positive_int(0, "steps")
Traceback (most recent call last):
...
robustfair.errors.ConfigError: steps must be a positive integer, got 0
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import ConfigError


def is_int(value: Any) -> bool:
    """``value`` is a Python ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """``value`` is a Python ``int`` or ``float`` and not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: Any, what: str,
                 error: Callable[[str], Exception] = ConfigError) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) of at least 1; else ``error`` (an
    exception type, or a function that makes one from the message) with a one-line message
    naming ``what``."""
    if not is_int(value) or value < 1:
        raise error(f"{what} must be a positive integer, got {value!r}")
    return value


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
