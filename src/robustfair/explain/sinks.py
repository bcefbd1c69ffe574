"""Confusion sinks: where each class's adversarial examples land, and whether confusion is mutual.

Only *successful adversarial examples* count: points the model classifies correctly on the
clean image and wrongly under attack. For a source class ``a`` the share of ``b`` is the
fraction of ``a``'s adversarial examples predicted as ``b``; the classes with the largest
shares are ``a``'s sinks.

Symmetry: for a pair ``{a, b}`` with shares ``s_ab`` (a's examples landing in b) and ``s_ba``,
the pair's score is ``1 - |s_ab - s_ba| / (s_ab + s_ba)``: 1 when the confusion goes both ways
equally, 0 when it goes one way only (undefined, and left out, when neither happens). The
overall score weighs each pair by ``s_ab + s_ba``, i.e. ``1 - Σ|S - Sᵀ| / Σ(S + Sᵀ)`` over
the pairs. ``basis="count"`` uses raw counts instead of shares (shares correct for classes
having different numbers of adversarial examples).

For CIFAR-100 the share of adversarial confusions that stay within the true class's
super-class is reported beside its chance level (the share expected if each example went to
a uniformly random other class).

>>> import numpy as np
>>> counts = np.array([[0, 3, 1], [3, 0, 1], [1, 1, 0]])
>>> round(confusion_symmetry(counts, basis="count").overall, 6)
1.0
>>> round(confusion_symmetry([[0, 4], [1, 0]], basis="count").overall, 6)  # 1 - 3/5
0.4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .._checks import positive_int
from ..errors import RobustfairError
from ..metrics.pointwise import WorstCase
from ._common import finite_or_none, records, safe_divide

__all__ = [
    "CIFAR100_FINE_TO_COARSE",
    "ConfusionSinks",
    "Symmetry",
    "adversarial_confusion",
    "confusion_sinks",
    "confusion_symmetry",
    "sink_analysis",
    "superclass_share",
]

# CIFAR-100: the super-class (coarse label, alphabetical order of the 20 coarse names) of each of
# the 100 fine classes (alphabetical order of the fine names), as in the data set's own label
# files: every fine class carries both labels; five fine classes per super-class.
CIFAR100_FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)


def adversarial_confusion(
    y_true: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    """K×K counts of successful adversarial examples: true class × class predicted under attack.

    A point counts if it is clean-correct and its adversarial prediction differs from its class
    (``-1``, a skipped point, never counts). The diagonal is therefore 0.
    """
    y, clean, adv = (np.asarray(a, dtype=np.int64) for a in (y_true, clean_pred, adv_pred))
    if not (y.shape == clean.shape == adv.shape and y.ndim == 1):
        raise RobustfairError("y_true, clean_pred and adv_pred must be 1-D arrays of the same length")
    fooled = WorstCase(y, clean).add(adv)
    k = num_classes
    return np.bincount(y[fooled] * k + adv[fooled], minlength=k * k).reshape(k, k)


def _as_counts(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise RobustfairError(f"a confusion matrix must be square K×K, got shape {c.shape}")
    if (c < 0).any() or not np.isfinite(c).all():
        raise RobustfairError("a confusion matrix must hold finite non-negative counts")
    c = c.copy()
    np.fill_diagonal(c, 0.0)  # a point "confused" with its own class is not a confusion
    return c


def sink_shares(counts) -> np.ndarray:
    """Row-normalised off-diagonal counts: ``S[a, b]`` = share of a's adversarial examples landing in b."""
    c = _as_counts(counts)
    return safe_divide(c, c.sum(axis=1, keepdims=True))


def confusion_sinks(counts, classes: Sequence[str], *, top_k: int = 3) -> pd.DataFrame:
    """Per source class: how many adversarial examples it has and its ``top_k`` sinks with shares.

    Columns ``fooled``, then ``sink_1``, ``share_1``, ... (``None``/NaN where a class has fewer
    than ``top_k`` sinks with a non-zero share).
    """
    c = _as_counts(counts)
    k = len(c)
    if len(classes) != k:
        raise RobustfairError(f"{len(classes)} class names for a {k}×{k} confusion matrix")
    top_k = min(positive_int(top_k, "top_k", RobustfairError), k - 1)
    shares = sink_shares(c)
    data: dict[str, list] = {"fooled": c.sum(axis=1).astype(int).tolist()}
    # stable sort on -share: ties go to the lower class index
    order = np.argsort(-np.nan_to_num(c), axis=1, kind="stable")
    for j in range(top_k):
        names, values = [], []
        for a in range(k):
            b = int(order[a, j])
            if c[a, b] > 0:
                names.append(str(classes[b]))
                values.append(float(shares[a, b]))
            else:
                names.append(None)
                values.append(np.nan)
        data[f"sink_{j + 1}"] = names
        data[f"share_{j + 1}"] = values
    return pd.DataFrame(data, index=pd.Index([str(n) for n in classes], name="class"))


@dataclass
class Symmetry:
    """Pairwise and overall symmetry of adversarial confusion (see the module docstring).

    ``pairs``: one row per unordered pair with any confusion, columns ``a``, ``b``, ``a_to_b``,
    ``b_to_a`` (shares or counts), ``score``; sorted by the pair's total, largest first.
    """

    pairs: pd.DataFrame
    overall: float
    basis: str

    def to_dict(self) -> dict:
        return {"basis": self.basis, "overall": finite_or_none(self.overall),
                "pairs": self.pairs.to_dict(orient="records")}


def confusion_symmetry(counts, classes: Sequence[str] | None = None, *, basis: str = "share") -> Symmetry:
    """Symmetry of the adversarial confusion per pair of classes and overall (1 = perfectly mutual)."""
    if basis not in ("share", "count"):
        raise RobustfairError(f"basis must be 'share' or 'count', got {basis!r}")
    c = _as_counts(counts)
    k = len(c)
    names = [str(n) for n in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise RobustfairError(f"{len(names)} class names for a {k}×{k} confusion matrix")
    s = np.nan_to_num(sink_shares(c)) if basis == "share" else c
    a_idx, b_idx = np.triu_indices(k, 1)
    ab, ba = s[a_idx, b_idx], s[b_idx, a_idx]
    total = ab + ba
    keep = total > 0
    score = 1.0 - np.abs(ab - ba)[keep] / total[keep]
    overall = float(1.0 - np.abs(ab - ba)[keep].sum() / total[keep].sum()) if keep.any() else float("nan")
    pairs = pd.DataFrame({
        "a": [names[i] for i in a_idx[keep]],
        "b": [names[i] for i in b_idx[keep]],
        "a_to_b": ab[keep],
        "b_to_a": ba[keep],
        "score": score,
    })
    order = np.argsort(-total[keep], kind="stable")
    return Symmetry(pairs.iloc[order].reset_index(drop=True), overall, basis)


def superclass_share(counts, fine_to_coarse: Sequence[int]) -> dict:
    """Share of adversarial confusions whose predicted class has the true class's super-class.

    Returns ``{"share", "chance", "n"}``: ``chance`` is the share expected if each example went
    to a uniformly random other class (weighted like the observed examples).
    """
    c = _as_counts(counts)
    k = len(c)
    coarse = np.asarray(fine_to_coarse, dtype=np.int64)
    if coarse.shape != (k,):
        raise RobustfairError(f"fine_to_coarse needs one super-class per class ({k}), got {coarse.shape[0]}")
    same = coarse[:, None] == coarse[None, :]
    np.fill_diagonal(same, False)
    n = c.sum()
    siblings = same.sum(axis=1) / (k - 1)  # chance, per source class, of a random other class
    share = float((c * same).sum() / n) if n > 0 else float("nan")
    chance = float((c.sum(axis=1) * siblings).sum() / n) if n > 0 else float("nan")
    return {"share": share, "chance": chance, "n": int(n)}


@dataclass
class ConfusionSinks:
    """Everything about where adversarial examples land, for one attack."""

    classes: list[str]
    counts: pd.DataFrame          # K×K successful adversarial examples, true × predicted
    sinks: pd.DataFrame           # per source class: fooled, sink_1, share_1, ...
    symmetry: Symmetry
    superclass: dict | None       # CIFAR-100-style super-class retention, if a mapping was given

    def to_dict(self) -> dict:
        sc = None
        if self.superclass is not None:
            sc = {k: finite_or_none(v) if isinstance(v, float) else v for k, v in self.superclass.items()}
        return {
            "classes": self.classes,
            "counts": self.counts.to_numpy().astype(int).tolist(),
            "sinks": records(self.sinks),
            "symmetry": self.symmetry.to_dict(),
            "superclass": sc,
        }


def sink_analysis(
    report,
    *,
    attack: str = "worst",
    top_k: int = 3,
    fine_to_coarse: Sequence[int] | None = None,
    basis: str = "share",
) -> ConfusionSinks:
    """Sinks, symmetry (and super-class retention) from a :class:`~robustfair.ClassReport`.

    ``attack`` is ``"worst"`` (the pointwise worst case) or one of the report's attack names.
    """
    column = report._pred_column(attack)
    if column == "clean_pred":
        raise RobustfairError("sinks need an attack's predictions, not 'clean'")
    p = report.predictions
    counts = adversarial_confusion(p["y_true"].to_numpy(), p["clean_pred"].to_numpy(),
                                   p[column].to_numpy(), report.num_classes)
    classes = list(report.classes)
    frame = pd.DataFrame(counts, index=pd.Index(classes, name="true"),
                         columns=pd.Index(classes, name="predicted"))
    return ConfusionSinks(
        classes=classes,
        counts=frame,
        sinks=confusion_sinks(counts, classes, top_k=top_k),
        symmetry=confusion_symmetry(counts, classes, basis=basis),
        superclass=None if fine_to_coarse is None else superclass_share(counts, fine_to_coarse),
    )
