"""How alike two models' class profiles are: :func:`profile_similarity` (the paper's cosine)
and :func:`profile_similarities` (cosine and centred correlation, with bootstrap intervals)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import RobustfairError
from ._stats import class_resample_weights, cosine, shifted_interval, stratified_bootstrap
from .report import ClassReport

__all__ = ["profile_similarities", "profile_similarity"]


def profile_similarity(report_a: ClassReport, report_b: ClassReport, metric: str = "robust_acc") -> float:
    """Cosine similarity of two reports' class-wise ``metric`` vectors (same classes required).

    The paper's measure of how alike two models' per-class profiles are: 1 means the same shape.
    It saturates near 1 when every class is well above 0; :func:`profile_similarities` gives
    the centred correlation beside it, both with intervals.
    """
    if list(report_a.classes) != list(report_b.classes):
        raise RobustfairError("the two reports have different class lists; profiles cannot be compared")
    a = report_a.by_class[report_a._check_metric(metric)].to_numpy(dtype=float)
    b = report_b.by_class[report_b._check_metric(metric)].to_numpy(dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise RobustfairError(f"{metric!r} is missing for some class in one of the reports")
    if not (a.any() and b.any()):
        raise RobustfairError(f"{metric!r} is zero for every class in one report; cosine is undefined")
    return cosine(a, b)


def profile_similarities(report_a: ClassReport, report_b: ClassReport, metric: str = "robust_acc",
                         *, n_boot: int = 1000, seed: int = 0,
                         confidence: float = 0.95) -> pd.DataFrame:
    """Cosine similarity AND centred correlation (Pearson r) of two reports' class profiles,
    each with a bootstrap interval over test points.

    The cosine of two accuracy vectors is near 1 whenever every class is well above 0 (two
    standard models: 0.999), whatever the pattern; Pearson's r asks whether the same classes
    are above and below the mean. Reports audited on the same points (same ``y_true``, in
    order) are resampled with one shared draw of points per replicate (paired); otherwise each
    report's classes are resampled on their own. The intervals are percentile intervals
    shifted onto the estimate (resampling adds noise, which pulls a correlation toward 0).
    Rows ``cosine`` and ``pearson``; columns ``value``, ``lo``, ``hi``.
    """
    profile_similarity(report_a, report_b, metric)  # the same checks
    if n_boot < 1:
        raise RobustfairError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    ya = report_a.predictions["y_true"].to_numpy()
    yb = report_b.predictions["y_true"].to_numpy()
    hit_a, _, unknown_a = report_a._outcomes(metric)
    hit_b, _, unknown_b = report_b._outcomes(metric)
    k = report_a.num_classes
    if np.array_equal(ya, yb) and not unknown_a.any() and not unknown_b.any():
        acc = np.zeros((n_boot, 2, k))
        for members, counts in class_resample_weights(ya, n_boot, rng):
            c = int(ya[members[0]])
            both = np.stack([hit_a[members], hit_b[members]]).astype(float)  # 2 × n_c
            acc[:, :, c] = counts @ both.T / len(members)
    else:
        acc = np.stack([stratified_bootstrap(*_hits_n(r, metric), n_boot, int(rng.integers(2**31)))
                        for r in (report_a, report_b)], axis=1)
    a = report_a.by_class[metric].to_numpy(float)
    b = report_b.by_class[metric].to_numpy(float)

    cos = cosine
    centre = lambda m: m - m.mean(axis=-1, keepdims=True)  # noqa: E731
    rows = []
    for name, fn in (("cosine", lambda u, v: cos(u, v)),
                     ("pearson", lambda u, v: cos(centre(u), centre(v)))):
        reps = fn(acc[:, 0], acc[:, 1])
        value = float(fn(a, b))
        # shifted onto the estimate: a resample's extra noise pulls a correlation toward 0
        lo, hi = shifted_interval(reps, value, confidence)
        rows.append((value, float(lo), float(hi)))
    return pd.DataFrame(rows, index=pd.Index(["cosine", "pearson"], name="similarity"),
                        columns=["value", "lo", "hi"])


def _hits_n(report: ClassReport, metric: str) -> tuple[np.ndarray, np.ndarray]:
    hits, n, unknown = report._class_counts(metric)
    if unknown.any() or (n == 0).any():
        raise RobustfairError(f"{metric!r} is missing for some class; no interval")
    return hits, n
