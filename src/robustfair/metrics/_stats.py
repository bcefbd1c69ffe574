"""The statistics behind a :class:`~robustfair.metrics.ClassReport`, on plain numpy arrays.

* :func:`wilson_interval`: a confidence interval for a proportion that stays inside [0, 1] and
  behaves for small classes and accuracies near 0 or 1 (where the normal approximation fails).
* :func:`noise_floor` and :func:`discrepancy_table`: the discrepancy measures (the table of
  them is :mod:`.measures`) with intervals and what sampling noise alone would give.
* :func:`stratified_bootstrap`: per-class accuracies of bootstrap resamples drawn within each
  class.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from .measures import MEASURES, discrepancy_measures, gap_direction


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(
    successes: np.ndarray | float, n: np.ndarray | float, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for ``successes`` out of ``n`` (element-wise; NaN where ``n == 0``).

    >>> lo, hi = wilson_interval(8, 10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.4902, 0.9433)
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _z(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return lo, hi


def stratified_bootstrap(
    successes: np.ndarray, n: np.ndarray, n_boot: int, seed: int = 0
) -> np.ndarray:
    """Per-class proportions of ``n_boot`` bootstrap resamples drawn within each class.

    Resampling the ``n_c`` points of class ``c`` with replacement and counting the successes
    gives a Binomial(``n_c``, ``k_c / n_c``) count, so we draw those counts directly: the same
    distribution as resampling indices, in O(``n_boot`` × K) instead of O(``n_boot`` × N).
    Returns an array of shape ``(n_boot, K)``.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=np.int64)
    if np.any(n <= 0):
        raise ValueError("every class needs at least one point to bootstrap")
    rng = np.random.default_rng(seed)
    counts = rng.binomial(n, k / n, size=(n_boot, len(n)))
    return counts / n


# ---------------------------------------------------------------------------- noise floor
def noise_floor(
    successes: np.ndarray,
    n: np.ndarray,
    *,
    higher_is_better: bool = True,
    fraction: float = 0.2,
    n_sim: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What each discrepancy measure looks like when the classes do NOT differ, and how
    surprising the observed value is under that hypothesis.

    ``successes`` and ``n`` have shape ``(..., K)`` (leading axes: independent reports, e.g. the
    draws of a calibration check). Under "no gap" every class has the same true accuracy,
    estimated by the pooled rate ``sum(successes) / sum(n)``; each class's count is then
    Binomial(``n_c``, pooled) — a parametric bootstrap that keeps every class's size. For each
    measure this returns ``(expected, p_value)``, each of shape ``(...)``:

    * ``expected``: the measure's mean over ``n_sim`` no-gap draws (e.g. the std of class
      accuracies that sampling noise alone produces, or the worst class's shortfall that picking
      the minimum of K noisy estimates produces);
    * ``p_value``: the share of no-gap draws with a gap wider than observed, ties counted half
      (the mid-p value: class counts are integers, so ties are common), as
      ``(1 + wider) / (1 + n_sim)`` so it is never 0; NaN for the mean (not a gap measure).

    Small p: the gap exceeds sampling noise. The draws are vectorised: memory is
    ``n_sim × K`` per report.

    >>> exp, p = noise_floor(np.array([45, 45, 45]), np.array([50, 50, 50]))["std"]
    >>> float(exp) > 0, float(p) > 0.9   # equal observed accuracies: no evidence of a gap
    (True, True)
    """
    k = np.asarray(successes, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), k.shape)
    if np.any(n <= 0):
        raise ValueError("every class needs at least one point")
    if n_sim < 1:
        raise ValueError(f"n_sim must be at least 1, got {n_sim}")
    pooled = k.sum(axis=-1, keepdims=True) / n.sum(axis=-1, keepdims=True)  # (..., 1)
    rng = np.random.default_rng(seed)
    shape = (n_sim,) + k.shape
    sims = rng.binomial(n, np.broadcast_to(pooled, k.shape), size=shape) / n  # (n_sim, ..., K)
    observed = discrepancy_measures(k / n, higher_is_better=higher_is_better, fraction=fraction)
    null = discrepancy_measures(sims, higher_is_better=higher_is_better, fraction=fraction)
    out = {}
    for name in MEASURES:
        direction = gap_direction(name, higher_is_better)
        with np.errstate(invalid="ignore"):
            expected = np.nanmean(null[name], axis=0) if np.isfinite(null[name]).any() else (
                np.full(k.shape[:-1], np.nan))
            if direction == 0:
                p = np.full(k.shape[:-1], np.nan)
            else:
                # counts are integers, so no-gap draws often tie with the observed value:
                # ties count half (the mid-p value), which keeps the p-value uniform under
                # "no gap" where counting them whole would make it conservative
                obs, sim = observed[name], null[name]
                if MEASURES[name].level:
                    # measured from each draw's own class mean: the level of the accuracies
                    # varies between no-gap draws, but is no part of the gap
                    obs, sim = obs - observed["mean"], sim - null["mean"]
                sign = 1.0 if direction > 0 else -1.0
                delta = sign * (sim - obs)  # > 0: a wider gap than observed
                tol = 1e-9
                ties = (np.abs(delta) <= tol).sum(axis=0)
                wider = (delta > tol).sum(axis=0) + 0.5 * ties
                # a draw where the measure is undefined (ratio 0/0) is not "as wide"
                p = (1.0 + wider) / (1.0 + n_sim)
                # every draw ties (all classes at 0% or 100%): no gap is possible, p is 1
                p = np.where(ties == n_sim, 1.0, p)
        out[name] = (np.asarray(expected, dtype=float), np.asarray(p, dtype=float))
    return out


def worst_class_interval(successes: np.ndarray, n: np.ndarray, *, higher_is_better: bool = True,
                         confidence: float = 0.95) -> tuple[float, float]:
    """An interval for the TRUE worst-class accuracy (the lowest of the K true class
    accuracies; the highest for a rate where lower is better): simultaneous Wilson intervals,
    each at ``1 - (1 - confidence) / K`` (Bonferroni across the K classes), so that all K hold
    together with probability >= ``confidence``; then the true minimum lies between the lowest
    lower bound and the lowest upper bound. It covers whatever the profile: one class far
    below the rest, several tied at the bottom, all equal (where the observed minimum is
    biased low and a bootstrap interval of it misses the truth almost always).

    >>> lo, hi = worst_class_interval(np.array([90, 90, 90]), np.array([150, 150, 150]))
    >>> round(lo, 3), round(hi, 3)   # three classes tied at 60%
    (0.502, 0.69)
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    each = 1.0 - (1.0 - confidence) / max(1, k.size)
    lo, hi = wilson_interval(k, n, each)
    if higher_is_better:
        return float(np.min(lo)), float(np.min(hi))
    return float(np.max(lo)), float(np.max(hi))


def deficit_power(successes: np.ndarray, n: np.ndarray, *, deficit: float = 0.10,
                  measure: str = "std", alpha: float = 0.05, higher_is_better: bool = True,
                  n_sim: int = 200, n_null: int = 500, seed: int = 0) -> float:
    """Power: the share of test sets of these class sizes in which a real ``deficit`` of ONE
    class (``deficit`` below the others, all others at the pooled accuracy) would give
    ``p_noise < alpha`` on ``measure``. Printed beside a large ``p_noise``, it says what "no
    evidence of a gap" could have found (at 54 points a class, a 10-point deficit is found in
    only 12-33% of test sets).

    >>> small = deficit_power(np.full(10, 32), np.full(10, 54), seed=1)
    >>> large = deficit_power(np.full(10, 900), np.full(10, 1500), seed=1)
    >>> small < 0.5 < large
    True
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=np.int64)
    pooled = k.sum() / n.sum()
    acc = np.full(k.shape, pooled)
    low = int(np.argsort(n)[len(n) // 2])       # a class of typical size
    acc[low] = np.clip(pooled - deficit if higher_is_better else pooled + deficit, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, acc, size=(n_sim,) + k.shape)
    p = noise_floor(draws, n, higher_is_better=higher_is_better, n_sim=n_null,
                    seed=seed + 1)[measure][1]
    return float(np.mean(p < alpha))


def discrepancy_table(successes: np.ndarray, n: np.ndarray, *, higher_is_better: bool, n_boot: int,
                      seed: int, fraction: float, confidence: float) -> pd.DataFrame:
    """Every measure of :data:`MEASURES` for per-class counts (each class with a point): its
    value, a stratified-bootstrap interval ``lo``/``hi`` and ``bias``, and its
    :func:`noise_floor` (``noise_floor``, ``p_noise``); ``n_boot`` draws serve both bootstraps.
    :meth:`ClassReport.discrepancy` documents the columns."""
    point = discrepancy_measures(successes / n, higher_is_better=higher_is_better, fraction=fraction)
    boot = stratified_bootstrap(successes, n, n_boot, seed)
    reps = discrepancy_measures(boot, higher_is_better=higher_is_better, fraction=fraction)
    floor = noise_floor(successes, n, higher_is_better=higher_is_better, fraction=fraction,
                        n_sim=n_boot, seed=seed + 1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    rows = []
    for name in MEASURES:
        r = reps[name]
        with np.errstate(all="ignore"):
            finite = np.isfinite(r).any()
            lo, hi = (np.nanpercentile(r, [tail, 100.0 - tail]) if finite
                      else (math.nan, math.nan))
            bias = float(np.nanmean(r)) - float(point[name]) if finite else math.nan
        if name == "worst":
            # the bootstrap's percentiles of the observed minimum are no interval for the true
            # worst class (with tied classes they miss it nearly always): simultaneous bounds
            lo, hi = worst_class_interval(successes, n, higher_is_better=higher_is_better,
                                          confidence=confidence)
        expected, p_value = floor[name]
        rows.append((float(point[name]), float(lo), float(hi), bias, float(expected),
                     float(p_value)))
    return pd.DataFrame(rows, index=pd.Index(list(MEASURES), name="measure"),
                        columns=["value", "lo", "hi", "bias", "noise_floor", "p_noise"])


# ------------------------------------------------------------------ tests between conditions
def class_resample_weights(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each class: (its point indices, ``n_boot × n_c`` multinomial counts of how often each
    point is drawn when the class's points are resampled with replacement)."""
    y = np.asarray(y)
    out = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        m = len(members)
        # draw indices and count them per replicate (one bincount over offset indices: much
        # faster than rng.multinomial, the same distribution)
        draws = rng.integers(0, m, size=(n_boot, m)) + m * np.arange(n_boot)[:, None]
        counts = np.bincount(draws.ravel(), minlength=n_boot * m).reshape(n_boot, m)
        out.append((members, counts))
    return out


def seed_resampled_means(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means over runs of ``values`` ``(n_boot, runs)`` after resampling the runs with
    replacement in every replicate, with the seed-level spread scaled by ``sqrt(n / (n - 1))``:
    resampling n values understates their variance by (n - 1) / n, which matters with 3-5
    seeds. With one run there is no seed level to resample: the plain values come back."""
    n_boot, runs = values.shape
    if runs < 2:
        return values[:, 0].copy()
    pick = rng.integers(0, runs, size=(n_boot, runs))
    centre = values.mean(axis=1)
    resampled = np.take_along_axis(values, pick, axis=1).mean(axis=1)
    return centre + math.sqrt(runs / (runs - 1)) * (resampled - centre)


def point_replicates(
    correct: dict[str, np.ndarray],
    y: np.ndarray,
    measure,
    *,
    n_boot: int = 2000,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per run, ``measure`` as observed ``(runs,)`` and over ``n_boot`` stratified resamples of
    the test points ``(n_boot, runs)``, ONE resample shared by every run and condition (the runs
    are paired by test point, as they were evaluated). ``correct`` maps a condition to a
    boolean array ``(runs, N)``; ``measure(acc)`` maps per-class accuracies ``(B, runs, K)`` to
    ``(B, runs)``. Returns ``(observed, replicates)``, each by condition."""
    y = np.asarray(y)
    weights = class_resample_weights(y, n_boot, rng)
    classes = np.unique(y)
    observed: dict = {}
    reps: dict = {}
    for name, c in correct.items():
        c = np.asarray(c, dtype=float)
        if c.ndim != 2 or c.shape[1] != len(y):
            raise ValueError(f"{name}: correct must have shape (runs, {len(y)}), got {c.shape}")
        runs = c.shape[0]
        acc0 = np.stack([c[:, y == k].mean(axis=1) for k in classes], axis=-1)  # runs × K
        observed[name] = np.asarray(measure(acc0[None])[0], dtype=float)
        acc = np.empty((n_boot, runs, len(classes)))
        for j, (members, counts) in enumerate(weights):
            acc[:, :, j] = (counts @ c[:, members].T) / len(members)   # n_boot × runs
        reps[name] = np.asarray(measure(acc), dtype=float)
    return observed, reps


def hierarchical_bootstrap(
    correct: dict[str, np.ndarray],
    y: np.ndarray,
    measure,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of "the mean over runs of ``measure``" over both sources of noise in
    a seeded comparison.

    ``correct`` maps a condition's name to a boolean array ``(runs, N)``: whether each of its
    runs (one per training seed) got each of the N test points right; every run is evaluated
    on the same test points ``y`` (labels, length N). One replicate resamples

    1. the test points, within each class (class sizes fixed), ONE draw shared by every run and
       condition (:func:`point_replicates`);
    2. the runs of each condition, with replacement (seed-to-seed variation), the seed-level
       spread corrected for the small number of runs (:func:`seed_resampled_means`).

    Returns ``{name: replicates}`` plus, under ``"_point"``, ``{name: the mean over runs as
    observed}`` and, under ``"_runs"``, ``{name: per-run values as observed}``.

    With fewer than ~10 runs a side the seed level is rough (anti-conservative: a paired
    bootstrap over 4 pairs rejects ~14% of the time at nominal 5%); the comparisons report an
    exact test for their verdicts then (:mod:`robustfair.metrics.exact`).
    """
    rng = np.random.default_rng(seed)
    per_run, per_run_reps = point_replicates(correct, y, measure, n_boot=n_boot, rng=rng)
    reps: dict = {name: seed_resampled_means(r, rng) for name, r in per_run_reps.items()}
    reps["_point"] = {name: float(v.mean()) for name, v in per_run.items()}
    reps["_runs"] = per_run
    return reps


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap ``replicates``.

    >>> [round(v, 9) for v in percentile_interval(np.arange(101.0), 0.95)]
    [2.5, 97.5]
    """
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "the effect is zero" from bootstrap replicates of the effect: twice
    the smaller tail beyond 0, counted ``(1 + tail) / (1 + B)`` (the inversion of the percentile
    interval: p < 0.05 exactly when the 95% percentile interval excludes 0).

    >>> bootstrap_p_value(np.array([1.0, 2.0, 3.0, -1.0]))
    0.8
    """
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan
    below, above = np.sum(r <= 0), np.sum(r >= 0)
    return float(min(1.0, 2.0 * (1.0 + min(below, above)) / (1.0 + r.size)))


def bootstrap_p_one_sided(replicates: np.ndarray, alternative: str, shift: float = 0.0) -> float:
    """p-value of "the effect is ``shift``" against ``alternative`` ("greater": the effect is
    above ``shift``; "less": below; "two-sided": :func:`bootstrap_p_value`), from bootstrap
    replicates of the effect: the share of replicates on the null side, ``(1 + k) / (1 + B)``.

    >>> bootstrap_p_one_sided(np.array([1.0, 2.0, 3.0, -1.0]), "greater")
    0.4
    """
    r = np.asarray(replicates, dtype=float) - shift
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan
    if alternative == "two-sided":
        return bootstrap_p_value(r)
    null_side = np.sum(r <= 0) if alternative == "greater" else np.sum(r >= 0)
    return float(min(1.0, (1.0 + null_side) / (1.0 + r.size)))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of the last axis of ``a`` and ``b`` (row-wise for stacks of vectors);
    NaN where either vector is all zeros or has a missing value. The one copy used by
    ``profile_similarity``, the study's matched-pair similarities and their bootstraps.

    >>> round(cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 4)
    0.7071
    >>> np.round(cosine(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((2, 2))), 4).tolist()
    [0.7071, nan]
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(all="ignore"):
        out = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    out = np.where(np.isfinite(out), out, np.nan)
    return float(out) if np.ndim(out) == 0 else out


def holm(p_values: "list[float] | np.ndarray") -> np.ndarray:
    """Holm's step-down adjustment of several p-values (family-wise error control; NaN kept).

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def shifted_interval(replicates: np.ndarray, estimate: float, confidence: float = 0.95,
                     bounds: tuple[float, float] = (-1.0, 1.0)) -> tuple[float, float]:
    """Percentile interval of bootstrap ``replicates`` moved so that their median sits on the
    ``estimate``, clipped to ``bounds``. For statistics that resampling pushes one way — each
    resample adds test-point noise, which pulls a correlation of noisy profiles toward 0 — the
    plain percentile interval can miss the estimate altogether; this one keeps the spread of
    the replicates and removes their shift.

    >>> r = np.linspace(0.0, 0.5, 101)          # every replicate below the estimate 0.6
    >>> lo, hi = shifted_interval(r, 0.6)       # (a plain 95% interval: 0.0125 to 0.4875)
    >>> round(lo, 4), round(hi, 4)
    (0.3625, 0.8375)
    """
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, median, hi = np.percentile(r, [tail, 50.0, 100.0 - tail])
    shift = estimate - median
    return (float(np.clip(lo + shift, *bounds)), float(np.clip(hi + shift, *bounds)))
