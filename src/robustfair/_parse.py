"""Safe parsing of numbers written the way papers write them ("8/255", "2e-4"), never with eval."""
from __future__ import annotations

import math
from fractions import Fraction

from .errors import ConfigError


def parse_number(text: str | float | int, *, what: str = "value") -> float:
    """Parse ``"8/255"``, ``"0.03"`` or ``"1e-3"`` into a float; a one-line error otherwise.

    >>> round(parse_number("8/255"), 6)
    0.031373
    >>> parse_number("0.5")
    0.5
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(Fraction(num.strip()) / Fraction(den.strip()))
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{what} {text!r} is not a number (write e.g. 0.03 or 8/255)") from None
    if not math.isfinite(value):
        raise ConfigError(f"{what} {text!r} is not a finite number")
    return value
