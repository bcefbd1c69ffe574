"""``explain_model``: every cheap "why are some classes less robust" measure for one model, as an
:class:`~robustfair.explain.report.Explanation` with markdown, JSON and figures.

The measures run on the first ``limit`` test points of the data set:

1. an untargeted PGD audit (class-wise clean and robust accuracy, the adversarial predictions);
2. confusion sinks and their symmetry (and super-class retention on CIFAR-100);
3. feature-space class similarity and its rank correlation with robust accuracy;
4. per-point margins by PGD + bisection, summarised per class, and robust accuracy against eps;
5. class-wise accuracy under six common corruptions, worst class there vs under attack;
6. targeted vulnerability of one class (given, else the least robust one);
7. optionally (it trains two models) the robust / non-robust feature data sets.

>>> import robustfair as rf
>>> from robustfair.explain import explain_model
>>> ds = rf.load_dataset("digits")
>>> model = rf.build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[16])
>>> ex = explain_model(model, ds, eps=0.1, limit=40, attack_steps=2, margin_steps=2, n_perm=100)
>>> ex.settings["n"], len(ex.margins.by_class), ex.to_dict()["schema"]
(40, 10, 'robustfair.Explanation')
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

from torch import nn

from .._checks import positive_int
from .._progress import Progress, on_terminal
from ..data import Dataset, class_index
from ..errors import ConfigError, RobustfairError
from .corruptions import CORRUPTIONS, corruption_accuracy
from .feature_datasets import feature_dataset_study
from .margins import margin_analysis
from .report import Explanation
from .similarity import class_similarity
from .sinks import CIFAR100_FINE_TO_COARSE, sink_analysis
from .targeted import targeted_vulnerability

__all__ = ["explain_model"]


def explain_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    eps: float,
    norm: str = "linf",
    limit: int | None = None,
    target_class: int | str | None = None,
    attack_steps: int = 20,
    margin_steps: int = 20,
    eps_max: float | None = None,
    tol: float | None = None,
    top_k: int = 3,
    n_perm: int = 10000,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    fine_to_coarse: Sequence[int] | None = None,
    feature_datasets: bool = False,
    standard_model: nn.Module | None = None,
    feature_options: dict | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> Explanation:
    """Run every explain measure for ``model`` on ``dataset``'s first ``limit`` test points.

    ``eps``/``norm``/``attack_steps``: the PGD audit and targeted attacks. ``eps_max`` (default
    ``3·eps``, at most 1 for L-inf) and ``tol`` (default ``eps_max/64``): the margin search.
    ``target_class``: the class for the targeted measure (default: the least robust class).
    ``fine_to_coarse``: a super-class per class (CIFAR-100's is used automatically).
    ``feature_datasets=True`` also builds the Ilyas et al. data sets and trains on them: it
    needs ``standard_model`` (a normally trained model of the same data set) unless
    ``feature_options["train_standard"]`` is true, in which case one is trained here;
    ``feature_options`` go to :func:`~robustfair.explain.feature_datasets.feature_dataset_study`.
    """
    from ..attacks import build_attack
    from ..auditing import audit

    if not isinstance(dataset, Dataset):
        raise RobustfairError(f"dataset must be a robustfair Dataset, got {type(dataset).__name__}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ConfigError(f"eps must be a positive number, got {eps!r}")
    if limit is not None:
        positive_int(limit, "limit")
    classes = list(dataset.classes)
    target = class_index(classes, target_class) if target_class is not None else None
    if eps_max is None:
        eps_max = min(3 * eps, 1.0) if norm == "linf" else 3 * eps
    n = len(dataset.test) if limit is None else min(limit, len(dataset.test))
    if n == 0:
        raise RobustfairError(f"the test split of {dataset.name!r} is empty")
    x, y = dataset.test.x[:n], dataset.test.y[:n]
    if fine_to_coarse is None and dataset.name == "cifar100" and len(classes) == 100:
        fine_to_coarse = CIFAR100_FINE_TO_COARSE

    # a line per finished measure off a terminal; the measures' own bars only on one
    said = Progress(5 + bool(feature_datasets), "explain", unit="step", enabled=progress)
    bars = progress and on_terminal()
    attack = build_attack("pgd", eps=eps, norm=norm, steps=attack_steps, seed=seed)
    report = audit(model, x, y, attacks={"pgd": attack}, classes=classes, batch_size=batch_size,
                   seed=seed, progress=bars)
    robust_acc = report.by_class["robust_acc"].to_numpy(dtype=float)
    sinks = sink_analysis(report, attack="pgd", top_k=top_k, fine_to_coarse=fine_to_coarse)
    said.done("audit and sinks", units=1)
    similarity = class_similarity(model, x, y, classes=classes, robust_acc=robust_acc, n_perm=n_perm,
                                  seed=seed, batch_size=batch_size)
    said.done("class similarity", units=1)
    margins = margin_analysis(model, x, y, classes=classes, norm=norm, eps_max=float(eps_max), tol=tol,
                              steps=margin_steps, seed=seed, batch_size=batch_size, progress=bars)
    said.done("margins", units=1)
    corr = corruption_accuracy(model, x, y, classes=classes, corruptions=corruptions,
                               severities=severities, robust_acc=robust_acc, seed=seed,
                               batch_size=batch_size)
    said.done("corruptions", units=1)
    if target is None:
        target = classes.index(report.worst_class("robust_acc")[0])
    targeted = targeted_vulnerability(model, x, y, target, classes=classes, eps=eps, norm=norm,
                                      steps=attack_steps, seed=seed, batch_size=batch_size,
                                      progress=bars)
    said.done("targeted attacks", units=1)
    study = None
    if feature_datasets:
        options = dict(feature_options or {})
        train_std = bool(options.pop("train_standard", False))
        if standard_model is None:
            if not train_std:
                raise ConfigError("the feature data sets need a standard model: pass standard_model= "
                                  "or feature_options={'train_standard': True}")
            standard_model = _train_standard_model(model, dataset, options)
        study = feature_dataset_study(model, standard_model, dataset, eps=eps, norm=norm,
                                      robust_acc=robust_acc, attack_steps=attack_steps, seed=seed,
                                      batch_size=batch_size, progress=bars, **options)
        said.done("feature data sets", units=1)
    said.close()
    settings = {"eps": float(eps), "norm": norm, "n": n, "limit": limit, "attack_steps": attack_steps,
                "margin_steps": margin_steps, "eps_max": float(eps_max), "tol": margins.tol,
                "top_k": top_k, "n_perm": n_perm, "corruptions": list(corruptions),
                "severities": [int(v) for v in severities], "target_class": classes[target],
                "feature_datasets": feature_datasets, "seed": seed}
    meta = {"model": getattr(model, "robustfair_config", None),
            "model_metadata": getattr(model, "robustfair_metadata", None) or {}}
    return Explanation(dataset.name, classes, settings, report, sinks, similarity, margins, corr,
                       targeted, study, meta)


def _train_standard_model(model: nn.Module, dataset: Dataset, options: dict) -> nn.Module:
    """A normally trained model (same architecture and training settings as the feature-data-set
    models) on the full training split, for the non-robust data set."""
    from .._device import model_device
    from .feature_datasets import FeatureSet, train_standard

    config = dict(options.get("train_config") or {})
    built = getattr(model, "robustfair_config", None) or {}
    if built.get("name"):
        config.setdefault("model", built["name"])
        config.setdefault("model_kwargs", built.get("kwargs") or {})
    full = FeatureSet("standard", dataset.train.x, dataset.train.y)
    root = options.get("out_dir")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(root) / "standard_model" if root else Path(tmp)
        return train_standard(full, dataset, out, config=config).to(model_device(model))
