"""``explain_model``: every cheap "why are some classes less robust" measure for one model, as an
:class:`Explanation` with markdown, JSON and figures.

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

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from torch import nn

from .._atomic import write_folder_unit
from .._checks import is_int
from ..data import Dataset, class_index
from ..errors import ConfigError, RobustfairError
from .corruptions import CORRUPTIONS, CorruptionResult, corruption_accuracy
from .feature_datasets import FeatureDatasetStudy, feature_dataset_study
from .margins import Margins, margin_analysis
from .similarity import ClassSimilarity, class_similarity
from .sinks import CIFAR100_FINE_TO_COARSE, ConfusionSinks, sink_analysis
from .targeted import TargetedVulnerability, targeted_vulnerability

__all__ = ["Explanation", "explain_model"]

FILES = ("explain.md", "explain.json", "similarity.png", "margins.png", "robust_vs_eps.png",
         "corruption_vs_attack.png")


@dataclass
class Explanation:
    """All explain measures for one model on one data set; see the module docstring."""

    dataset: str
    classes: list[str]
    settings: dict
    report: object                     # the audit's ClassReport
    sinks: ConfusionSinks
    similarity: ClassSimilarity
    margins: Margins
    corruptions: CorruptionResult
    targeted: TargetedVulnerability
    feature_datasets: FeatureDatasetStudy | None = None
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ findings
    @property
    def robust_acc(self) -> pd.Series:
        return self.report.by_class["robust_acc"]

    def findings(self) -> list[str]:
        """The key results, one sentence each."""
        out = []
        r = self.robust_acc
        if r.notna().any():
            worst = str(r.idxmin())
            out.append(f"Least robust class under PGD: {worst} ({_pct(r[worst])} robust, mean "
                       f"{_pct(r.mean())}).")
        counts = self.sinks.counts.to_numpy()
        if counts.sum() > 0:
            a, b = np.unravel_index(int(counts.argmax()), counts.shape)
            out.append(f"Largest flow: {int(counts[a, b])} of class {self.classes[a]}'s "
                       f"{int(counts[a].sum())} adversarial examples ({_pct(counts[a, b] / counts[a].sum())}) "
                       f"land in class {self.classes[b]}.")
        counts = self.sinks.counts.to_numpy()
        if counts.sum() > 0:
            received = counts.sum(axis=0) / counts.sum()
            b = int(received.argmax())
            out.append(f"Class {self.classes[b]} receives the most adversarial examples overall "
                       f"({_pct(received[b])} of {int(counts.sum())}).")
        sym = self.sinks.symmetry.overall
        if math.isfinite(sym):
            out.append(f"Confusion symmetry (1 = mutual, 0 = one-way): {sym:.2f}.")
        sc = self.sinks.superclass
        if sc and sc.get("share") is not None and math.isfinite(sc["share"]):
            out.append(f"{_pct(sc['share'])} of adversarial confusions stay inside the true super-class "
                       f"(chance: {_pct(sc['chance'])}).")
        s = self.similarity
        if math.isfinite(s.rho):
            out.append(f"Spearman correlation between nearest-class similarity and robust accuracy: "
                       f"rho = {s.rho:.2f}{_interval(s.rho_interval)}, permutation p = "
                       f"{s.p_value:.3g} ({s.n_perm} permutations).")
        if math.isfinite(s.spread_rho):
            out.append(f"Spearman correlation between within-class feature spread and robust "
                       f"accuracy: rho = {s.spread_rho:.2f}{_interval(s.spread_rho_interval)}, "
                       f"permutation p = {s.spread_p:.3g}.")
        med = self.margins.by_class["median"]
        if med.notna().any():
            out.append(f"Smallest median margin: class {med.idxmin()} ({_num(med.min())}); largest: "
                       f"class {med.idxmax()} ({_num(med.max())}) ({self.margins.norm}).")
        corrupted = self.corruptions.by_corruption["mean"]
        if corrupted.notna().any() and r.notna().any():
            worst_c, worst_a = _lowest(corrupted), _lowest(r)
            same = "the same class" if set(worst_c) & set(worst_a) else "different classes"
            out.append(f"Worst class under common corruptions: {', '.join(worst_c)} "
                       f"({_pct(corrupted.min())}); under attack: {', '.join(worst_a)} "
                       f"({_pct(r.min())}) ({same}).")
        t = self.targeted
        out.append(f"Targeted PGD into class {t.target}: {_pct(t.into_rate)} success; out of it toward "
                   f"other classes: {_pct(t.out_rate)}.")
        if self.feature_datasets is not None:
            for name, v in self.feature_datasets.similarity.items():
                if name in ("trained_on_robust ~ robust_model_clean", "trained_on_non_robust ~ standard_model_clean"):
                    out.append(f"Profile cosine {name}: {_num(v)}.")
        return out

    # ------------------------------------------------------------------ outputs
    def to_dict(self) -> dict:
        by_class = self.report.by_class
        audit = {c: [None if not np.isfinite(v) else float(v) for v in by_class[c]]
                 for c in ("clean_acc", "robust_acc")}
        return {
            "schema": "robustfair.Explanation",
            "schema_version": 1,
            "dataset": self.dataset,
            "classes": self.classes,
            "settings": self.settings,
            "meta": self.meta,
            "findings": self.findings(),
            "audit": {"attacks": self.report.attacks, "n": int(len(self.report.predictions)),
                      "classes": self.classes, **audit},
            "sinks": self.sinks.to_dict(),
            "similarity": self.similarity.to_dict(),
            "margins": self.margins.to_dict(),
            "corruptions": self.corruptions.to_dict(),
            "targeted": self.targeted.to_dict(),
            "feature_datasets": None if self.feature_datasets is None else self.feature_datasets.to_dict(),
        }

    def to_json(self) -> str:
        """The explanation as strict JSON: a value that is not a finite number (a class with
        no test points under ``--limit``) is written as ``null``."""
        plain = json.loads(json.dumps(self.to_dict(), default=_json_default))  # NaN kept here
        return json.dumps(_finite_or_none(plain), indent=1, allow_nan=False)

    def to_markdown(self) -> str:
        s = self.settings
        lines = [f"# Why are some classes less robust? ({self.dataset})", "",
                 f"{s['n']} test points; PGD-{s['attack_steps']} {s['norm']} eps = {s['eps']:.6g}; "
                 f"seed {s['seed']}.", "", "## Key findings", ""]
        lines += [f"- {f}" for f in self.findings()]
        lines += ["", "## Class-wise accuracy", ""]
        by = self.report.by_class
        med = self.margins.by_class
        near = self.similarity.nearest
        corr = self.corruptions.by_corruption["mean"]
        rows = [[c, int(by.loc[c, "n"]), _pct(by.loc[c, "clean_acc"]), _pct(by.loc[c, "robust_acc"]),
                 _pct(corr[c]), _num(med.loc[c, "median"]), str(near.loc[c, "nearest"]),
                 _num(near.loc[c, "similarity"]), _num(near.loc[c, "spread"])]
                for c in self.classes]
        lines += _table(["class", "n", "clean", "robust", "corrupted (mean)", "median margin",
                         "nearest class", "similarity", "spread"], rows)
        lines += ["", "## Confusion sinks", "",
                  "Where each class's successful adversarial examples (clean-correct, fooled) land.", ""]
        sk = self.sinks.sinks
        k = sum(1 for c in sk.columns if c.startswith("sink_"))
        rows = []
        for c in self.classes:
            row = [c, int(sk.loc[c, "fooled"])]
            for j in range(1, k + 1):
                name = sk.loc[c, f"sink_{j}"]
                row.append("" if name is None or (isinstance(name, float) and math.isnan(name))
                           else f"{name} ({_pct(sk.loc[c, f'share_{j}'])})")
            rows.append(row)
        lines += _table(["class", "fooled"] + [f"sink {j}" for j in range(1, k + 1)], rows)
        sym = self.sinks.symmetry
        lines += ["", f"Symmetry of confusion ({sym.basis}s): overall {_num(sym.overall)}. "
                  "Most confused pairs:", ""]
        lines += _table(["a", "b", "a→b", "b→a", "score"],
                        [[p.a, p.b, _num(p.a_to_b), _num(p.b_to_a), _num(p.score)]
                         for p in sym.pairs.head(8).itertuples()])
        if self.sinks.superclass:
            sc = self.sinks.superclass
            lines += ["", f"Within the true super-class: {_pct(sc['share'])} of {sc['n']} adversarial "
                      f"confusions (chance {_pct(sc['chance'])})."]
        sim = self.similarity
        lines += ["", "## Feature-space class similarity", "",
                  "Cosine similarity of class centroids of the penultimate features (centred); each "
                  "class's nearest class is in the table above.", "",
                  f"Spearman rho(nearest-class similarity, robust accuracy) = {_num(sim.rho)}"
                  f"{_interval(sim.rho_interval)}, two-sided permutation p = "
                  f"{_num(sim.p_value, 4)} ({sim.n_perm} permutations, seed {sim.seed}).", "",
                  "Within-class spread (the 'spread' column): RMS distance of a class's features "
                  "to its centroid, in units of the mean distance between centroids. Spearman "
                  f"rho(spread, robust accuracy) = {_num(sim.spread_rho)}"
                  f"{_interval(sim.spread_rho_interval)}, permutation p = "
                  f"{_num(sim.spread_p, 4)}. Intervals: 95% bootstrap over the classes.", "",
                  "![similarity](similarity.png)"]
        m = self.margins
        lines += ["", "## Margins", "",
                  f"Smallest {m.norm} eps at which PGD-{m.settings['steps']} flips each point, by bisection "
                  f"(tolerance {m.tol:.3g}, search limit {m.eps_max:.3g}; 0 = misclassified clean; "
                  "censored = not flipped within the limit). An upper bound on the true distance.", ""]
        mb = m.by_class
        lines += _table(["class", "n", "q1", "median", "q3", "censored"],
                        [[c, int(mb.loc[c, "n"]), _num(mb.loc[c, "q1"]), _num(mb.loc[c, "median"]),
                          _num(mb.loc[c, "q3"]), _pct(mb.loc[c, "censored"])] for c in self.classes])
        at_eps = m.curve([s["eps"]]).iloc[0]
        lines += ["", f"Robust accuracy at eps {s['eps']:.4g} read off the margins (robust iff margin > eps): "
                  f"{_pct(at_eps['all'])} (the PGD audit: {_pct(self.report.overall['robust_acc'])}; the two differ "
                  "by the attacks' random starts and the bisection tolerance).", "",
                  "![margins](margins.png)", "", "![robust accuracy vs eps](robust_vs_eps.png)"]
        cr = self.corruptions
        table = cr.by_corruption
        lines += ["", "## Common corruptions", "",
                  f"Accuracy per class, mean over severities {cr.severities} (CIFAR-10-C-like settings).", ""]
        cols = list(table.columns)
        lines += _table(["class", "clean"] + cols + ["robust"],
                        [[c, _pct(cr.clean_acc[c])] + [_pct(table.loc[c, col]) for col in cols]
                         + [_pct(self.robust_acc[c])] for c in self.classes])
        worst = cr.worst_classes()
        lines += ["", "Worst class: " + ", ".join(f"{k}: {v}" for k, v in worst.items()) + ".", "",
                  "![corruption vs attack](corruption_vs_attack.png)"]
        t = self.targeted
        lines += ["", f"## Targeted vulnerability of class {t.target}", "",
                  f"Targeted PGD ({t.settings.get('steps')} steps) on clean-correct points. Into {t.target}: "
                  f"{_pct(t.into_rate)}; out of {t.target}: {_pct(t.out_rate)}.", ""]
        rows = [[o, int(t.into.loc[o, "n"]), _pct(t.into.loc[o, "success"]), int(t.out_of.loc[o, "n"]),
                 _pct(t.out_of.loc[o, "success"])] for o in t.into.index]
        lines += _table(["other class", "n", f"other → {t.target}", f"n ({t.target})", f"{t.target} → other"], rows)
        if self.feature_datasets is not None:
            fd = self.feature_datasets
            lines += ["", "## Robust and non-robust feature data sets (Ilyas et al. 2019)", "",
                      f"{fd.info['n_images']} training images; class-wise test accuracy of standard models "
                      "trained on each, beside the source models.", ""]
            p = fd.profiles
            lines += _table(["class"] + list(p.columns),
                            [[c] + [_pct(p.loc[c, col]) for col in p.columns] for c in self.classes])
            lines += ["", "Cosine similarity of class-wise profiles:", ""]
            lines += [f"- {k}: {_num(v)}" for k, v in fd.similarity.items()]
        return "\n".join(lines) + "\n"

    def plots(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write the four figures into ``out_dir``; return their paths."""
        from . import plots

        out = Path(out_dir)
        s = self.settings
        m = self.margins
        return [
            plots.similarity_heatmap(self.similarity.similarity, out / "similarity.png",
                                     title="Class-centroid cosine similarity (penultimate features)"),
            plots.margin_boxes(m.margins, m.y, self.classes, out / "margins.png", eps=s["eps"],
                               eps_max=m.eps_max, norm=m.norm),
            plots.robust_curves(m.curve(), out / "robust_vs_eps.png", eps=s["eps"], norm=m.norm),
            plots.corruption_vs_attack(self.corruptions.clean_acc, self.corruptions.by_corruption["mean"],
                                       self.robust_acc, out / "corruption_vs_attack.png"),
        ]

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``explain.md``, ``explain.json`` and the figures into ``out_dir``.

        Everything is written into a staging folder first, then published as one unit
        (:func:`~robustfair._atomic.write_folder_unit`): the old ``explain.json`` goes first
        and the new one last, so a killed save never leaves a record of a mixed explanation.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} exists and is not a directory")

        def fill(staging: Path) -> None:
            (staging / "explain.md").write_text(self.to_markdown(), encoding="utf-8")
            self.plots(staging)

        text = self.to_json()  # before anything is written: a value it cannot hold fails here
        try:
            # one unit: explain.json (the record a study report looks for) goes last
            write_folder_unit(out, fill, "explain.json",
                              lambda path: path.write_text(text, encoding="utf-8"),
                              what="an explanation being written")
        except OSError as exc:
            raise ConfigError(f"cannot write to {out}: {exc}") from None
        return [out / name for name in FILES]


def _lowest(values: pd.Series) -> list[str]:
    """The class(es) with the lowest value (all of them when several tie)."""
    v = values.dropna()
    return [str(c) for c in v.index[np.isclose(v.to_numpy(dtype=float), v.min())]]


def _interval(interval) -> str:
    """`` [lo, hi]`` (95% bootstrap over classes) or nothing when undefined."""
    lo, hi = interval
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f" (95% interval over classes [{lo:.2f}, {hi:.2f}])"


def _pct(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * float(v):.1f}%"


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    v = float(v)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "> limit"
    return f"{v:.{digits}g}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _finite_or_none(value):
    """``value`` with every NaN or infinity (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


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
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
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

    attack = build_attack("pgd", eps=eps, norm=norm, steps=attack_steps, seed=seed)
    report = audit(model, x, y, attacks={"pgd": attack}, classes=classes, batch_size=batch_size,
                   seed=seed, progress=progress)
    robust_acc = report.by_class["robust_acc"].to_numpy(dtype=float)
    sinks = sink_analysis(report, attack="pgd", top_k=top_k, fine_to_coarse=fine_to_coarse)
    similarity = class_similarity(model, x, y, classes=classes, robust_acc=robust_acc, n_perm=n_perm,
                                  seed=seed, batch_size=batch_size)
    margins = margin_analysis(model, x, y, classes=classes, norm=norm, eps_max=float(eps_max), tol=tol,
                              steps=margin_steps, seed=seed, batch_size=batch_size, progress=progress)
    corr = corruption_accuracy(model, x, y, classes=classes, corruptions=corruptions,
                               severities=severities, robust_acc=robust_acc, seed=seed,
                               batch_size=batch_size)
    if target is None:
        target = classes.index(report.worst_class("robust_acc")[0])
    targeted = targeted_vulnerability(model, x, y, target, classes=classes, eps=eps, norm=norm,
                                      steps=attack_steps, seed=seed, batch_size=batch_size,
                                      progress=progress)
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
                                      batch_size=batch_size, progress=progress, **options)
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
