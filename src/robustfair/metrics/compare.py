"""Tests between training conditions that count both sources of noise: seeds and test points.

A condition (a training recipe) is run with several seeds; every run is audited on the same
test points. How far apart two conditions are on some class measure (say the worst class's
robust accuracy) is uncertain for two reasons: another seed trains another model, and another
draw of test points measures each class differently (with 150 points a class accuracy of 50%
has a binomial standard error of 4 points). Seed-to-seed standard deviations see only the first;
Wilson intervals see only the second. :func:`compare_runs` resamples both — a hierarchical
bootstrap: per replicate, one stratified resample of the test points shared by every run (the
runs are paired by test point, as they were evaluated), then the runs of each condition with
replacement — and reports the effect with a percentile interval and the matching two-sided
p-value. :func:`condition_summary` does the same for one condition's mean of a measure, so that
a "±" can be replaced by an interval that says what it spans.

With 3-5 seeds the seed level of a bootstrap is rough: resampling n values with replacement
understates their variance by (n-1)/n, so the seed-level spread is scaled back up by
sqrt(n/(n-1)). Still, a bootstrap cannot widen its interval the way a t-distribution with few
degrees of freedom does: p-values near 0.05 from 3-5 seeds deserve more seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import RobustfairError
from ._stats import (MEASURES, bootstrap_p_value, discrepancy_measures, hierarchical_bootstrap,
                     percentile_interval)
from .report import ClassReport

__all__ = ["Comparison", "Summary", "compare_runs", "condition_summary", "point_outcomes"]


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
    if measure not in MEASURES:
        raise RobustfairError(f"unknown measure {measure!r}; choose from: {', '.join(MEASURES)}")

    def stat(acc: np.ndarray) -> np.ndarray:  # (B, runs, K) -> (B, runs)
        return discrepancy_measures(acc, fraction=fraction)[measure]

    return stat


# what each measure of accuracies can take (for clipping intervals)
_RANGES = {"mean": (0.0, 1.0), "worst": (0.0, 1.0), "worst_fraction_mean": (0.0, 1.0),
           "difference": (0.0, 1.0), "ratio": (0.0, 1.0), "std": (0.0, 0.5),
           "normalized_std": (0.0, math.inf), "worst_deviation": (-1.0, 0.0)}


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b`` on ``measure`` of ``metric`` (each the mean over a condition's runs).

    ``lo``/``hi``: percentile interval over ``n_boot`` hierarchical-bootstrap replicates (seeds
    and test points); ``p_value``: two-sided, "the difference is zero" (< 0.05 exactly when the
    95% interval excludes 0); ``welch_p``: Welch's t-test on the per-run values, which sees the
    seeds only, for reference.
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

    def describe(self, scale: float = 100.0, unit: str = " points") -> str:
        """e.g. ``+7.1 points [1.2, 12.9], p 0.02 (5 vs 5 seeds, hierarchical bootstrap)``."""
        return (f"{scale * self.estimate:+.1f}{unit} [{scale * self.lo:+.1f}, "
                f"{scale * self.hi:+.1f}], p {_p(self.p_value)} ({self.runs_a} vs {self.runs_b} "
                f"seeds × resampled test points)")


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


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.2g}")


def _welch(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or len(y) < 2:
        return math.nan
    from scipy import stats

    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return 1.0 if x[0] == y[0] else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


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
) -> Comparison:
    """Condition ``a`` against condition ``b``: the difference of the mean over runs of
    ``measure`` (``"worst"``, ``"mean"``, ``"std"``, ...: see ``ClassReport.discrepancy``) of the
    class-wise ``metric``, with a hierarchical-bootstrap interval and p-value.

    Every run of both conditions must have been audited on the same test points, in the same
    order (the runs are paired by test point).
    """
    y, ca = point_outcomes(a, metric)
    yb, cb = point_outcomes(b, metric)
    if not np.array_equal(y, yb) or list(a[0].classes) != list(b[0].classes):
        raise RobustfairError("the two conditions were not audited on the same test points")
    stat = _statistic(measure, fraction)
    reps = hierarchical_bootstrap({"a": ca, "b": cb}, y, stat, n_boot=n_boot, seed=seed)
    diff = reps["a"] - reps["b"]
    lo, hi = percentile_interval(diff, confidence)
    return Comparison(metric, measure, reps["_point"]["a"] - reps["_point"]["b"], lo, hi,
                      bootstrap_p_value(diff),
                      _welch(reps["_runs"]["a"], reps["_runs"]["b"]), len(ca), len(cb), n_boot,
                      confidence)


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
    low, high = _RANGES.get(measure, (-math.inf, math.inf))
    lo, hi = float(np.clip(lo, low, high)), float(np.clip(hi, low, high))
    values = reps["_runs"]["x"]
    sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return Summary(metric, measure, reps["_point"]["x"], float(lo), float(hi), sd, len(c),
                   n_boot, confidence)
