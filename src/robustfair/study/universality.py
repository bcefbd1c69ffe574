"""Question (a), universality: how alike are the class-wise accuracy profiles of models that
differ only in architecture (or only in optimisation hyper-parameters, or only in seed)?
Cosine similarity of matched runs (the same in every other setting), its centred form (Pearson
r of the profiles), bootstrap intervals over test points, and whether the worst class is the
same."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import shifted_interval
from .analysis import StudyData, as_study_data, cosine, profile_metric, worst_classes
from .inference import class_counts, resample_accuracies

__all__ = ["Similarity", "Universality", "group_profiles", "matched_cosines",
           "similarity_matrix", "similarity_replicates", "universality"]


def matched_cosines(data: "StudyData | pd.DataFrame", vary: list[str], *,
                    intervals: bool = False, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Cosine similarity of every pair of runs that differ only in the ``vary`` columns.

    One row per pair: ``a``, ``b`` (run keys), ``dataset``, ``objective``, ``metric``,
    ``cos``, ``cos_centered`` (the cosine of the deviations from the class mean, i.e. Pearson's
    r: near-equal accuracies give a cosine near 1 whatever their pattern, the centred one does
    not) and ``a_<col>`` / ``b_<col>`` for each varied column. ``intervals``: also
    ``cos_lo``/``cos_hi`` and ``cos_centered_lo``/``cos_centered_hi``, 95% bootstrap intervals
    over the two runs' test points, shifted onto the estimate (:func:`shifted_interval`) (:func:`similarity_replicates`).
    """
    data = as_study_data(data)
    keys = [c for c in data.config_cols if c not in vary]
    wide = {m: data.profile(m) for m in ("clean_acc", "robust_acc")}
    rows = []
    for _, group in data.groups(keys):
        for a, b in itertools.combinations(group.to_dict("records"), 2):
            if a["objective"] != b["objective"]:
                continue  # never compare a clean profile with a robust one
            metric = profile_metric(a["objective"])
            pa = wide[metric].loc[a["run"]].to_numpy(float)
            pb = wide[metric].loc[b["run"]].to_numpy(float)
            keep = np.isfinite(pa) | np.isfinite(pb)  # classes of this data set only
            pa, pb = pa[keep], pb[keep]
            row = {"a": a["run"], "b": b["run"], "dataset": a["dataset"],
                   "objective": a["objective"], "metric": metric, "cos": cosine(pa, pb),
                   "cos_centered": cosine(pa - pa.mean(), pb - pb.mean())}
            row.update({f"a_{c}": a[c] for c in vary})
            row.update({f"b_{c}": b[c] for c in vary})
            rows.append(row)
    frame = pd.DataFrame(rows)
    if intervals and len(frame):
        for metric, g in frame.groupby("metric", sort=False):
            cos, r = similarity_replicates(data, metric, g["a"].tolist(), g["b"].tolist(),
                                           n_boot=n_boot, seed=seed)
            with np.errstate(all="ignore"):
                for name, reps in (("cos", cos), ("cos_centered", r)):
                    # shifted onto the estimate: the extra noise of a resample pulls a
                    # correlation of noisy profiles toward 0 (a plain percentile interval can
                    # miss the estimate)
                    bounds = [shifted_interval(reps[:, j], est) for j, est in
                              enumerate(g[name].to_numpy(float))]
                    frame.loc[g.index, f"{name}_lo"] = [b[0] for b in bounds]
                    frame.loc[g.index, f"{name}_hi"] = [b[1] for b in bounds]
    return frame


def similarity_replicates(data: "StudyData | pd.DataFrame", metric: str, a: list[str],
                          b: list[str], *, n_boot: int = 1000,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and centred correlation (Pearson r of the class profiles) of runs ``a[i]`` and
    ``b[i]`` over ``n_boot`` resamples of their test points (each class's count redrawn
    binomially): two arrays ``(n_boot, pairs)``. The cosine of accuracy vectors sits near 1
    whenever every class is well above 0 (0.999 for two standard models); the centred one asks
    whether the same classes are above and below the mean, and its interval shows whether
    test-point noise alone could produce the pattern."""
    data = as_study_data(data)
    hits_f, n_f = class_counts(data, metric)
    hits_f, n_f = hits_f.set_index(data.runs["run"]), n_f.set_index(data.runs["run"])
    rng = np.random.default_rng(seed)
    cos = np.full((n_boot, len(a)), np.nan)
    r = np.full((n_boot, len(a)), np.nan)
    for i, (ra, rb) in enumerate(zip(a, b)):
        keep = (n_f.loc[ra].notna() & n_f.loc[rb].notna()).to_numpy()
        hits = np.stack([hits_f.loc[ra].to_numpy()[keep], hits_f.loc[rb].to_numpy()[keep]])
        n = np.stack([n_f.loc[ra].to_numpy()[keep], n_f.loc[rb].to_numpy()[keep]])
        acc = resample_accuracies(hits, n, n_boot, rng)       # n_boot × 2 × K
        cos[:, i] = cosine(acc[:, 0], acc[:, 1])
        centred = acc - acc.mean(axis=-1, keepdims=True)
        r[:, i] = cosine(centred[:, 0], centred[:, 1])
    return cos, r


def group_profiles(data: "StudyData | pd.DataFrame", by: list[str], *, dataset: str,
                   objective: str) -> pd.DataFrame:
    """Mean class profile (the objective's metric) of each value of ``by`` (averaged over
    every other axis and the seeds), within one data set and objective. Rows: ``by`` values
    joined as text; columns: classes."""
    data = as_study_data(data)
    runs = data.runs[(data.runs["dataset"] == dataset) & (data.runs["objective"] == objective)]
    wide = data.profile(profile_metric(objective))
    names = runs[by].astype(str).agg(", ".join, axis=1) if len(by) > 1 else runs[by[0]].astype(str)
    frame = wide.loc[runs["run"]].dropna(axis=1, how="all").assign(_name=names.to_numpy())
    order = list(dict.fromkeys(names))
    return frame.groupby("_name", sort=False).mean().loc[order]


def similarity_matrix(profiles_by: pd.DataFrame) -> pd.DataFrame:
    """Cosine similarity between the rows of a profiles frame."""
    names = profiles_by.index.tolist()
    m = np.array([[cosine(profiles_by.loc[a], profiles_by.loc[b]) for b in names] for a in names])
    return pd.DataFrame(m, index=names, columns=names)


# ------------------------------------------------------------------------------ the summary
@dataclass
class Similarity:
    """Cosine similarities of matched pairs, within one data set and objective."""

    dataset: str
    objective: str
    metric: str
    across: str            # "architectures", "hyper-parameters" or "seeds"
    values: list[float]
    centered: list[float] = field(default_factory=list)  # of deviations from the class mean
    # 95% intervals of the MEAN over the pairs (pairs and test points resampled)
    mean_interval: tuple[float, float] = (math.nan, math.nan)
    centered_mean_interval: tuple[float, float] = (math.nan, math.nan)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def lo(self) -> float:
        return float(np.min(self.values))

    @property
    def hi(self) -> float:
        return float(np.max(self.values))

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


@dataclass
class Universality:
    similarities: list[Similarity] = field(default_factory=list)
    # (dataset, objective) -> {model: the worst class(es) of its mean profile}
    worst_by_model: dict = field(default_factory=dict)
    worst_by_hparams: dict = field(default_factory=dict)


def universality(data: "StudyData | pd.DataFrame", *, n_boot: int = 1000) -> Universality:
    """Matched-pair cosine ranges across architectures, hyper-parameters and seeds, and the
    worst class of each architecture's (and hyper-parameter setting's) mean profile. Each
    similarity comes with the centred correlation beside the cosine and 95% intervals of their
    means over the pairs (pairs and test points resampled)."""
    data = as_study_data(data)
    out = Universality()
    hp = data.hparam_cols
    plans = []
    if data.varies("model"):
        plans.append(("architectures", ["model"]))
    if hp:
        plans.append(("hyper-parameters", hp))
    if data.varies("seed"):
        plans.append(("seeds", ["seed"]))
    for across, vary in plans:
        pairs = matched_cosines(data, vary)
        if pairs.empty:
            continue
        pairs = pairs.dropna(subset=["cos"])
        for (dataset, objective, metric), g in pairs.groupby(["dataset", "objective", "metric"],
                                                              sort=False):
            centered = g["cos_centered"].dropna().tolist()
            cos, r = similarity_replicates(data, metric, g["a"].tolist(), g["b"].tolist(),
                                           n_boot=n_boot)
            pick = np.random.default_rng(1).integers(0, len(g), size=(n_boot, len(g)))
            with np.errstate(all="ignore"):
                mean_cos = np.nanmean(np.take_along_axis(cos, pick, axis=1), axis=1)
                mean_r = np.nanmean(np.take_along_axis(r, pick, axis=1), axis=1)
                ci = shifted_interval(mean_cos, float(np.mean(g["cos"])))
                ci_r = shifted_interval(mean_r, float(np.mean(centered))) if centered else (
                    math.nan, math.nan)
            out.similarities.append(Similarity(dataset, objective, metric, across,
                                               g["cos"].tolist(), centered, ci, ci_r))
    for (dataset, objective), _ in data.runs.groupby(["dataset", "objective"], sort=False):
        for by, target in ((["model"], out.worst_by_model), (hp, out.worst_by_hparams)):
            if not by or not data.varies(by[0]):
                continue
            prof = group_profiles(data, by, dataset=dataset, objective=objective)
            if len(prof) > 1:
                target[(dataset, objective)] = {name: worst_classes(row)
                                                for name, row in prof.iterrows()}
    return out
