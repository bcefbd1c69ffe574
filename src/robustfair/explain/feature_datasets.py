"""Robust and non-robust feature data sets (Ilyas et al. 2019, "Adversarial Examples Are Not Bugs,
They Are Features"), and whether a model trained on them inherits a class-wise profile.

*Robust data set* D_R: for each training image ``x`` (label ``y``), start from a different,
randomly chosen training image and optimise it, by normalised L2 gradient descent kept in
[0, 1], until the robust model's penultimate representation matches that of ``x``; label it
``y``. What survives is only what the *robust* model uses, so a standard model trained on D_R
learns (only) robust features.

*Non-robust data set* D_det: for each training image, a targeted adversarial example of a
*standard* model toward class ``t = (y + 1) mod K``, labelled ``t``. To a human it still shows
class ``y``; the only thing tying it to ``t`` are the non-robust features the attack put in.

A standard model is trained on each (with :func:`robustfair.training.train`) and tested on the
original test set. Its class-wise accuracy vector is compared with the source models' by
cosine similarity (the paper's profile similarity): if the class-wise inequality lives in the
robust features, the D_R model's profile should look like the robust model's.

Everything is small and configurable (number of images, optimisation and attack steps,
training epochs); the defaults suit the 8×8 digits, not CIFAR.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import positive_int
from .._device import model_device
from ..attacks import build_attack
from ..attacks import eval_mode
from ..data import Dataset, Split
from ..errors import ConfigError, RobustfairError
from ._common import check_batch_size, check_inputs, finite_or_none, float_batches, predict, records
from .similarity import classifier_layer

__all__ = [
    "FeatureDatasetStudy",
    "FeatureSet",
    "class_accuracy",
    "feature_dataset_study",
    "non_robust_dataset",
    "profile_cosine",
    "robust_dataset",
]


@dataclass
class FeatureSet:
    """A constructed training set: uint8 images on the CPU, labels, and how it was made."""

    kind: str                 # "robust" or "non_robust"
    x: torch.Tensor
    y: torch.Tensor
    info: dict = field(default_factory=dict)


def _derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random index ``j(i) != i`` for every ``i`` (a random non-zero shift per point)."""
    if n < 2:
        raise RobustfairError("need at least two images to start each from a different one")
    shift = torch.randint(1, n, (n,), generator=generator)
    return (torch.arange(n) + shift) % n


def robust_dataset(
    robust_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 200,
    step_size: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> FeatureSet:
    """D_R: images optimised to match ``robust_model``'s penultimate features of each ``x``.

    Each step moves every image by ``step_size`` (decaying linearly to 0 over ``steps``, so the
    last steps settle instead of oscillating) along the unit-L2 descent direction of
    ``||g(x_r) - g(x)||`` and clips to [0, 1]. ``info["feature_distance"]`` is the mean final
    distance relative to the mean distance at the start.
    """
    positive_int(steps, "steps", RobustfairError)
    check_batch_size(batch_size)
    if not step_size > 0:
        raise RobustfairError(f"step_size must be positive, got {step_size!r}")
    y = check_inputs(x, y, int(y.max()) + 1 if len(y) else 1)
    device = model_device(robust_model)
    generator = torch.Generator().manual_seed(seed)
    start_idx = _derangement(len(x), generator)
    layer = classifier_layer(robust_model, next(float_batches(x[:1], 1, device))[1])
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0].flatten(1)))

    def features(images: torch.Tensor) -> torch.Tensor:
        captured.clear()
        robust_model(images)
        return captured[-1]

    out, start_dist, end_dist = [], 0.0, 0.0
    try:
        with eval_mode(robust_model), torch.enable_grad():
            bar = tqdm(total=len(x) * steps, desc="robust features", disable=not progress, leave=False)
            with bar:
                for start, goal_img in float_batches(x, batch_size, device):
                    with torch.no_grad():
                        goal = features(goal_img).detach()
                    idx = start_idx[start:start + len(goal_img)]
                    x_r = next(float_batches(x[idx], len(idx), device))[1].clone()
                    for step in range(steps):
                        x_r.requires_grad_(True)
                        dist = (features(x_r) - goal).norm(dim=1)
                        if step == 0:
                            start_dist += float(dist.detach().sum())
                        (grad,) = torch.autograd.grad(dist.sum(), x_r)
                        unit = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                        lr = step_size * (1 - step / steps)
                        x_r = (x_r.detach() - lr * unit).clamp_(0.0, 1.0)
                        bar.update(len(x_r))
                    with torch.no_grad():
                        end_dist += float((features(x_r) - goal).norm(dim=1).sum())
                    out.append(x_r.detach())
    finally:
        hook.remove()
    images = (torch.cat(out) * 255).round().to(torch.uint8).cpu()
    info = {"steps": steps, "step_size": step_size, "seed": seed,
            "feature_distance": end_dist / max(start_dist, 1e-12)}
    return FeatureSet("robust", images, y.cpu().clone(), info)


def non_robust_dataset(
    standard_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    eps: float,
    norm: str = "linf",
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> FeatureSet:
    """D_det: targeted PGD examples of ``standard_model`` toward ``(y + 1) mod K``, relabelled as
    that target. All examples are kept; ``info["attack_success"]`` says how many reached it."""
    y = check_inputs(x, y, num_classes)
    check_batch_size(batch_size)
    device = model_device(standard_model)
    attack = build_attack("pgd", eps=eps, norm=norm, steps=positive_int(steps, "steps", RobustfairError),
                          targeted=True, seed=seed)
    target = (y + 1) % num_classes
    out, hits = [], 0
    bar = tqdm(total=len(x), desc="non-robust features", disable=not progress, leave=False)
    with bar:
        for start, xb in float_batches(x, batch_size, device):
            tb = target[start:start + len(xb)].to(device)
            res = attack.perturb(standard_model, xb, y[start:start + len(xb)].to(device), target=tb)
            out.append(res.x_adv.detach())
            hits += int(res.success.sum())
            bar.update(len(xb))
    images = (torch.cat(out) * 255).round().to(torch.uint8).cpu()
    info = {"target_rule": "(y + 1) mod K", "attack": attack.settings(), "attack_success": hits / len(x)}
    return FeatureSet("non_robust", images, target.cpu().clone(), info)


def class_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                   *, batch_size: int = 256) -> np.ndarray:
    """Clean accuracy per class (NaN for a class without points)."""
    y = check_inputs(x, y, num_classes)
    right = (predict(model, x, batch_size=batch_size) == y.to(model_device(model))).cpu().numpy()
    yn = y.cpu().numpy()
    n = np.bincount(yn, minlength=num_classes).astype(float)
    hits = np.bincount(yn, weights=right.astype(float), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / n


def profile_cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two class-wise accuracy vectors (classes missing in either are dropped).

    >>> round(profile_cosine([0.5, 1.0], [1.0, 2.0]), 6), profile_cosine([1.0, 0.0], [0.0, 1.0])
    (1.0, 0.0)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    na, nb = np.linalg.norm(a[keep]), np.linalg.norm(b[keep])
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.clip(a[keep] @ b[keep] / (na * nb), -1.0, 1.0))


def train_standard(feature_set: FeatureSet, template: Dataset, out_dir: str | Path, *,
                   config: dict | None = None, progress: bool = False) -> nn.Module:
    """Train a standard (non-adversarial) model on ``feature_set`` with :func:`robustfair.training.train`.

    ``template`` gives the class names and the (untouched) test split; ``config`` overrides the
    :class:`~robustfair.training.TrainConfig` defaults used here (e.g. ``epochs``, ``model``).
    """
    from ..training import TrainConfig, train

    ds = Dataset(f"explain-{feature_set.kind}", Split(feature_set.x, feature_set.y), template.test,
                 list(template.classes), info=dict(template.info))
    settings = {"model": "small_cnn", "epochs": 10, "batch_size": 64, "lr": 0.05,
                "eval_steps": 1, "seed": 0}
    settings.update(config or {})
    settings.update(objective="standard", eps=0.0)  # a *standard* model on the constructed data
    try:
        cfg = TrainConfig.from_dict(settings)
    except ConfigError as exc:
        raise ConfigError(f"feature-data-set training config: {exc}") from None
    # the run records the data's SHA-256: a re-run on the same data resumes, other data is refused
    return train(cfg, out_dir, dataset=ds, progress=progress).model


@dataclass
class FeatureDatasetStudy:
    """Class-wise test accuracy of models trained on D_R and D_det beside the source models'.

    ``profiles``: rows = classes, columns = ``robust_model_clean``, ``robust_model_robust`` (if
    known), ``standard_model_clean``, ``trained_on_robust``, ``trained_on_non_robust``;
    ``similarity``: cosine similarity of the named pairs of columns.
    """

    classes: list[str]
    profiles: pd.DataFrame
    similarity: dict[str, float]
    info: dict

    def to_dict(self) -> dict:
        return {"profiles": records(self.profiles),
                "similarity": {k: finite_or_none(v) for k, v in self.similarity.items()},
                "info": self.info}


def feature_dataset_study(
    robust_model: nn.Module,
    standard_model: nn.Module,
    dataset: Dataset,
    *,
    eps: float,
    norm: str = "linf",
    n_images: int | None = 500,
    robust_steps: int = 200,
    step_size: float = 0.1,
    attack_steps: int = 20,
    train_config: dict | None = None,
    robust_acc: Sequence[float] | None = None,
    test_limit: int | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> FeatureDatasetStudy:
    """Build D_R from ``robust_model`` and D_det from ``standard_model`` on the first ``n_images``
    training images, train a standard model on each, and compare class-wise test accuracy.

    ``robust_acc``: the robust model's per-class robust accuracy (e.g. from an audit), to compare
    with as well. Training runs go to ``out_dir`` (default: a temporary directory).
    """
    k = dataset.num_classes
    n = len(dataset.train) if n_images is None else min(int(n_images), len(dataset.train))
    if n < 2:
        raise RobustfairError(f"n_images must be at least 2, got {n_images!r}")
    x, y = dataset.train.x[:n], dataset.train.y[:n]
    tn = len(dataset.test) if test_limit is None else min(int(test_limit), len(dataset.test))
    xt, yt = dataset.test.x[:tn], dataset.test.y[:tn]
    d_r = robust_dataset(robust_model, x, y, steps=robust_steps, step_size=step_size, seed=seed,
                         batch_size=batch_size, progress=progress)
    d_nr = non_robust_dataset(standard_model, x, y, num_classes=k, eps=eps, norm=norm,
                              steps=attack_steps, seed=seed, batch_size=batch_size, progress=progress)
    config = dict(train_config or {})
    model_name = (getattr(robust_model, "robustfair_config", None) or {}).get("name")
    if model_name and "model" not in config:
        config["model"] = model_name
        config.setdefault("model_kwargs", (robust_model.robustfair_config or {}).get("kwargs", {}))
    with contextlib.ExitStack() as stack:
        root = Path(out_dir) if out_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        device = model_device(robust_model)
        m_r = train_standard(d_r, dataset, root / "trained_on_robust", config=config, progress=progress).to(device)
        m_nr = train_standard(d_nr, dataset, root / "trained_on_non_robust", config=config,
                              progress=progress).to(device)
        profiles = pd.DataFrame(index=pd.Index(list(dataset.classes), name="class"))
        profiles["robust_model_clean"] = class_accuracy(robust_model, xt, yt, k, batch_size=batch_size)
        if robust_acc is not None:
            profiles["robust_model_robust"] = np.asarray(robust_acc, dtype=float)
        profiles["standard_model_clean"] = class_accuracy(standard_model, xt, yt, k, batch_size=batch_size)
        profiles["trained_on_robust"] = class_accuracy(m_r, xt, yt, k, batch_size=batch_size)
        profiles["trained_on_non_robust"] = class_accuracy(m_nr, xt, yt, k, batch_size=batch_size)
    pairs = [("trained_on_robust", "robust_model_clean"), ("trained_on_robust", "robust_model_robust"),
             ("trained_on_non_robust", "standard_model_clean"), ("trained_on_robust", "standard_model_clean"),
             ("robust_model_clean", "standard_model_clean")]
    similarity = {f"{a} ~ {b}": profile_cosine(profiles[a], profiles[b])
                  for a, b in pairs if a in profiles and b in profiles}
    info = {"n_images": n, "test_points": tn, "robust": d_r.info, "non_robust": d_nr.info,
            "train_config": config, "eps": eps, "norm": norm,
            "mean_class_acc": {c: finite_or_none(float(np.nanmean(profiles[c]))) for c in profiles.columns}}
    return FeatureDatasetStudy(list(dataset.classes), profiles, similarity, info)
