"""Safe parsing of numbers written the way papers write them ("8/255", "2e-4"), never with eval.

Also the one rule for an attack radius (:func:`check_eps`), shared by ``audit``, ``train``,
``explain`` and study specs, so a radius one command accepts is never refused by another.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from ._checks import is_real
from .errors import ConfigError

# a plain decimal with an optional exponent; Fraction("1e99999999") would build a number with
# a hundred million digits (a hang), so the exponent is bounded before Fraction sees it
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?")
_MAX_EXPONENT = 400  # beyond any float (1e308 .. 5e-324) by a margin
_MAX_DIGITS = 100


def _show(text: object) -> str:
    """``repr(text)``, shortened: an error line should not carry a thousand digits."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fraction_side(text: str, whole: str | float | int, what: str) -> Fraction:
    side = text.strip()
    match = _DECIMAL.fullmatch(side)
    if match is None or len(side) > _MAX_DIGITS:
        raise ConfigError(f"{what} {_show(whole)} is not a number (write e.g. 0.03 or 8/255)")
    if match.group(1) is not None and abs(int(match.group(1))) > _MAX_EXPONENT:
        raise ConfigError(f"{what} {_show(whole)} is out of range")
    return Fraction(side)


def parse_number(text: str | float | int, *, what: str = "value") -> float:
    """Parse ``"8/255"``, ``"0.03"`` or ``"1e-3"`` into a float; a one-line error otherwise.

    >>> round(parse_number("8/255"), 6)
    0.031373
    >>> parse_number("0.5")
    0.5
    >>> parse_number("1e308/1e-308")
    Traceback (most recent call last):
    ...
    robustfair.errors.ConfigError: value '1e308/1e-308' is not a finite number
    """
    if is_real(text):
        try:
            value = float(text)
        except OverflowError:  # an int beyond any float
            raise ConfigError(f"{what} {_show(text)} is not a finite number") from None
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(_fraction_side(num, text, what) / _fraction_side(den, text, what))
            else:
                value = float(s)
        except ConfigError:
            raise
        except OverflowError:
            raise ConfigError(f"{what} {_show(text)} is not a finite number") from None
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{what} {_show(text)} is not a number (write e.g. 0.03 or 8/255)") from None
    if not math.isfinite(value):
        raise ConfigError(f"{what} {_show(text)} is not a finite number")
    return value


def check_eps(eps: float, norm: str, *, what: str = "eps") -> float:
    """The one rule for an attack radius: finite, >= 0, and at most 1 under L-inf.

    Images live in [0, 1], so an L-inf radius above 1 allows every image and means a typo
    (``8`` for ``8/255``). Returns ``eps``.

    >>> check_eps(8 / 255, "linf") == 8 / 255
    True
    >>> check_eps(5, "linf")
    Traceback (most recent call last):
    ...
    robustfair.errors.ConfigError: an L-inf eps above 1 is meaningless for images in [0, 1], got 5 (did you mean 5/255?)
    """
    if not math.isfinite(eps):
        raise ConfigError(f"{what} must be a finite number, got {eps}")
    if eps < 0:
        raise ConfigError(f"{what} must be >= 0, got {eps}")
    if str(norm).lower() == "linf" and eps > 1:
        hint = f" (did you mean {eps:g}/255?)" if eps <= 255 else ""
        raise ConfigError(f"an L-inf {what} above 1 is meaningless for images in [0, 1], "
                          f"got {eps:g}{hint}")
    return eps
