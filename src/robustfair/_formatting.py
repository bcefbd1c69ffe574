"""How numbers are written for people, once: percentages, signed differences in points,
intervals, p-values and attack settings. The printed report, the card, the study report, the
explanation and the leaderboard all write their numbers with these, so one number reads the
same everywhere. A missing value (None, NaN, inf) is written ``missing`` (``"n/a"`` unless a
page has its own mark).

>>> percent(0.8123), percent(0.8123, sd=0.0131, unit="%"), percent(float("nan"))
('81.2', '81.2 ± 1.3%', 'n/a')
>>> points(0.061), interval(0.82, 0.911), estimate(0.873, 0.82, 0.911)
('+6.1 points', '[82.0, 91.1]', '87.3 [82.0, 91.1]')
>>> interval(-0.25, 0.5, scale=1, digits=3, sign=True), interval(0.1, float("nan"))
('[-0.250, +0.500]', '')
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

__all__ = ["describe_attack", "estimate", "format_p", "format_setting", "interval", "is_number",
           "markdown_table", "markdown_text",
           "number", "percent", "points", "signed"]

MISSING = "n/a"


def is_number(value: Any) -> bool:
    """A finite real number (not None, NaN or inf)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def number(x: Any, *, digits: int = 3, missing: str = MISSING) -> str:
    """A plain number (a ratio, a unitless measure) with ``digits`` decimals: ``0.479``."""
    return f"{float(x):.{digits}f}" if is_number(x) else missing


def percent(x: Any, *, sd: Any = None, digits: int = 1, unit: str = "",
            missing: str = MISSING) -> str:
    """A fraction in percent (``0.8123`` -> ``81.2``), with ``± sd`` when there is one."""
    if not is_number(x):
        return missing
    text = f"{100 * float(x):.{digits}f}"
    if is_number(sd):
        text += f" ± {100 * float(sd):.{digits}f}"
    return text + unit


def signed(x: Any, *, scale: float = 100.0, digits: int = 1, missing: str = MISSING) -> str:
    """A difference with its sign, ``scale`` times (percentage points by default): ``+6.1``."""
    return f"{scale * float(x):+.{digits}f}" if is_number(x) else missing


def points(x: Any, *, missing: str = MISSING) -> str:
    """A difference of fractions in accuracy points, signed: ``+6.1 points``."""
    return f"{signed(x)} points" if is_number(x) else missing


def interval(lo: Any, hi: Any, *, scale: float = 100.0, digits: int = 1, sign: bool = False,
             missing: Any = "") -> Any:
    """``[lo, hi]``, ``scale`` times (percent by default), signed if ``sign``; ``missing``
    unless both ends are numbers."""
    if not (is_number(lo) and is_number(hi)):
        return missing
    spec = f"{'+' if sign else ''}.{digits}f"
    return f"[{scale * float(lo):{spec}}, {scale * float(hi):{spec}}]"


def estimate(value: Any, lo: Any, hi: Any, *, missing: str = MISSING) -> str:
    """A fraction in percent with its interval: ``87.3 [82.0, 91.1]``."""
    if not is_number(value):
        return missing
    return f"{percent(value)} {interval(lo, hi)}".rstrip()


def format_p(p: float | None, p_min: float | None = None, *, missing: str = MISSING) -> str:
    """A p-value for display, at the resolution its method has: two significant digits;
    ``< 0.001`` below 0.001 (a simulation's or bootstrap's floor: 1/(1 + B) is not a p-value
    of 0.000999); with ``p_min`` (an exact test's smallest attainable p-value: its p-values are
    exact, so they keep their digits) stated beside.

    >>> format_p(0.000999), format_p(0.0238), format_p(0.0238, p_min=0.0079), format_p(float("nan"))
    ('< 0.001', '0.024', '0.024 (smallest attainable 0.0079)', 'n/a')
    """
    if not is_number(p):
        return missing
    exact = is_number(p_min)
    text = "< 0.001" if p < 0.001 and not exact else f"{p:.2g}"
    if exact:
        text += f" (smallest attainable {p_min:.2g})"
    return text


def format_setting(value: Any) -> str:
    """A setting for display; an eps such as 0.0313725 is shown as ``0.031373 (8/255)``.

    >>> format_setting(8 / 255), format_setting(0.5), format_setting("apgd-ce")
    ('0.0313725 (8/255)', '0.5', 'apgd-ce')
    """
    if isinstance(value, float):
        text = f"{value:.6g}"
        frac = Fraction(value).limit_denominator(1000)
        if frac.denominator in (255, 256) and abs(float(frac) - value) < 1e-9:
            text += f" ({frac.numerator}/{frac.denominator})"
        return text
    return str(value)


def describe_attack(name: str, settings: dict) -> str:
    """One line per attack; a composite attack's parts follow on lines of their own.

    >>> print(describe_attack("aa", {"eps": 8 / 255, "parts": [{"attack": "apgd-ce", "eps": 1,
    ...                                                          "steps": 100}]}))
    aa: eps=0.0313725 (8/255)
    aa / apgd-ce: steps=100
    """
    own = {k: v for k, v in settings.items() if k != "parts"}
    lines = [f"{name}: " + ", ".join(f"{k}={format_setting(v)}" for k, v in own.items())]
    shared = ("eps", "norm", "seed")  # the composite's own, repeated in every part
    for part in settings.get("parts") or []:
        rest = {k: v for k, v in part.items() if k not in shared and k != "attack"}
        lines.append(f"{name} / {part.get('attack')}: "
                     + ", ".join(f"{k}={format_setting(v)}" for k, v in rest.items()))
    return "\n".join(lines)


def markdown_text(text: object) -> str:
    r"""``text`` (a class name, a message) as literal Markdown: one line, and no ``|`` that
    splits a table cell, HTML tag, entity or link it could start.

    >>> print(markdown_text("cat|dog\n<script>x</script> [a](b) &amp; <- worst"))
    cat\|dog \<script>x\</script> [a]\(b) \&amp; <- worst
    """
    text = " ".join(str(text).splitlines())  # a newline would end the table row
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", text)  # a tag or an autolink; "<- worst" stays
    text = re.sub(r"&(?=#?\w+;)", r"\\&", text)  # an entity
    return text.replace("](", "]\\(")  # a link or an image


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, every cell made literal text by :func:`markdown_text`."""
    header = [markdown_text(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(markdown_text(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
