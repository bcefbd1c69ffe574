"""The study report's figures: each builder takes the study's data and returns a
:class:`ReportFigure` (a PNG with its title and caption) or, for a figure the study cannot
support (e.g. no architecture axis), the reason as a string."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import plots
from .analysis import StudyData
from .store import StudyStore
from .summary import confusion_runs, summed_confusion
from .universality import group_profiles, similarity_matrix

__all__ = ["ReportFigure", "build_figures"]

MAX_PANELS = 6
MAX_LINES = 16
MAX_POINTS = 20


@dataclass
class ReportFigure:
    """One figure of the report: its file name (without ``.png``), title, caption and PNG."""

    name: str
    title: str
    caption: str
    png: bytes


def build_figures(data: StudyData, epochs: pd.DataFrame | None,
                  store: StudyStore) -> tuple[list[ReportFigure], dict[str, str]]:
    """Every figure the study supports, in the report's order, and the reason for each one
    it does not (name -> reason)."""
    figures: list[ReportFigure] = []
    skipped: dict[str, str] = {}
    for name, builder in (("classwise", _fig_classwise), ("deviation", _fig_deviation),
                          ("similarity_architectures", _fig_similarity_arch),
                          ("similarity_hparams", _fig_similarity_hparams), ("eps", _fig_eps),
                          ("epochs", _fig_epochs), ("tradeoff", _fig_tradeoff),
                          ("confusion", _fig_confusion)):
        made = builder(data, epochs, store)
        if isinstance(made, str):
            skipped[name] = made
        else:
            figures.append(made)
    return figures, skipped

def _mean_profiles(data: StudyData, runs: pd.DataFrame, measure: str) -> pd.Series:
    return data.profile(measure).loc[runs["run"]].dropna(axis=1, how="all").mean(axis=0)


def _baseline_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs without mitigation, if there are any (standard vs adversarial training proper)."""
    plain = runs[runs["mitigation"] == "none"]
    return plain if len(plain) else runs


def _fig_classwise(data, epochs, store):
    runs = _baseline_runs(data.runs)
    panels = []
    for (dataset, model), g in runs.groupby(["dataset", "model"], sort=False):
        frame = {}
        for objective, go in g.groupby("objective", sort=False):
            frame[f"{objective} clean"] = _mean_profiles(data, go, "clean_acc")
            frame[f"{objective} robust"] = _mean_profiles(data, go, "robust_acc")
        panels.append((f"{dataset}, {model}", pd.DataFrame(frame)))
    note = ""
    if len(panels) > MAX_PANELS:
        note = f" The first {MAX_PANELS} of {len(panels)} data set × model panels are shown."
        panels = panels[:MAX_PANELS]
    return ReportFigure("classwise", "Clean and robust accuracy per class",
                   "Mean over seeds and any other axes; plain bars: clean, hatched: robust "
                   "(the pointwise worst case over the evaluation attacks)." + note,
                   plots.png_bytes(plots.classwise_bars(panels)))


def _label_profiles(data: StudyData, runs: pd.DataFrame, measure: str) -> pd.DataFrame:
    wide = data.profile(measure).loc[runs["run"]].dropna(axis=1, how="all")
    return wide.assign(_label=runs["label"].to_numpy()).groupby("_label", sort=False).mean()


def _fig_deviation(data, epochs, store):
    runs = data.runs
    panels, note = [], ""
    for dataset, g in runs.groupby("dataset", sort=False):
        labels = list(dict.fromkeys(g["label"]))
        if len(labels) > 40:
            note = " Only the first 40 models of a data set are shown."
            g = g[g["label"].isin(labels[:40])]
        panels.append((f"{dataset}: clean accuracy, class − mean",
                       _label_profiles(data, g, "clean_acc_deviation")))
        adv = g[g["objective"] != "standard"]
        if len(adv):
            panels.append((f"{dataset}: robust accuracy, class − mean (adversarially trained)",
                           _label_profiles(data, adv, "robust_acc_deviation")))
    return ReportFigure("deviation", "Each class's deviation from the mean, per model",
                   "Rows: models (mean over seeds); columns: classes; red: below the class "
                   "mean, in accuracy points." + note,
                   plots.png_bytes(plots.deviation_heatmaps(panels[:MAX_PANELS])))


def _similarity_figure(data, by: list[str], name: str, what: str):
    panels = []
    for (dataset, objective), _ in data.runs.groupby(["dataset", "objective"], sort=False):
        prof = group_profiles(data, by, dataset=dataset, objective=objective)
        if len(prof) > 1:
            metric = "clean" if objective == "standard" else "robust"
            panels.append((f"{dataset}, {objective} ({metric} accuracy)",
                           similarity_matrix(prof)))
            centred = prof.sub(prof.mean(axis=1), axis=0)
            panels.append((f"{dataset}, {objective} ({metric}, centred)",
                           similarity_matrix(centred)))
    if not panels:
        return f"no data set and objective has more than one {what}"
    return ReportFigure(name, f"Similarity of class-wise accuracy across {what}s",
                   f"Each {what}'s class profile is averaged over seeds and the other axes. "
                   "Left: cosine (1 means the same shape; near 1 whenever every class is well "
                   "above 0). Right: centred, the Pearson r of the profiles (do the same classes "
                   "sit above and below the mean?). Clean accuracy for standard training, robust "
                   "accuracy for adversarial training; intervals in the summary.",
                   plots.png_bytes(plots.similarity_matrices(panels[:MAX_PANELS])))


def _fig_similarity_arch(data, epochs, store):
    if not data.varies("model"):
        return "the study has one architecture"
    return _similarity_figure(data, ["model"], "similarity_architectures", "architecture")


def _fig_similarity_hparams(data, epochs, store):
    hp = data.hparam_cols
    if not hp:
        return "the study varies no optimisation hyper-parameter"
    return _similarity_figure(data, hp, "similarity_hparams", "hyper-parameter setting")


def _fig_eps(data, epochs, store):
    if not data.varies("eps"):
        return "eps is not an axis of the study"
    runs = data.runs
    adv = runs[runs["objective"] != "standard"]
    if adv.empty:
        return "no adversarially trained run"
    panels = []
    wide = data.profile("robust_acc")
    for (dataset, objective), g in adv.groupby(["dataset", "objective"], sort=False):
        frame = wide.loc[g["run"]].dropna(axis=1, how="all").assign(
            _eps=g["eps"].to_numpy()).groupby("_eps").mean()
        if len(frame) > 1:
            panels.append((f"{dataset}, {objective}", frame.sort_index()))
    if not panels:
        return "no objective was trained at more than one eps"
    return ReportFigure("eps", "Robust accuracy per class against eps",
                   "Each run is trained and evaluated at its eps; mean over seeds and other axes.",
                   plots.png_bytes(plots.eps_curves(panels[:4])))


def _fig_epochs(data, epochs, store):
    if epochs is None or epochs.empty or "scope" not in epochs.columns:
        return "no run has a training log (epochs.csv)"
    rows = epochs[epochs["scope"] == "class"]
    if rows.empty:
        return "the training logs have no per-class rows"
    per_run = rows.groupby(["label", "run", "epoch"], sort=False).agg(
        clean_mean=("clean_acc", "mean"), clean_worst=("clean_acc", "min"),
        robust_mean=("robust_acc", "mean"), robust_worst=("robust_acc", "min")).reset_index()
    labels = list(dict.fromkeys(per_run["label"]))
    note = ""
    if len(labels) > MAX_LINES:
        note = f" The first {MAX_LINES} of {len(labels)} models are shown."
        labels = labels[:MAX_LINES]
    curves = {label: per_run[per_run["label"] == label].groupby("epoch")[
        ["clean_mean", "clean_worst", "robust_mean", "robust_worst"]].mean() for label in labels}
    return ReportFigure("epochs", "The worst class through training",
                   "Per-epoch evaluation on the held-out validation split (PGD at the training "
                   "eps); mean over seeds." + note, plots.png_bytes(plots.epoch_curves(curves)))


def _fig_tradeoff(data, epochs, store):
    runs = data.runs
    grouped = runs.groupby("label", sort=False).agg(
        x=("robust_mean", "mean"), x_sd=("robust_mean", "std"),
        y=("robust_worst", "mean"), y_sd=("robust_worst", "std"))
    if len(grouped) < 2:
        return "the study has a single configuration"
    note = ""
    if len(grouped) > MAX_POINTS:
        note = f" The first {MAX_POINTS} of {len(grouped)} configurations are shown."
        grouped = grouped.iloc[:MAX_POINTS]
    points = grouped.reset_index().rename(columns={"label": "name"})
    return ReportFigure("tradeoff", "Mitigation trade-off: average vs worst-class robust accuracy",
                   "One point per configuration; error bars: std over seeds (none with one "
                   "seed). Up and to the right is better." + note,
                   plots.png_bytes(plots.tradeoff(points)))


def _fig_confusion(data, epochs, store):
    runs = confusion_runs(data.runs)
    panels = []
    for dataset, g in runs.groupby("dataset", sort=False):
        label = g["label"].iloc[0]
        chosen = g[g["label"] == label]
        counts = summed_confusion(store, chosen["run"].tolist())
        rates = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0)
        panels.append((f"{dataset}: {label} ({len(chosen)} run(s))", rates))
    return ReportFigure("confusion", "Confusion under attack",
                   "True class × the prediction under the worst-case attack, as a percentage of "
                   "the true class; summed over seeds.",
                   plots.png_bytes(plots.confusion_matrices(panels[:2])))
