"""Across models: is the same class the worst, and do the models rank the classes alike?

Every model of a leaderboard is audited on the same points, so one resample of the points
(within each class, with replacement: class sizes stay fixed) is applied to all models at
once; the intervals below are 95% percentile intervals over ``n_boot`` such resamples. They
cover the sampling of test points only: each model is one trained checkpoint, so nothing here
speaks to how a model's class ranking would vary over training seeds.

* **Worst class.** Per model, the class with the lowest robust accuracy on these points, how
  often it stays (tied-)lowest over the resamples (``stays_lowest``), and its ``p_noise`` (see
  :mod:`.table`). Per class, how many models have it lowest (ties share a model's count), and
  the same count over the resamples.
* **Rank agreement.** Kendall's tau-b between two models' per-class robust accuracies (1: the
  same order of classes, 0: unrelated, ties handled by tau-b), for every pair of models, and its
  mean over the pairs, each with its interval. Each resample adds test-point noise, which pulls
  a correlation of noisy class profiles toward 0, so the tau intervals are the percentile
  intervals moved to be centred on the estimate (:func:`~robustfair.metrics._stats.shifted_interval`,
  as for profile similarities). The observed tau is itself pulled toward 0 by that noise: a low
  tau on few points per class is weak evidence of disagreement.

>>> import numpy as np, pandas as pd
>>> from robustfair.metrics import ClassReport
>>> y = np.repeat([0, 1, 2], 20)
>>> def report(correct):  # no attacks: robust = clean, right where ``correct``
...     pred = np.where(correct, y, (y + 1) % 3)
...     return ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
...                        "worst_pred": pred}), classes=["a", "b", "c"], attacks=[])
>>> rng = np.random.default_rng(0)
>>> acc = np.repeat([0.2, 0.5, 0.9], 20)
>>> r = cross_model({m: report(rng.random(60) < acc) for m in "xyz"}, n_boot=200)
>>> r.worst["worst_class"].tolist(), r.mean_tau[0] > 0.5
(['a', 'a', 'a'], True)
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import RobustfairError
from ..metrics import ClassReport
from ..metrics import class_resample_weights, percentile_interval, shifted_interval

__all__ = ["CrossModel", "cross_model"]

_CHUNK = 64  # resamples per block when computing tau: memory stays (chunk x models x K^2 / 2)


@dataclass
class CrossModel:
    """What :func:`cross_model` found (tables described in the module docstring)."""

    models: list[str]
    classes: list[str]
    n_points: int
    worst: pd.DataFrame          # per model: worst_class, worst_class_acc, stays_lowest, p_noise
    worst_counts: pd.DataFrame   # per class: models (observed), resampled, lo, hi
    tau: pd.DataFrame            # per pair: model_a, model_b, tau, lo, hi
    mean_tau: tuple[float, float, float] | None  # (value, lo, hi); None with fewer than 2 models
    n_boot: int
    seed: int

    def findings(self) -> list[str]:
        """The answers in a few sentences, each with its numbers and what they estimate."""
        m = len(self.models)
        out = []
        counts = self.worst_counts[self.worst_counts["models"] > 0].sort_values("models", ascending=False)
        parts = [f"{c} for {_count(r.models)} (over resamples {r.resampled:.1f}, "
                 f"95% interval {r.lo:.1f} to {r.hi:.1f})" for c, r in counts.iterrows()]
        out.append(f"Lowest robust class on these {self.n_points} points, by model count out of {m}: "
                   + "; ".join(parts) + ".")
        clear = self.worst[self.worst["p_noise"] < 0.05]
        out.append(
            f"For {len(clear)} of {m} models the lowest class stands out from sampling noise "
            f"(worst-class p_noise < 0.05: equal classes rarely give one this far below the class "
            f"mean); a model's lowest class stays lowest in "
            f"{_range(self.worst['stays_lowest'])} of the test-point resamples. Where it rarely "
            f"does, 'the worst class' of that model is not determined by these points.")
        if self.mean_tau is None:
            out.append("Rank agreement needs at least two models.")
            return out
        value, lo, hi = self.mean_tau
        pairs = len(self.tau)
        if not np.isfinite(value):
            out.append("Rank agreement is undefined: some model has the same robust accuracy in "
                       "every class.")
            return out
        verdict = ("the interval lies above 0: the models order the classes alike more than "
                   "unrelated orders would" if lo > 0 else
                   "the interval reaches 0 or below: these points do not show the models ordering "
                   "the classes alike")
        out.append(f"Class ranking by robust accuracy: mean Kendall's tau-b over the {pairs} "
                   f"pair{'s' if pairs != 1 else ''} of models {value:.2f} (95% interval over "
                   f"test-point resamples {lo:.2f} to {hi:.2f}); {verdict}. The interval covers "
                   f"test-point sampling only, not training seeds.")
        return out


def _count(v: float) -> str:
    return f"{v:g} model{'s' if v != 1 else ''}"


def _range(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "none"
    lo, hi = 100 * v.min(), 100 * v.max()
    return f"{lo:.0f}%" if round(lo) == round(hi) else f"{lo:.0f}% to {hi:.0f}%"


def _robust_correct(reports: Mapping[str, ClassReport]) -> tuple[np.ndarray, np.ndarray]:
    """The labels (shared) and the robust-correct matrix (models x points)."""
    frames = [r.predictions for r in reports.values()]
    y = frames[0]["y_true"].to_numpy()
    for name, p in zip(reports, frames):
        if len(p) != len(y) or not np.array_equal(p["y_true"].to_numpy(), y):
            raise RobustfairError(f"model {name} was audited on other points than "
                                  f"{next(iter(reports))}; a leaderboard compares models on the same points")
    correct = np.stack([(p["worst_pred"].to_numpy() == y) for p in frames]).astype(np.float64)
    return y, correct


def _class_acc(y: np.ndarray, correct: np.ndarray, k: int, n_boot: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-class robust accuracy: observed (models x K) and over resamples (B x models x K)."""
    observed = np.full((correct.shape[0], k), np.nan)
    boot = np.full((n_boot, correct.shape[0], k), np.nan)
    for members, counts in class_resample_weights(y, n_boot, rng):
        c = int(y[members[0]])
        observed[:, c] = correct[:, members].mean(axis=1)
        boot[:, :, c] = counts @ correct[:, members].T / len(members)
    return observed, boot


def _lowest_share(acc: np.ndarray) -> np.ndarray:
    """Per row of ``acc`` (..., K): 1/#tied for each class at the row's minimum, 0 elsewhere."""
    at_min = np.isclose(acc, np.nanmin(acc, axis=-1, keepdims=True), rtol=0, atol=1e-12)
    return at_min / at_min.sum(axis=-1, keepdims=True)


def _signs(acc: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """sign(acc_i - acc_j) for every pair of classes i < j, as int8: (..., P)."""
    return np.sign(acc[..., pairs[0]] - acc[..., pairs[1]]).astype(np.int8)


def _tau_b(signs: np.ndarray, a: int, b: int) -> np.ndarray:
    """Kendall's tau-b between models ``a`` and ``b`` from their pair signs (..., models, P)."""
    sa, sb = signs[..., a, :].astype(np.int64), signs[..., b, :].astype(np.int64)
    den = np.sqrt((sa != 0).sum(-1) * (sb != 0).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sa * sb).sum(-1) / np.where(den > 0, den, 1), np.nan)


def cross_model(reports: Mapping[str, ClassReport], *, n_boot: int = 1000, seed: int = 0) -> CrossModel:
    """Worst class and rank agreement across the models of ``reports`` (audited on the same
    points), with intervals over resamples of the test points (see the module docstring)."""
    if not reports:
        raise RobustfairError("no finished model to compare")
    if n_boot < 1:
        raise RobustfairError(f"n_boot must be at least 1, got {n_boot}")
    names = list(reports)
    first = next(iter(reports.values()))
    classes, k = list(first.classes), first.num_classes
    y, correct = _robust_correct(reports)
    rng = np.random.default_rng(seed)
    observed, boot = _class_acc(y, correct, k, n_boot, rng)
    present = ~np.isnan(observed[0])  # classes without points are left out throughout
    observed, boot = observed[:, present], boot[:, :, present]
    kept = [c for c, p in zip(classes, present) if p]

    share_obs = _lowest_share(observed)                     # models x K
    share_boot = _lowest_share(boot)                        # B x models x K
    worst_rows = []
    for i, name in enumerate(names):
        report = reports[name]
        worst, value = report.worst_class("robust_acc")
        w = kept.index(worst)
        stays = float((share_boot[:, i, w] > 0).mean())
        p_noise = float(report.discrepancy("robust_acc", n_boot=n_boot, seed=seed).loc["worst", "p_noise"])
        worst_rows.append({"model": name, "worst_class": worst, "worst_class_acc": value,
                           "stays_lowest": stays, "p_noise": p_noise})
    worst_table = pd.DataFrame(worst_rows)

    per_class_boot = share_boot.sum(axis=1)                 # B x K: models with that class lowest
    count_rows = []
    for j, c in enumerate(kept):
        lo, hi = percentile_interval(per_class_boot[:, j])
        count_rows.append({"class": c, "models": float(share_obs[:, j].sum()),
                           "resampled": float(per_class_boot[:, j].mean()), "lo": lo, "hi": hi})
    counts = pd.DataFrame(count_rows).set_index("class")

    tau_rows, mean_tau = [], None
    if len(names) >= 2:
        pairs_idx = np.triu_indices(len(kept), k=1)
        model_pairs = list(combinations(range(len(names)), 2))
        obs_signs = _signs(observed, pairs_idx)
        taus = np.empty((n_boot, len(model_pairs)))
        for start in range(0, n_boot, _CHUNK):
            s = _signs(boot[start:start + _CHUNK], pairs_idx)
            for p, (a, b) in enumerate(model_pairs):
                taus[start:start + _CHUNK, p] = _tau_b(s, a, b)
        for p, (a, b) in enumerate(model_pairs):
            value = float(_tau_b(obs_signs, a, b))
            lo, hi = shifted_interval(taus[:, p], value)
            tau_rows.append({"model_a": names[a], "model_b": names[b], "tau": value, "lo": lo, "hi": hi})
        obs_mean = float(np.nanmean([r["tau"] for r in tau_rows])) if any(
            np.isfinite(r["tau"]) for r in tau_rows) else float("nan")
        finite = np.isfinite(taus)  # a pair is undefined where a model ties every class
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_mean = np.where(finite, taus, 0).sum(axis=1) / finite.sum(axis=1)
        mean_tau = (obs_mean, *shifted_interval(boot_mean, obs_mean))
    tau_table = pd.DataFrame(tau_rows, columns=["model_a", "model_b", "tau", "lo", "hi"])
    return CrossModel(models=names, classes=kept, n_points=len(y), worst=worst_table,
                      worst_counts=counts, tau=tau_table, mean_tau=mean_tau, n_boot=n_boot, seed=seed)

