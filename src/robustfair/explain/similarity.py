"""Feature-space class similarity: are the least robust classes the ones closest to another class?

The model's *penultimate* representation of an image is the input of its last ``nn.Linear``
(the classifier head), captured with a forward pre-hook, so this works for every registered
model and most user models without knowing their layer names. Per class we average the
features of its points (the class centroid), subtract the mean of the centroids (post-ReLU
features all live in the positive orthant, so raw centroids all point roughly the same way
and their cosines are all close to 1; removing the shared component leaves what is specific
to each class), and take the cosine similarity of every pair of centroids.

Each class's *nearest class* is the other class with the most similar centroid. Across
classes, the Spearman rank correlation between "similarity to the nearest class" and robust
accuracy says whether crowded classes are the fragile ones (a negative correlation); its
two-sided p-value comes from a seeded permutation test (the robust accuracies are shuffled
across classes ``n_perm`` times, all at once as one matrix), and its 95% interval from a
bootstrap over the classes (K pairs resampled with replacement: with 10 classes the interval is
wide, and that is the honest answer).

Within-class spread: per class, the root-mean-square distance of its points' features to the
class centroid, in units of the mean distance between centroids. A diffuse class overlaps its
neighbours more and is expected to be less robust; its Spearman correlation with robust
accuracy is reported the same way.

>>> import numpy as np
>>> rho, p = permutation_spearman(np.arange(10.0), np.arange(10.0) ** 2, n_perm=2000, seed=0)
>>> round(rho, 6), p < 0.01
(1.0, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._checks import positive_int
from .._device import model_device
from ..attacks import eval_mode
from ..errors import ModelError, RobustfairError
from ..metrics import percentile_interval
from ._common import check_inputs, finite_or_none, float_batches, records, resolve_classes

__all__ = [
    "ClassSimilarity",
    "class_centroids",
    "class_similarity",
    "classifier_layer",
    "cosine_similarity_matrix",
    "nearest_classes",
    "penultimate_features",
    "permutation_spearman",
    "spearman",
    "spearman_interval",
    "within_class_spread",
]


def classifier_layer(model: nn.Module, x_probe: torch.Tensor) -> nn.Linear:
    """The ``nn.Linear`` the model calls *last* in its forward pass (its classifier head).

    Found by running one probe image with a hook on every ``nn.Linear``: the order of
    ``model.modules()`` is the order of attribute assignment, which need not be the order of
    execution.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(
            f"{type(model).__name__} has no nn.Linear layer, so its penultimate features cannot "
            f"be found (the explain measures read the input of the last nn.Linear)"
        )
    called: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: called.append(mod)) for m in linears]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x_probe[:1])
    finally:
        for h in hooks:
            h.remove()
    if not called:
        raise ModelError(f"{type(model).__name__}'s nn.Linear layers are never called in its forward pass")
    return called[-1]  # type: ignore[return-value]


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """N×D features: the input of the model's last ``nn.Linear`` for each image (flattened).

    ``x`` is uint8 or float images in [0, 1]; the result is on the model's device.
    """
    device = model_device(model)
    if len(x) == 0:
        raise RobustfairError("no images given")
    probe = next(float_batches(x[:1], 1, device))[1]
    layer = classifier_layer(model, probe)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0].detach().flatten(1)))
    try:
        with eval_mode(model):
            for _, xb in float_batches(x, batch_size, device):
                model(xb)
    finally:
        hook.remove()
    return torch.cat(captured)


def class_centroids(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×D mean feature per class (a row of NaN for a class without points)."""
    y = y.to(features.device)
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, y, features)
    counts = torch.bincount(y, minlength=num_classes).to(features.dtype).unsqueeze(1)
    return sums / counts  # 0/0 = NaN marks empty classes


def cosine_similarity_matrix(centroids: torch.Tensor, *, center: bool = True) -> torch.Tensor:
    """K×K cosine similarity of the centroids (optionally after subtracting their mean; see module doc)."""
    c = centroids.double()
    present = ~torch.isnan(c).any(dim=1)
    if center:
        c = c - c[present].mean(dim=0, keepdim=True)
    unit = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def nearest_classes(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each class, the index of the most similar *other* class and that similarity."""
    s = np.array(similarity, dtype=float, copy=True)
    np.fill_diagonal(s, -np.inf)
    s[np.isnan(s)] = -np.inf
    idx = s.argmax(axis=1)
    return idx, s[np.arange(len(s)), idx]


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's correlation needs."""
    return pd.Series(a).rank(method="average").to_numpy()


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the average ranks); NaN if one side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.linalg.norm(ra) * np.linalg.norm(rb)
    return float(ra @ rb / denom) if denom > 0 else float("nan")


def permutation_spearman(a: Sequence[float], b: Sequence[float], *, n_perm: int = 10000,
                         seed: int = 0) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value ``(1 + #{|rho_perm| >= |rho|}) / (1 + n_perm)``.

    Pairs with a NaN on either side are dropped. All permutations are drawn at once as an
    ``n_perm × K`` matrix of shuffled ranks (seeded), so the test is one matrix product.
    """
    positive_int(n_perm, "n_perm", RobustfairError)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise RobustfairError(f"need two 1-D sequences of the same length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return float("nan"), float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.linalg.norm(ra) * np.linalg.norm(rb)
    if denom == 0:
        return float("nan"), float("nan")
    rho = float(ra @ rb / denom)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(rb, (n_perm, len(rb))), axis=1)
    null = shuffled @ ra / denom  # a permutation keeps the norm of the centred ranks
    # a small tolerance so that permutations equal to the observed order count as "as extreme"
    extreme = np.count_nonzero(np.abs(null) >= abs(rho) - 1e-12)
    return rho, float((1 + extreme) / (1 + n_perm))


def spearman_interval(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000,
                      seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho, resampling the (a, b) pairs (classes).

    Resamples in which one side is constant (rho undefined) are left out. NaN pairs are
    dropped first; fewer than 3 pairs give ``(nan, nan)``.

    >>> lo, hi = spearman_interval(np.arange(10.0), np.arange(10.0), n_boot=200)
    >>> round(lo, 6), round(hi, 6)
    (1.0, 1.0)
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ra = rankdata(a[idx], axis=1)
    rb = rankdata(b[idx], axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, (ra * rb).sum(axis=1) / denom, np.nan)
    rho = rho[np.isfinite(rho)]
    if rho.size == 0:
        return float("nan"), float("nan")
    lo, hi = percentile_interval(rho, confidence)
    return float(np.clip(lo, -1, 1)), float(np.clip(hi, -1, 1))


def within_class_spread(features: torch.Tensor, y: torch.Tensor, centroids: torch.Tensor) -> np.ndarray:
    """Per class: RMS distance of its points' features to its centroid, divided by the mean
    distance between distinct centroids (NaN for a class without points). Unitless, so models
    and layers of different scale compare."""
    f = features.double()
    c = centroids.double().to(f.device)
    y = y.to(f.device)
    k = len(c)
    sq = ((f - c[y]) ** 2).sum(dim=1)
    sums = torch.zeros(k, dtype=f.dtype, device=f.device).index_add_(0, y, sq)
    counts = torch.bincount(y, minlength=k).to(f.dtype)
    rms = (sums / counts).sqrt()
    present = ~torch.isnan(c).any(dim=1)
    cp = c[present]
    dist = torch.cdist(cp, cp)
    m = len(cp)
    scale = dist.sum() / max(m * (m - 1), 1)
    out = (rms / scale.clamp_min(1e-12)).cpu().numpy()
    out[~present.cpu().numpy()] = np.nan
    return out


@dataclass
class ClassSimilarity:
    """Centroid similarity between classes and its relation to robust accuracy.

    ``similarity``: K×K cosine similarity of the (centred) class centroids;
    ``nearest``: per class, the nearest other class, its similarity, and the robust accuracy;
    ``rho``/``p_value``: Spearman correlation across classes between nearest-class similarity
    and robust accuracy, with its permutation p-value over ``n_perm`` shuffles (NaN if no
    robust accuracies were given or they are all equal) and ``rho_interval``, its 95%
    bootstrap interval over classes; ``nearest["spread"]``: the within-class spread
    (:func:`within_class_spread`), and ``spread_rho``/``spread_p``/``spread_rho_interval`` the
    same statistics for spread against robust accuracy.
    """

    classes: list[str]
    similarity: pd.DataFrame
    nearest: pd.DataFrame
    rho: float
    p_value: float
    n_perm: int
    seed: int
    rho_interval: tuple[float, float] = (float("nan"), float("nan"))
    spread_rho: float = float("nan")
    spread_p: float = float("nan")
    spread_rho_interval: tuple[float, float] = (float("nan"), float("nan"))

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "similarity": self.similarity.to_numpy().round(6).tolist(),
            "nearest": records(self.nearest),
            "spearman_rho": finite_or_none(self.rho),
            "p_value": finite_or_none(self.p_value),
            "spearman_rho_interval": [finite_or_none(v) for v in self.rho_interval],
            "spread_spearman_rho": finite_or_none(self.spread_rho),
            "spread_p_value": finite_or_none(self.spread_p),
            "spread_spearman_rho_interval": [finite_or_none(v) for v in self.spread_rho_interval],
            "n_perm": self.n_perm,
            "seed": self.seed,
        }


def class_similarity(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    classes: Sequence[str] | None = None,
    robust_acc: Sequence[float] | None = None,
    center: bool = True,
    n_perm: int = 10000,
    seed: int = 0,
    batch_size: int = 256,
) -> ClassSimilarity:
    """Class centroids of the penultimate features on ``(x, y)``, their similarity, each class's
    nearest class, and (given per-class ``robust_acc``) the similarity-robustness correlation."""
    names = resolve_classes(model, classes, x)
    k = len(names)
    y = check_inputs(x, y, k)
    features = penultimate_features(model, x, batch_size=batch_size)
    centroids = class_centroids(features, y, k)
    sim = cosine_similarity_matrix(centroids, center=center).cpu().numpy()
    idx, value = nearest_classes(sim)
    nearest = pd.DataFrame({"nearest": [names[i] for i in idx], "similarity": value,
                            "spread": within_class_spread(features, y, centroids)},
                           index=pd.Index(names, name="class"))
    empty = np.bincount(y.cpu().numpy(), minlength=k) == 0
    nearest.loc[empty, ["nearest", "similarity"]] = [None, np.nan]
    rho = p = spread_rho = spread_p = float("nan")
    interval = spread_interval = (float("nan"), float("nan"))
    if robust_acc is not None:
        acc = np.asarray(robust_acc, dtype=float)
        if acc.shape != (k,):
            raise RobustfairError(f"robust_acc needs one value per class ({k}), got shape {acc.shape}")
        nearest["robust_acc"] = acc
        near = nearest["similarity"].to_numpy(dtype=float)
        spread = nearest["spread"].to_numpy(dtype=float)
        rho, p = permutation_spearman(near, acc, n_perm=n_perm, seed=seed)
        interval = spearman_interval(near, acc, seed=seed)
        spread_rho, spread_p = permutation_spearman(spread, acc, n_perm=n_perm, seed=seed)
        spread_interval = spearman_interval(spread, acc, seed=seed)
    frame = pd.DataFrame(sim, index=pd.Index(names, name="class"), columns=names)
    return ClassSimilarity(names, frame, nearest, rho, p, n_perm, seed, interval, spread_rho,
                           spread_p, spread_interval)

