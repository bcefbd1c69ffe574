"""The class-discrepancy measures, as data: one :class:`Measure` per scalar summary of how
unequal the classes are, in :data:`MEASURES`. Everything that computes, tests, prints or
tabulates a measure reads it from here: the report's discrepancy table and its noise floors
(:mod:`._stats`), the comparisons (:mod:`.compare`), the printed report (:mod:`._format`), the
audit card, the study's per-run statistics and comparisons, the leaderboard's columns. Adding
a measure is one :class:`Measure` in :data:`MEASURES` (or :func:`register_measure`).

>>> c = ClassValues(np.array([0.9, 0.6, 0.3]))
>>> round(float(MEASURES["difference"].compute(c)), 3), gap_direction("ratio")
(0.6, -1)
>>> sorted(m.name for m in MEASURES.values() if m.unit == UNITLESS)
['normalized_std', 'ratio']
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import RobustfairError

__all__ = ["ClassValues", "MEASURES", "Measure", "POINTS", "UNITLESS", "discrepancy_measures",
           "gap_direction", "get_measure", "register_measure", "worst_count"]

POINTS = "points"   # on the accuracy scale: shown in percent / percentage points
UNITLESS = ""       # a pure number (a ratio): shown as it is


def worst_count(num_classes: int, fraction: float) -> int:
    """How many classes make up "the worst ``fraction``": ``ceil(fraction * K)``, at least one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return max(1, math.ceil(fraction * num_classes - 1e-9))


class ClassValues:
    """The per-class values of each row of ``values`` (shape ``(..., K)``) and what several
    measures share, computed once: a measure's ``compute`` reads these.

    ``worst_first``: each row sorted from the worst class (the lowest accuracy, or the highest
    rate when lower is better) to the best; ``std`` is the population standard deviation over
    classes (``ddof=0``: the classes are the whole population, not a sample of it)."""

    def __init__(self, values: np.ndarray, *, higher_is_better: bool = True,
                 fraction: float = 0.2) -> None:
        v = np.asarray(values, dtype=float)
        self.values = v
        self.higher_is_better = higher_is_better
        ordered = np.sort(v, axis=-1)
        self.worst_first = ordered if higher_is_better else ordered[..., ::-1]
        self.worst = self.worst_first[..., 0]
        self.lowest, self.highest = ordered[..., 0], ordered[..., -1]
        self.mean = v.mean(axis=-1)
        self.std = v.std(axis=-1)
        self.worst_count = worst_count(v.shape[-1], fraction)


@dataclass(frozen=True)
class Measure:
    """One discrepancy measure and the properties the code keys on.

    * ``compute``: :class:`ClassValues` -> the measure of each row (a ratio may be NaN);
    * ``gap``: +1 if a larger value means a wider class gap, -1 a smaller one, 0 if the
      measure says nothing about the gap (the mean: no noise-floor p-value), for accuracies;
    * ``worst_side``: computed from the worst classes, so for a rate where lower is better
      (the worst class is the highest) its ``gap`` direction turns;
    * ``level``: a level on the accuracy scale (not a spread): its noise-floor p-value is taken
      from its distance to the class mean, which varies between no-gap draws but is no gap;
    * ``bounds``: what it can take on accuracies (intervals are clipped to it);
    * ``unit``: :data:`POINTS` (accuracy scale: shown in percent) or :data:`UNITLESS`;
    * ``about``: one line on what it is;
    * ``per_run``: in a study's per-run statistics (``runs.csv``);
    * ``leaderboard``: the column stem in the leaderboard's table (None: not shown there).
    """

    name: str
    compute: Callable[[ClassValues], np.ndarray]
    gap: int
    about: str
    worst_side: bool = False
    level: bool = False
    bounds: tuple[float, float] = (0.0, 1.0)
    unit: str = POINTS
    per_run: bool = False
    leaderboard: str | None = None

    def direction(self, higher_is_better: bool = True) -> int:
        """:attr:`gap` for accuracies, turned for a worst-side measure of a lower-is-better rate."""
        return -self.gap if self.worst_side and not higher_is_better else self.gap


# In the order the report prints them.
MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("mean", lambda c: c.mean, 0, "the mean over classes", per_run=True),
    Measure("worst", lambda c: c.worst, -1, "the worst class's value", worst_side=True,
            level=True, per_run=True),
    Measure("difference", lambda c: c.highest - c.lowest, +1,
            "the largest minus the smallest class value", leaderboard="gap"),
    Measure("ratio", lambda c: c.lowest / c.highest, -1,
            "the smallest divided by the largest class value", unit=UNITLESS),
    Measure("std", lambda c: c.std, +1, "the standard deviation over classes (ddof=0)",
            bounds=(0.0, 0.5), per_run=True, leaderboard="class_std"),
    Measure("normalized_std", lambda c: c.std / c.mean, +1, "the std over the mean",
            bounds=(0.0, math.inf), unit=UNITLESS, per_run=True),
    Measure("worst_fraction_mean", lambda c: c.worst_first[..., :c.worst_count].mean(axis=-1),
            -1, "the mean over the worst ceil(fraction x K) classes", worst_side=True,
            level=True, per_run=True),
    Measure("worst_deviation", lambda c: c.worst - c.mean, -1,
            "the worst class's value minus the mean over classes", worst_side=True,
            bounds=(-1.0, 0.0)),
)}


def register_measure(measure: Measure, *, replace: bool = False) -> Measure:
    """Add ``measure`` to :data:`MEASURES` (after the others); a name taken already is an
    error unless ``replace``."""
    if not isinstance(measure, Measure):
        raise RobustfairError(f"register_measure takes a Measure, got {type(measure).__name__}")
    if measure.name in MEASURES and not replace:
        raise RobustfairError(f"measure {measure.name!r} is registered already")
    if measure.gap not in (-1, 0, 1) or measure.unit not in (POINTS, UNITLESS):
        raise RobustfairError(f"measure {measure.name!r}: gap must be -1, 0 or 1 and unit "
                              f"{POINTS!r} or {UNITLESS!r}")
    MEASURES[measure.name] = measure
    return measure


def get_measure(name: str) -> Measure:
    """The measure called ``name``; a one-line error naming the choices otherwise."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise RobustfairError(f"unknown measure {name!r}; choose from: "
                              f"{', '.join(MEASURES)}") from None


def gap_direction(measure: str, higher_is_better: bool = True) -> int:
    """+1 if a larger value of ``measure`` means a wider class gap, -1 if a smaller one, 0 if
    the measure says nothing about the gap (the mean).

    >>> gap_direction("std"), gap_direction("worst"), gap_direction("worst", False)
    (1, -1, 1)
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}")
    return MEASURES[measure].direction(higher_is_better)


def discrepancy_measures(values: np.ndarray, *, higher_is_better: bool = True,
                         fraction: float = 0.2) -> dict[str, np.ndarray]:
    """Every measure of :data:`MEASURES` of each row of ``values`` (shape ``(..., K)``), by
    name: one call handles the point estimate and all bootstrap replicates at once.

    >>> out = discrepancy_measures(np.array([[0.2, 0.4], [0.5, 0.5]]))
    >>> out["worst"].tolist(), out["ratio"].tolist()
    ([0.2, 0.5], [0.5, 1.0])
    """
    c = ClassValues(values, higher_is_better=higher_is_better, fraction=fraction)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {name: m.compute(c) for name, m in MEASURES.items()}
