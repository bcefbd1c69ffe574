"""The statistics behind a :class:`~robustfair.metrics.ClassReport`, on plain numpy arrays.

* :func:`wilson_interval`: a confidence interval for a proportion that stays inside [0, 1] and
  behaves for small classes and accuracies near 0 or 1 (where the normal approximation fails).
* :func:`discrepancy_measures`: the scalar summaries of how unequal the classes are, computed
  row-wise so that one call handles the point estimate and all bootstrap replicates at once.
* :func:`stratified_bootstrap`: per-class accuracies of bootstrap resamples drawn within each
  class.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

# Names of the scalar discrepancy measures, in the order they are reported.
MEASURES = (
    "mean",
    "worst",
    "difference",
    "ratio",
    "std",
    "normalized_std",
    "worst_fraction_mean",
    "worst_deviation",
)


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


def worst_count(num_classes: int, fraction: float) -> int:
    """How many classes make up "the worst ``fraction``": ``ceil(fraction * K)``, at least one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return max(1, math.ceil(fraction * num_classes - 1e-9))


def discrepancy_measures(
    values: np.ndarray, *, higher_is_better: bool = True, fraction: float = 0.2
) -> dict[str, np.ndarray]:
    """Scalar class-discrepancy measures of each row of ``values`` (shape ``(..., K)``).

    "worst" is the minimum when higher is better (accuracies) and the maximum otherwise
    (attack success rates). ``std`` is the population standard deviation over classes
    (``ddof=0``: the classes are the whole population, not a sample of it).
    """
    v = np.asarray(values, dtype=float)
    k = v.shape[-1]
    ordered = np.sort(v, axis=-1)  # ascending
    if not higher_is_better:
        ordered = ordered[..., ::-1]
    m = worst_count(k, fraction)
    mean = v.mean(axis=-1)
    worst = ordered[..., 0]
    lo, hi = v.min(axis=-1), v.max(axis=-1)
    std = v.std(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = lo / hi
        normalized_std = std / mean
    return {
        "mean": mean,
        "worst": worst,
        "difference": hi - lo,
        "ratio": ratio,
        "std": std,
        "normalized_std": normalized_std,
        "worst_fraction_mean": ordered[..., :m].mean(axis=-1),
        "worst_deviation": worst - mean,
    }


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
