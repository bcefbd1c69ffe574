"""The :class:`Explanation` of one model: its findings (one sentence each), its JSON, its
markdown and its figures, written as one unit. :func:`robustfair.explain.explain_model` (in
``run.py``) builds it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import write_folder_unit
from .._formatting import format_p, interval, percent
from .._json import jsonable
from ..errors import ConfigError
from .corruptions import CorruptionResult
from .feature_datasets import FeatureDatasetStudy
from .margins import Margins
from .similarity import ClassSimilarity
from .sinks import ConfusionSinks
from .targeted import TargetedVulnerability

__all__ = ["Explanation"]

FILES = ("explain.md", "explain.json", "similarity.png", "margins.png", "robust_vs_eps.png",
         "corruption_vs_attack.png")


@dataclass
class Explanation:
    """All explain measures for one model on one data set (the list: :mod:`robustfair.explain.run`)."""

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
                       f"{format_p(s.p_value)} ({s.n_perm} permutations).")
        if math.isfinite(s.spread_rho):
            out.append(f"Spearman correlation between within-class feature spread and robust "
                       f"accuracy: rho = {s.spread_rho:.2f}{_interval(s.spread_rho_interval)}, "
                       f"permutation p = {format_p(s.spread_p)}.")
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
        return json.dumps(jsonable(self.to_dict()), indent=1, allow_nan=False)

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
                  f"{format_p(sim.p_value)} ({sim.n_perm} permutations, seed {sim.seed}).", "",
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


def _interval(bounds) -> str:
    """`` [lo, hi]`` (95% bootstrap over classes) or nothing when undefined."""
    shown = interval(*bounds, scale=1, digits=2)
    return f" (95% interval over classes {shown})" if shown else ""


def _pct(v) -> str:
    return percent(v, unit="%", missing="–")


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
