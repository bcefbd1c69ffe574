"""The numbers behind a study's report, computed from its tidy results table:
:class:`StudyData` (the per-run frame and the runs × classes profiles, computed once) and the
descriptive answers to the paper's three questions (the hypothesis tests are in
:mod:`~robustfair.study.inference`):

(a) universality: in :mod:`~robustfair.study.universality`; here, whether adversarial
    training widened the class gap (:func:`training_gap`);
(b) explanation: which classes the adversarially trained models confuse most under attack;
(c) mitigation: which method raised worst-class robust accuracy, at what cost on average
    (mean ± std over seeds).

The profile compared is the class-wise *robust* accuracy for adversarially trained models and
the *clean* accuracy for standard ones (a standard model's robust accuracy is near zero for
every class, which says nothing about its shape).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..metrics import cosine, wilson_interval  # cosine: re-exported for the study's callers
from ..metrics.measures import ClassValues, get_measure

__all__ = [
    "StudyData",
    "as_study_data",
    "baseline_method",
    "config_cols",
    "cosine",
    "hparam_cols",
    "mitigation_effects",
    "profile_metric",
    "profiles",
    "run_frame",
    "same_worst_class",
    "top_confusions",
    "training_gap",
    "worst_classes",
]

# the results table's per-class columns (robustfair.study.table writes them); the others are config
RESULT_COLUMNS = ("class", "class_index", "n", "measure", "value", "lo", "hi")
# config columns that are not "optimisation hyper-parameters"
NOT_HPARAMS = ("dataset", "model", "objective", "mitigation", "eps", "seed")


def config_cols(results: pd.DataFrame) -> list[str]:
    """The config columns of a results table (everything but run, label and the measures)."""
    return [c for c in results.columns if c not in RESULT_COLUMNS and c not in ("run", "label")]


def run_frame(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run, label, config columns, and per-class summaries of its accuracies:
    ``{clean,robust}_{mean,worst,std}`` (mean, minimum and std over classes) and
    ``{clean,robust}_worst_class`` (tied classes joined by ``/``)."""
    cols = ["run", "label"] + config_cols(results)
    runs = results.drop_duplicates("run")[cols].set_index("run")
    for metric in ("clean", "robust"):
        # the pivot is sorted by run key: align it with ``runs`` (in order of appearance) before
        # anything is assigned by position
        wide = profiles(results, f"{metric}_acc").reindex(runs.index)
        for name in ("mean", "worst", "std"):
            runs[f"{metric}_{name}"] = row_measure(wide, name)
        runs[f"{metric}_worst_class"] = ["/".join(worst_classes(row.dropna()))
                                         for _, row in wide.iterrows()]
    return runs.reset_index()


def row_measure(wide: pd.DataFrame, name: str) -> np.ndarray:
    """The discrepancy measure ``name`` (:mod:`robustfair.metrics.measures`) of each row of
    ``wide`` (runs × classes), over the classes the row has (NaN: its data set lacks the class)."""
    compute = get_measure(name).compute
    values = wide.to_numpy(dtype=float)
    have = ~np.isnan(values)
    out = np.full(len(values), np.nan)
    for pattern in {tuple(row) for row in have}:   # runs of one data set share their classes
        rows, cols = (have == pattern).all(axis=1), np.array(pattern, dtype=bool)
        if cols.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                out[rows] = compute(ClassValues(values[np.ix_(rows, cols)]))
    return out


def profiles(results: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Runs × classes of one measure (classes in their data set's order)."""
    rows = results[results["measure"] == measure]
    order = rows.drop_duplicates("class").sort_values("class_index")["class"].tolist()
    wide = rows.pivot(index="run", columns="class", values="value")
    return wide[[c for c in order if c in wide.columns]]


def profile_metric(objective: str) -> str:
    """The accuracy whose class profile describes a model: robust, unless trained normally."""
    return "clean_acc" if objective == "standard" else "robust_acc"


class StudyData:
    """A results table with what every analysis needs computed once: the per-run frame
    (:func:`run_frame`), the runs × classes profile of each measure, the config columns."""

    def __init__(self, results: pd.DataFrame) -> None:
        self.results = results
        self.config_cols = config_cols(results)
        self.runs = run_frame(results)
        self._profiles: dict[str, pd.DataFrame] = {}

    def profile(self, measure: str) -> pd.DataFrame:
        if measure not in self._profiles:
            self._profiles[measure] = profiles(self.results, measure)
        return self._profiles[measure]

    def varies(self, col: str) -> bool:
        return self.runs[col].astype(str).nunique() > 1

    @property
    def hparam_cols(self) -> list[str]:
        """Config columns that vary in this study and are optimisation hyper-parameters."""
        return [c for c in self.config_cols if c not in NOT_HPARAMS and self.varies(c)]

    def groups(self, keys: list[str]):
        """(key values, runs) for runs equal in every ``keys`` column."""
        if not keys:
            return [((), self.runs)]
        return self.runs.groupby([self.runs[k].astype(str) for k in keys], sort=False)


def as_study_data(data: "StudyData | pd.DataFrame") -> StudyData:
    """``data`` itself, or a :class:`StudyData` of a results table."""
    return data if isinstance(data, StudyData) else StudyData(data)


def hparam_cols(data: "StudyData | pd.DataFrame") -> list[str]:
    """Config columns that vary in this study and are optimisation hyper-parameters."""
    return as_study_data(data).hparam_cols


def worst_classes(profile: pd.Series, tol: float = 1e-9) -> list[str]:
    """Every class tied for the lowest value (several classes at 0% are common under attack).

    >>> worst_classes(pd.Series([0.5, 0.0, 0.0], index=["a", "b", "c"]))
    ['b', 'c']
    """
    low = profile.min()
    return [str(c) for c, v in profile.items() if v <= low + tol]


def same_worst_class(worst: dict) -> bool:
    """Whether one class is (among) the worst of every profile."""
    common = set.intersection(*(set(v) for v in worst.values())) if worst else set()
    return bool(common)


# ------------------------------------------------------------------------------ gap
def training_gap(data: "StudyData | pd.DataFrame") -> pd.DataFrame:
    """Did adversarial training widen the class gap? Per (dataset, model, adversarial
    objective): the spread of class accuracies of the standard model (clean) vs the
    adversarially trained one (clean and robust), from runs that differ only in objective.

    Columns: dataset, model, objective, pairs, std_standard_clean, std_at_clean,
    std_at_robust, worstdev_standard_clean, worstdev_at_robust (the worst class's deviation
    from the class mean), each a mean over the pairs, with ``_sd`` (std over pairs).
    """
    data = as_study_data(data)
    keys = [c for c in data.config_cols if c != "objective"]
    rows = []
    for _, group in data.groups(keys):
        std = group[group["objective"] == "standard"].to_dict("records")
        adv = group[group["objective"] != "standard"].to_dict("records")
        for s, a in itertools.product(std, adv):
            rows.append({
                "dataset": a["dataset"], "model": a["model"], "objective": a["objective"],
                "std_standard_clean": s["clean_std"], "std_at_clean": a["clean_std"],
                "std_at_robust": a["robust_std"],
                "worstdev_standard_clean": s["clean_worst"] - s["clean_mean"],
                "worstdev_at_robust": a["robust_worst"] - a["robust_mean"]})
    if not rows:
        return pd.DataFrame()
    pairs = pd.DataFrame(rows)
    value_cols = [c for c in pairs.columns if c.startswith(("std_", "worstdev_"))]
    grouped = pairs.groupby(["dataset", "model", "objective"], sort=False)
    out = grouped[value_cols].mean()
    sd = grouped[value_cols].std(ddof=1).add_suffix("_sd")
    out = out.join(sd)
    out.insert(0, "pairs", grouped.size())
    return out.reset_index()


# ------------------------------------------------------------------------------ (b)
def top_confusions(confusion: pd.DataFrame, k: int = 3) -> list[dict]:
    """The ``k`` largest off-diagonal cells of a true × predicted count matrix, as the share
    of the true class's points, with a 95% Wilson interval.

    >>> m = pd.DataFrame([[8, 2], [5, 5]], index=["a", "b"], columns=["a", "b"])
    >>> [(c["true"], c["pred"], c["rate"]) for c in top_confusions(m, k=1)]
    [('b', 'a', 0.5)]
    """
    counts = confusion.to_numpy(dtype=float)
    totals = counts.sum(axis=1)
    cells = []
    for i, j in itertools.product(range(len(counts)), repeat=2):
        if i != j and totals[i] > 0 and counts[i, j] > 0:
            lo, hi = wilson_interval(np.array([counts[i, j]]), np.array([totals[i]]))
            cells.append({"true": str(confusion.index[i]), "pred": str(confusion.columns[j]),
                          "count": int(counts[i, j]), "total": int(totals[i]),
                          "rate": float(counts[i, j] / totals[i]), "lo": float(lo[0]),
                          "hi": float(hi[0])})
    cells.sort(key=lambda c: (-c["rate"], -c["count"]))
    return cells[:k]


# ------------------------------------------------------------------------------ (c)
def mitigation_effects(data: "StudyData | pd.DataFrame") -> pd.DataFrame:
    """Each training method (objective + mitigation) against its baseline (the same objective
    without mitigation, else PGD-AT, else standard training), within runs that share every
    other setting. Mean and std over seeds of the average and worst-class robust accuracy
    (and clean), and the change from the baseline.
    """
    data = as_study_data(data)
    runs = data.runs
    method = runs["objective"] + " + " + runs["mitigation"]
    runs = runs.assign(method=method.str.replace(" + none", "", regex=False))
    keys = [c for c in data.config_cols if c not in ("objective", "mitigation", "seed")]
    shown = [k for k in keys if data.varies(k)]
    rows = []
    groups = runs.groupby([runs[k].astype(str) for k in keys], sort=False) if keys else [((), runs)]
    for _, ctx in groups:
        if ctx["method"].nunique() < 2:
            continue
        stats = ctx.groupby("method", sort=False).agg(
            seeds=("run", "size"), objective=("objective", "first"),
            mitigation=("mitigation", "first"),
            robust_mean=("robust_mean", "mean"), robust_mean_sd=("robust_mean", "std"),
            robust_worst=("robust_worst", "mean"), robust_worst_sd=("robust_worst", "std"),
            clean_mean=("clean_mean", "mean"), clean_mean_sd=("clean_mean", "std"),
            clean_worst=("clean_worst", "mean"), clean_worst_sd=("clean_worst", "std"))
        for name, row in stats.iterrows():
            base = baseline_method(stats, row)
            entry = {"dataset": ctx["dataset"].iloc[0], "model": ctx["model"].iloc[0],
                     "context": ", ".join(f"{k}={ctx[k].iloc[0]}" for k in shown) or "all runs",
                     "method": name, **row.to_dict(),
                     "baseline": base}
            if base is not None:
                b = stats.loc[base]
                for col in ("robust_mean", "robust_worst", "clean_mean", "clean_worst"):
                    entry[f"{col}_change"] = row[col] - b[col]
            rows.append(entry)
    return pd.DataFrame(rows)


def baseline_method(stats: pd.DataFrame, row: pd.Series) -> str | None:
    """The method a method is measured against (``stats``: one row per method, with its
    objective and mitigation): the same objective without mitigation, else PGD-AT, else
    standard training; None for a baseline itself."""
    plain = stats[stats["mitigation"] == "none"]
    if row["mitigation"] == "none" and row["objective"] in ("standard", "pgd_at"):
        return None  # the baselines themselves
    for objective in (row["objective"], "pgd_at", "standard"):
        match = plain[plain["objective"] == objective]
        if len(match) and match.index[0] != row.name:
            return str(match.index[0])
    return None
