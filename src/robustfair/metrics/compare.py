"""The one statistics engine for comparing training conditions: seeds and test points.

A condition (a training recipe) is run with several seeds; every run is audited on the same
test points. How far apart two conditions are on some class measure (say the worst class's
robust accuracy) is uncertain for two reasons: another seed trains another model, and another
draw of test points measures each class differently (with 150 points a class accuracy of 50%
has a binomial standard error of 4 points). Seed-to-seed standard deviations see only the first;
Wilson intervals see only the second.

:func:`compare_values` is the engine every comparison goes through (the audit's benchmarks,
``robustfair.study.inference``, the leaderboard): the effect with a hierarchical-bootstrap
interval (test points, then the runs or matched pairs with replacement), and a p-value for the
verdict that holds at the number of seeds: with fewer than 10 units at the top level an exact
randomisation test on the per-run values (:mod:`robustfair.metrics.exact`: sign-flip for
matched pairs, permutation otherwise) with its smallest attainable p-value, else the
bootstrap's. One-sided questions ("does the worst class rise?") take one-sided tests;
non-inferiority ("the average falls by less than m") is a one-sided test against ``-m``.
:func:`compare_runs` feeds it from audit reports (per-point outcomes);
:func:`condition_summary` gives one condition's mean of a measure with the same interval.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import RobustfairError
from .._formatting import format_p, interval, signed
from ._stats import (bootstrap_p_one_sided, hierarchical_bootstrap,
                     percentile_interval, point_replicates, seed_resampled_means)
from .exact import FEW_UNITS, permutation_test, sign_flip_test
from .measures import MEASURES, UNITLESS, ClassValues, get_measure
from .report import ClassReport

__all__ = ["Comparison", "Summary", "compare_runs", "compare_values", "condition_summary",
           "point_outcomes"]


def point_outcomes(reports: Sequence[ClassReport], metric: str = "robust_acc") -> tuple[np.ndarray, np.ndarray]:
    """(labels ``(N,)``, successes ``(runs, N)``) of reports audited on the same test points."""
    if not reports:
        raise RobustfairError("no runs to compare")
    y = reports[0].predictions["y_true"].to_numpy()
    rows = []
    for r in reports:
        if list(r.classes) != list(reports[0].classes):
            raise RobustfairError("the runs have different class lists")
        if not np.array_equal(r.predictions["y_true"].to_numpy(), y):
            raise RobustfairError("the runs were not audited on the same test points (labels "
                                  "differ point by point); they cannot be paired")
        if r.higher_is_better(r._check_metric(metric)) is False:
            raise RobustfairError(f"{metric!r} is not an accuracy; compare accuracies")
        hit, valid, unknown = r._outcomes(metric)
        if unknown.any() or not valid.all():
            raise RobustfairError(f"{metric!r} is unknown for some points of a run (skipped "
                                  f"attacks); audit with independent=True or compare robust_acc")
        rows.append(hit)
    return y, np.stack(rows)


def _statistic(measure: str, fraction: float):
    compute = get_measure(measure).compute

    def stat(acc: np.ndarray) -> np.ndarray:  # (B, runs, K) -> (B, runs)
        with np.errstate(divide="ignore", invalid="ignore"):
            return compute(ClassValues(acc, fraction=fraction))

    return stat


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b`` on ``measure`` of ``metric`` (each the mean over a condition's runs).

    ``lo``/``hi``: percentile interval over ``n_boot`` hierarchical-bootstrap replicates (seeds
    or matched pairs, and test points). ``p_value``: the verdict's p-value of "the difference
    is ``shift``" against ``alternative``, from ``test``: an exact randomisation test on the
    per-run values (:mod:`~robustfair.metrics.exact`, sign-flip when ``paired``, else
    two-sample permutation) when there are fewer than
    :data:`~robustfair.metrics.exact.FEW_UNITS` units at the top level, with ``p_min`` its
    smallest attainable value; else the bootstrap's (``p_min`` then its resolution 1/(1+B)).
    ``p_bootstrap`` is the bootstrap's p-value, ``p_exact`` the exact test's, whichever was
    used. ``welch_p``: Welch's t-test on the per-run values (seeds only), for reference.
    ``estimand`` says what is compared (e.g. each run's own worst class, or one class fixed
    in advance).
    """

    metric: str
    measure: str
    estimate: float
    lo: float
    hi: float
    p_value: float
    welch_p: float
    runs_a: int
    runs_b: int
    n_boot: int
    confidence: float
    test: str = "hierarchical bootstrap"
    alternative: str = "two-sided"
    p_min: float = math.nan
    p_bootstrap: float = math.nan
    p_exact: float = math.nan
    paired: bool = False
    shift: float = 0.0
    estimand: str = ""

    @property
    def n_units(self) -> int:
        """The number of top-level units: matched pairs, or the smaller side's runs."""
        return self.runs_a if self.paired else min(self.runs_a, self.runs_b)

    @property
    def exact(self) -> bool:
        return not self.test.startswith("hierarchical")

    def describe(self, scale: float | None = None, unit: str | None = None) -> str:
        """e.g. ``+6.1 points [+1.4, +11.0] (95% interval, 5 vs 5 seeds × test points); one-sided
        permutation p 0.012 (smallest attainable 0.004)``. By default in accuracy points, or
        as plain numbers for a unitless measure (:mod:`.measures`)."""
        unitless = self.measure in MEASURES and MEASURES[self.measure].unit == UNITLESS
        scale = scale if scale is not None else (1.0 if unitless else 100.0)
        unit = unit if unit is not None else ("" if unitless else " points")
        spans = (f"{self.runs_a} matched pairs" if self.paired
                 else f"{self.runs_a} vs {self.runs_b} seeds")
        sided = {"two-sided": "two-sided", "greater": "one-sided (a > b)",
                 "less": "one-sided (a < b)"}[self.alternative]
        against = f" against {signed(self.shift, scale=scale)}{unit}" if self.shift else ""
        digits = 3 if unit == "" else 1
        text = (f"{signed(self.estimate, scale=scale, digits=digits)}{unit} "
                f"{interval(self.lo, self.hi, scale=scale, digits=digits, sign=True)} "
                f"({self.confidence:.0%} interval over {spans} "
                f"× test points); {sided} {self.test.split(' (')[0]} p{against} "
                f"{format_p(self.p_value, self.p_min if self.exact else None)}")
        return text

    def as_row(self, comparison: str = "") -> dict:
        """One row of a ``comparisons.csv``: what the report prints, as numbers."""
        return {"comparison": comparison, "metric": self.metric, "measure": self.measure,
                "estimand": self.estimand, "estimate": self.estimate, "lo": self.lo,
                "hi": self.hi, "confidence": self.confidence, "p": self.p_value,
                "test": self.test, "alternative": self.alternative, "shift": self.shift,
                "p_min": self.p_min, "p_bootstrap": self.p_bootstrap, "p_exact": self.p_exact,
                "welch_p": self.welch_p, "n_units": self.n_units, "runs_a": self.runs_a,
                "runs_b": self.runs_b, "paired": self.paired, "n_boot": self.n_boot}


@dataclass(frozen=True)
class Summary:
    """One condition's mean over runs of a measure, with an interval over seeds and test points."""

    metric: str
    measure: str
    estimate: float
    lo: float
    hi: float
    seed_sd: float      # std (ddof 1) of the per-run values: the seed spread alone
    runs: int
    n_boot: int
    confidence: float


def _welch(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or len(y) < 2:
        return math.nan
    from scipy import stats

    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return 1.0 if x[0] == y[0] else 0.0
    with warnings.catch_warnings():  # near-identical values: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def compare_values(
    values_a: np.ndarray,
    values_b: np.ndarray,
    reps_a: np.ndarray,
    reps_b: np.ndarray,
    *,
    metric: str,
    measure: str,
    paired: bool = False,
    alternative: str = "two-sided",
    shift: float = 0.0,
    confidence: float = 0.95,
    estimand: str = "",
    rng: np.random.Generator | None = None,
) -> Comparison:
    """The one comparison engine: condition ``a`` against condition ``b`` from their per-run
    values as observed (``values_*``, shape ``(runs,)``) and over resamples of the test points
    (``reps_*``, shape ``(n_boot, runs)``; the study redraws class counts, the benchmarks
    resample points).

    The interval: the runs (``paired``: the pairs ``a[i]``, ``b[i]`` together) resampled with
    replacement on top of the test-point replicates, the run-level spread scaled by
    ``sqrt(n/(n-1))``. The verdict's p-value tests "a - b = ``shift``" against ``alternative``:
    with fewer than :data:`~robustfair.metrics.exact.FEW_UNITS` units at the top level an
    exact test on the per-run values (sign-flip if ``paired``, else permutation), else the
    bootstrap. A non-inferiority test ("a is no more than m below b") is ``alternative=
    "greater", shift=-m``.

    >>> rng = np.random.default_rng(0)
    >>> a, b = np.array([.15, .18, .15, .21, .19]), np.array([.11, .09, .09, .16, .14])
    >>> c = compare_values(a, b, a + rng.normal(0, .02, (500, 5)), b + rng.normal(0, .02, (500, 5)),
    ...                    metric="robust_acc", measure="worst", alternative="greater")
    >>> c.test, round(c.p_value, 4), round(c.p_min, 4)
    ('permutation (two-sample)', 0.0159, 0.004)
    """
    values_a, values_b = np.asarray(values_a, float), np.asarray(values_b, float)
    reps_a, reps_b = np.asarray(reps_a, float), np.asarray(reps_b, float)
    if paired and len(values_a) != len(values_b):
        raise RobustfairError("paired conditions need as many runs on each side")
    rng = rng if rng is not None else np.random.default_rng(0)
    if paired:
        diff = seed_resampled_means(reps_a - reps_b, rng)
    else:
        diff = seed_resampled_means(reps_a, rng) - seed_resampled_means(reps_b, rng)
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(diff, [50 * (1 - confidence), 50 * (1 + confidence)])
    p_boot = bootstrap_p_one_sided(diff, alternative, shift)
    units = len(values_a) if paired else min(len(values_a), len(values_b))
    exact_test = sign_flip_test if paired else permutation_test
    ex = exact_test(values_a, values_b, alternative=alternative, shift=shift)
    if units < FEW_UNITS:
        test, p, p_min = ex.test, ex.p_value, ex.p_min
    else:
        test, p = "hierarchical bootstrap", p_boot
        p_min = (1.0 if alternative != "two-sided" else 2.0) / (1 + diff.shape[0])
    return Comparison(metric, measure, float(values_a.mean() - values_b.mean()), float(lo),
                      float(hi), float(p), _welch(values_a, values_b), len(values_a),
                      len(values_b), int(diff.shape[0]), confidence, test, alternative,
                      float(p_min), float(p_boot), float(ex.p_value), paired, float(shift),
                      estimand)


def compare_runs(
    a: Sequence[ClassReport],
    b: Sequence[ClassReport],
    *,
    metric: str = "robust_acc",
    measure: str = "worst",
    fraction: float = 0.2,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    alternative: str = "two-sided",
    shift: float = 0.0,
    paired: bool = False,
    fixed_class: str | None = None,
) -> Comparison:
    """Condition ``a`` against condition ``b``: the difference of the mean over runs of
    ``measure`` (``"worst"``, ``"mean"``, ``"std"``, ...: see ``ClassReport.discrepancy``) of the
    class-wise ``metric``, with a hierarchical-bootstrap interval and the verdict's p-value
    (:func:`compare_values`: an exact test with fewer than 10 runs a side).

    The worst class has two estimands: ``measure="worst"`` takes each run's own worst class
    (re-selected in every run and every resample: "how low is the lowest class"); with
    ``fixed_class`` the accuracy of that one class is compared (chosen in advance, e.g. the
    baseline's validation-worst class: "did this class rise"), which has no selection bias.

    Every run of both conditions must have been audited on the same test points, in the same
    order (the runs are paired by test point); ``paired``: ``a[i]`` and ``b[i]`` are also
    matched runs (same seed and settings but one).
    """
    y, ca = point_outcomes(a, metric)
    yb, cb = point_outcomes(b, metric)
    if not np.array_equal(y, yb) or list(a[0].classes) != list(b[0].classes):
        raise RobustfairError("the two conditions were not audited on the same test points")
    if fixed_class is not None:
        classes = [str(c) for c in a[0].classes]
        if str(fixed_class) not in classes:
            raise RobustfairError(f"unknown class {fixed_class!r}; the classes are: "
                                  f"{', '.join(classes)}")
        column = int(np.searchsorted(np.unique(y), classes.index(str(fixed_class))))

        def stat(acc: np.ndarray) -> np.ndarray:
            return acc[..., column]
        estimand = f"class {fixed_class} (fixed in advance)"
    else:
        stat = _statistic(measure, fraction)
        estimand = "each run's own worst class" if measure == "worst" else measure
    rng = np.random.default_rng(seed)
    observed, reps = point_replicates({"a": ca, "b": cb}, y, stat, n_boot=n_boot, rng=rng)
    return compare_values(observed["a"], observed["b"], reps["a"], reps["b"], metric=metric,
                          measure=measure if fixed_class is None else "class",
                          paired=paired, alternative=alternative, shift=shift,
                          confidence=confidence, estimand=estimand, rng=rng)


def condition_summary(
    reports: Sequence[ClassReport],
    *,
    metric: str = "robust_acc",
    measure: str = "worst",
    fraction: float = 0.2,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Summary:
    """The mean over runs of ``measure`` with a hierarchical-bootstrap interval (seeds and test
    points) and, beside it, the seed standard deviation alone."""
    y, c = point_outcomes(reports, metric)
    stat = _statistic(measure, fraction)
    reps = hierarchical_bootstrap({"x": c}, y, stat, n_boot=n_boot, seed=seed)
    lo, hi = percentile_interval(reps["x"], confidence)
    # the seed-level correction can stretch an interval past what the measure can take
    low, high = get_measure(measure).bounds
    lo, hi = float(np.clip(lo, low, high)), float(np.clip(hi, low, high))
    values = reps["_runs"]["x"]
    sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return Summary(metric, measure, reps["_point"]["x"], float(lo), float(hi), sd, len(c),
                   n_boot, confidence)
