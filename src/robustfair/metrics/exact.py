"""Exact tests for comparisons that rest on a few top-level units (seeds, or matched pairs).

A bootstrap over 3-5 seeds cannot widen its interval the way a small-sample test must: under
no effect a paired bootstrap over 4 pairs rejects some 14% of the time at nominal 5%. Where a
comparison has fewer than :data:`FEW_UNITS` units at its top level, its verdict comes from an
exact randomisation test on the per-unit values instead:

* :func:`sign_flip_test` when the runs are matched (pair ``i`` of ``a`` with pair ``i`` of
  ``b``: same seed, same settings but one): under "no effect" each pair's difference is as
  likely positive as negative, so all ``2**n`` sign patterns are equally likely;
* :func:`permutation_test` when they are not: under "no effect" the ``n_a + n_b`` values are
  exchangeable, so all ``C(n_a + n_b, n_a)`` splits are equally likely.

Both enumerate every arrangement (exact) up to :data:`MAX_EXACT` of them, and draw that many
at random beyond. An exact test cannot give a p-value below one arrangement in all of them:
``p_min`` says what that floor is (two-sided with 4 pairs: 2/16 = 0.125), so a p-value is read
against what the design could have shown. The tests condition on the test points: the per-run
values are taken as measured (the bootstrap interval beside them counts the test-point noise).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ALTERNATIVES", "FEW_UNITS", "ExactTest", "permutation_test", "sign_flip_test"]

FEW_UNITS = 10          # below this many top-level units, verdicts use an exact test
MAX_EXACT = 200_000     # arrangements enumerated before switching to random ones
ALTERNATIVES = ("two-sided", "greater", "less")
_TOL = 1e-12


@dataclass(frozen=True)
class ExactTest:
    """The result of a randomisation test of "``a`` minus ``b`` is ``shift``"."""

    test: str             # "sign-flip (paired)" or "permutation (two-sample)"
    alternative: str      # "two-sided", "greater" (a - b > shift) or "less"
    estimate: float       # mean difference (paired) or difference of means
    p_value: float
    p_min: float          # the smallest p-value this design can give
    n_units: int          # pairs, or the smaller side's runs
    arrangements: int     # how many arrangements the p-value counts over
    exact: bool           # every arrangement enumerated (else a random sample of them)


def _check(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _tail(null: np.ndarray, observed: float, alternative: str, centre: float = 0.0) -> int:
    """How many null statistics are at least as extreme as the observed one."""
    if alternative == "greater":
        return int(np.sum(null >= observed - _TOL))
    if alternative == "less":
        return int(np.sum(null <= observed + _TOL))
    return int(np.sum(np.abs(null - centre) >= abs(observed - centre) - _TOL))


def sign_flip_test(a: np.ndarray, b: np.ndarray, *, alternative: str = "two-sided",
                   shift: float = 0.0, seed: int = 0) -> ExactTest:
    """Paired sign-flip test of ``mean(a - b) = shift`` (``a[i]`` matched with ``b[i]``).

    >>> t = sign_flip_test([0.3, 0.4, 0.5, 0.6], [0.1, 0.2, 0.2, 0.3], alternative="greater")
    >>> t.p_value, t.p_min    # all four pairs positive: 1 of 16 sign patterns is as extreme
    (0.0625, 0.0625)
    """
    _check(alternative)
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float) - shift
    if d.ndim != 1 or len(d) < 1 or not np.isfinite(d).all():
        raise ValueError("sign_flip_test needs matched, finite per-unit values")
    n = len(d)
    total = 2 ** n
    exact = total <= MAX_EXACT
    if exact:
        signs = 1.0 - 2.0 * ((np.arange(total)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(MAX_EXACT, n))
    null = signs @ d / n
    observed = float(d.mean())
    hits = _tail(null, observed, alternative)
    count = len(null)
    p = hits / count if exact else (1 + hits) / (1 + count)
    floor = (1.0 if alternative != "two-sided" else 2.0) / total if exact else 1 / (1 + count)
    return ExactTest("sign-flip (paired)", alternative, observed + shift, float(min(1.0, p)),
                     float(min(1.0, floor)), n, count, exact)


def permutation_test(a: np.ndarray, b: np.ndarray, *, alternative: str = "two-sided",
                     shift: float = 0.0, seed: int = 0) -> ExactTest:
    """Two-sample permutation test of ``mean(a) - mean(b) = shift`` (unmatched runs).

    >>> t = permutation_test([0.3, 0.4, 0.5], [0.1, 0.2, 0.2], alternative="greater")
    >>> round(t.p_value, 3), round(t.p_min, 3)   # the best split of 20: p 1/20
    (0.05, 0.05)
    """
    _check(alternative)
    x = np.asarray(a, dtype=float) - shift
    y = np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or len(x) < 1 or len(y) < 1:
        raise ValueError("permutation_test needs at least one value on each side")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("permutation_test needs finite values")
    pooled = np.concatenate([x, y])
    na, n = len(x), len(pooled)
    total = math.comb(n, na)
    exact = total <= MAX_EXACT
    if exact:
        picks = np.array(list(itertools.combinations(range(n), na)), dtype=np.int64)
        in_a = np.zeros((len(picks), n), dtype=bool)
        np.put_along_axis(in_a, picks, True, axis=1)
    else:
        rng = np.random.default_rng(seed)
        in_a = np.argsort(rng.random((MAX_EXACT, n)), axis=1) < na
    sum_a = in_a @ pooled
    null = sum_a / na - (pooled.sum() - sum_a) / (n - na)
    observed = float(x.mean() - y.mean())
    # a two-sided test measures |difference| from what no effect gives (0)
    hits = _tail(null, observed, alternative)
    count = len(null)
    p = hits / count if exact else (1 + hits) / (1 + count)
    symmetric = na == n - na and alternative == "two-sided"
    floor = (2.0 if symmetric else 1.0) / total if exact else 1 / (1 + count)
    return ExactTest("permutation (two-sample)", alternative, observed + shift,
                     float(min(1.0, p)), float(min(1.0, floor)), min(na, n - na), count, exact)
