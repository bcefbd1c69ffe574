"""The numbers behind a study's report, computed from its tidy results table.

Everything here answers one of the paper's three questions:

(a) universality: how alike are the class-wise accuracy profiles of models that differ only in
    architecture (or only in optimisation hyper-parameters)? Cosine similarity of matched runs
    (same everything else, same seed), and whether the worst class is the same;
(b) explanation: which classes the adversarially trained models confuse most under attack;
(c) mitigation: which method raised worst-class robust accuracy, at what cost on average
    (mean ± std over seeds).

The profile compared is the class-wise *robust* accuracy for adversarially trained models and
the *clean* accuracy for standard ones (a standard model's robust accuracy is near zero for
every class, which says nothing about its shape).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import wilson_interval
from ..metrics._stats import shifted_interval
from .table import RESULT_COLUMNS

__all__ = [
    "StudyData",
    "config_cols",
    "cosine",
    "group_profiles",
    "hparam_cols",
    "matched_cosines",
    "mitigation_effects",
    "profile_metric",
    "profiles",
    "run_frame",
    "top_confusions",
    "training_gap",
    "universality",
]

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
        runs[f"{metric}_mean"] = wide.mean(axis=1)
        runs[f"{metric}_worst"] = wide.min(axis=1)
        runs[f"{metric}_std"] = wide.std(axis=1, ddof=0)
        runs[f"{metric}_worst_class"] = ["/".join(worst_classes(row.dropna()))
                                         for _, row in wide.iterrows()]
    return runs.reset_index()


def profiles(results: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Runs × classes of one measure (classes in their data set's order)."""
    rows = results[results["measure"] == measure]
    order = rows.drop_duplicates("class").sort_values("class_index")["class"].tolist()
    wide = rows.pivot(index="run", columns="class", values="value")
    return wide[[c for c in order if c in wide.columns]]


def profile_metric(objective: str) -> str:
    """The accuracy whose class profile describes a model: robust, unless trained normally."""
    return "clean_acc" if objective == "standard" else "robust_acc"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; NaN if either is all zeros or has a gap.

    >>> round(cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 4)
    0.7071
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else math.nan


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


def _data(data: "StudyData | pd.DataFrame") -> StudyData:
    return data if isinstance(data, StudyData) else StudyData(data)


def hparam_cols(data: "StudyData | pd.DataFrame") -> list[str]:
    """Config columns that vary in this study and are optimisation hyper-parameters."""
    return _data(data).hparam_cols


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
    data = _data(data)
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


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def similarity_replicates(data: "StudyData | pd.DataFrame", metric: str, a: list[str],
                          b: list[str], *, n_boot: int = 1000,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and centred correlation (Pearson r of the class profiles) of runs ``a[i]`` and
    ``b[i]`` over ``n_boot`` resamples of their test points (each class's count redrawn
    binomially): two arrays ``(n_boot, pairs)``. The cosine of accuracy vectors sits near 1
    whenever every class is well above 0 (0.999 for two standard models); the centred one asks
    whether the same classes are above and below the mean, and its interval shows whether
    test-point noise alone could produce the pattern."""
    data = _data(data)
    hits_f, n_f = class_counts(data, metric)
    hits_f, n_f = hits_f.set_index(data.runs["run"]), n_f.set_index(data.runs["run"])
    rng = np.random.default_rng(seed)
    cos = np.full((n_boot, len(a)), np.nan)
    r = np.full((n_boot, len(a)), np.nan)
    for i, (ra, rb) in enumerate(zip(a, b)):
        keep = (n_f.loc[ra].notna() & n_f.loc[rb].notna()).to_numpy()
        hits = np.stack([hits_f.loc[ra].to_numpy()[keep], hits_f.loc[rb].to_numpy()[keep]])
        n = np.stack([n_f.loc[ra].to_numpy()[keep], n_f.loc[rb].to_numpy()[keep]])
        acc = _resample_accuracies(hits, n, n_boot, rng)       # n_boot × 2 × K
        cos[:, i] = _rowwise_cosine(acc[:, 0], acc[:, 1])
        centred = acc - acc.mean(axis=-1, keepdims=True)
        r[:, i] = _rowwise_cosine(centred[:, 0], centred[:, 1])
    return cos, r


def group_profiles(data: "StudyData | pd.DataFrame", by: list[str], *, dataset: str,
                   objective: str) -> pd.DataFrame:
    """Mean class profile (the objective's metric) of each value of ``by`` (averaged over
    every other axis and the seeds), within one data set and objective. Rows: ``by`` values
    joined as text; columns: classes."""
    data = _data(data)
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


# ------------------------------------------------------------------------------ (a)
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
    data = _data(data)
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


# ------------------------------------------------------------------------------ gap
def training_gap(data: "StudyData | pd.DataFrame") -> pd.DataFrame:
    """Did adversarial training widen the class gap? Per (dataset, model, adversarial
    objective): the spread of class accuracies of the standard model (clean) vs the
    adversarially trained one (clean and robust), from runs that differ only in objective.

    Columns: dataset, model, objective, pairs, std_standard_clean, std_at_clean,
    std_at_robust, worstdev_standard_clean, worstdev_at_robust (the worst class's deviation
    from the class mean), each a mean over the pairs, with ``_sd`` (std over pairs).
    """
    data = _data(data)
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
    data = _data(data)
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
            base = _baseline(stats, row)
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


def _baseline(stats: pd.DataFrame, row: pd.Series) -> str | None:
    plain = stats[stats["mitigation"] == "none"]
    if row["mitigation"] == "none" and row["objective"] in ("standard", "pgd_at"):
        return None  # the baselines themselves
    for objective in (row["objective"], "pgd_at", "standard"):
        match = plain[plain["objective"] == objective]
        if len(match) and match.index[0] != row.name:
            return str(match.index[0])
    return None


# ------------------------------------------------------------------------------ statistics
# The results table keeps, per run and class, the accuracy and the number of test points, not
# each point's outcome. Test-point noise is therefore resampled parametrically: each class's
# count is redrawn Binomial(n, observed accuracy) — the same distribution as resampling the
# class's points — independently for every run. Runs evaluated on the same points are
# positively correlated, so for a difference between two conditions this overstates the
# test-point part of the noise a little (a conservative test); benchmarks that keep the
# per-point outcomes pair them (robustfair.metrics.compare_runs).
N_BOOT = 2000
RUN_MEASURES = ("mean", "worst", "std", "normalized_std", "worst_fraction_mean")


def class_counts(data: "StudyData | pd.DataFrame", measure: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(successes, n): runs × classes, in the order of ``data.runs`` (NaN where a run's data set
    lacks the class)."""
    data = _data(data)
    rows = data.results[data.results["measure"] == measure]
    order = rows.drop_duplicates("class").sort_values("class_index")["class"].tolist()
    n = rows.pivot(index="run", columns="class", values="n").reindex(
        index=data.runs["run"], columns=order)
    acc = data.profile(measure).reindex(index=data.runs["run"], columns=order)
    return (acc * n).round(), n


def _resample_accuracies(hits: np.ndarray, n: np.ndarray, n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """(runs, K) counts -> (n_boot, runs, K) accuracies of binomial resamples of every class."""
    p = np.divide(hits, n, out=np.zeros_like(hits, dtype=float), where=n > 0)
    return rng.binomial(n.astype(np.int64), p, size=(n_boot,) + hits.shape) / np.maximum(n, 1)


def run_statistics(data: "StudyData | pd.DataFrame", *, n_boot: int = N_BOOT, seed: int = 0,
                   confidence: float = 0.95) -> pd.DataFrame:
    """One row per run: for clean and robust accuracy, each of :data:`RUN_MEASURES` (the mean
    over classes, the worst class, the std over classes, the std over the mean, the mean of the
    worst 20% of classes) with a stratified-bootstrap interval (``_lo``/``_hi``, over test
    points), the worst class, and ``<metric>_p_noise``: the chance that classes with one common
    accuracy show a std this large (:func:`robustfair.metrics._stats.noise_floor`), beside
    ``<metric>_std_noise_floor``, the std that sampling noise alone produces."""
    from ..metrics._stats import discrepancy_measures, noise_floor

    data = _data(data)
    out = data.runs[["run", "label"] + data.config_cols].copy()
    tail = 100.0 * (1.0 - confidence) / 2.0
    rng = np.random.default_rng(seed)
    for metric in ("clean", "robust"):
        hits_f, n_f = class_counts(data, f"{metric}_acc")
        point = {m: np.full(len(out), np.nan) for m in RUN_MEASURES}
        lo = {m: np.full(len(out), np.nan) for m in RUN_MEASURES}
        hi = {m: np.full(len(out), np.nan) for m in RUN_MEASURES}
        p_noise, floor = np.full(len(out), np.nan), np.full(len(out), np.nan)
        # runs of one data set share the class list: one vectorised pass per class set
        have = n_f.notna().to_numpy()
        for pattern in {tuple(r) for r in have}:
            rows = np.flatnonzero((have == pattern).all(axis=1))
            cols = np.flatnonzero(pattern)
            if not len(cols):
                continue
            hits = hits_f.to_numpy()[np.ix_(rows, cols)]
            n = n_f.to_numpy()[np.ix_(rows, cols)]
            est = discrepancy_measures(hits / n)
            reps = discrepancy_measures(_resample_accuracies(hits, n, n_boot, rng))
            for m in RUN_MEASURES:
                point[m][rows] = est[m]
                with np.errstate(all="ignore"):
                    lo[m][rows], hi[m][rows] = np.nanpercentile(reps[m], [tail, 100 - tail], axis=0)
            nf = noise_floor(hits, n, n_sim=n_boot, seed=seed + 1)
            floor[rows], p_noise[rows] = nf["std"]
        for m in RUN_MEASURES:
            out[f"{metric}_{m}"] = point[m]
            out[f"{metric}_{m}_lo"] = lo[m]
            out[f"{metric}_{m}_hi"] = hi[m]
        out[f"{metric}_worst_class"] = data.runs[f"{metric}_worst_class"].to_numpy()
        out[f"{metric}_std_noise_floor"] = floor
        out[f"{metric}_p_noise"] = p_noise
    return out


@dataclass
class ConditionTest:
    """Condition ``a`` minus condition ``b`` on one measure, with a bootstrap interval over
    seeds (or matched pairs) and test points, and its two-sided p-value."""

    what: str
    a: str
    b: str
    metric_a: str
    metric_b: str
    measure: str
    estimate: float
    lo: float
    hi: float
    p_value: float
    runs_a: int
    runs_b: int
    paired: bool

    def describe(self, scale: float = 100.0) -> str:
        unit = "" if self.measure == "normalized_std" else " points"
        s = 1.0 if self.measure == "normalized_std" else scale
        spans = (f"{self.runs_a} matched pairs" if self.paired
                 else f"{self.runs_a} vs {self.runs_b} seeds")
        return (f"{s * self.estimate:+.{3 if s == 1 else 1}f}{unit} "
                f"[{s * self.lo:+.{3 if s == 1 else 1}f}, {s * self.hi:+.{3 if s == 1 else 1}f}], "
                f"p {_p_text(self.p_value)} (95% interval over {spans} and test points)")


def _p_text(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.2g}")


def _measure_reps(data: StudyData, runs: list[str], metric: str, measure: str, n_boot: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the measure as observed (runs,) and over test-point resamples (n_boot, runs)."""
    from ..metrics._stats import discrepancy_measures

    hits_f, n_f = class_counts(data, metric)
    hits = hits_f.set_index(data.runs["run"]).loc[runs]
    n = n_f.set_index(data.runs["run"]).loc[runs]
    keep = n.notna().all(axis=0).to_numpy()
    hits, n = hits.to_numpy()[:, keep], n.to_numpy()[:, keep]
    est = discrepancy_measures(hits / n)[measure]
    reps = discrepancy_measures(_resample_accuracies(hits, n, n_boot, rng))[measure]
    return est, reps


def compare_conditions(data: "StudyData | pd.DataFrame", a: list[str], b: list[str], *,
                       metric_a: str = "robust_acc", metric_b: str | None = None,
                       measure: str = "worst", paired: bool = False, what: str = "",
                       names: tuple[str, str] = ("a", "b"), n_boot: int = N_BOOT,
                       seed: int = 0) -> ConditionTest:
    """Runs ``a`` against runs ``b``: the difference of the mean over runs of ``measure`` of
    the class-wise ``metric_a`` (of ``a``) and ``metric_b`` (of ``b``; default the same).

    A hierarchical bootstrap: each replicate redraws every run's class counts (test points)
    and then resamples the runs — ``paired``: ``a[i]`` and ``b[i]`` are matched (same model,
    optimiser, seed, ...) and the pairs are resampled together; else each condition's runs
    (its seeds) are resampled on their own — with the run-level spread scaled by
    ``sqrt(n / (n - 1))`` (resampling n runs understates their variance by (n - 1) / n). ``p_value`` is two-sided: < 0.05 exactly when the
    95% interval excludes 0.
    """
    from ..metrics._stats import bootstrap_p_value, seed_resampled_means

    data = _data(data)
    metric_b = metric_b or metric_a
    if paired and len(a) != len(b):
        raise ValueError("paired conditions need as many runs on each side")
    rng = np.random.default_rng(seed)
    ea, ra = _measure_reps(data, a, metric_a, measure, n_boot, rng)
    eb, rb = _measure_reps(data, b, metric_b, measure, n_boot, rng)
    # runs (or pairs) resampled with replacement, the spread scaled by sqrt(n / (n - 1))
    if paired:
        diff = seed_resampled_means(ra - rb, rng)
    else:
        diff = seed_resampled_means(ra, rng) - seed_resampled_means(rb, rng)
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    return ConditionTest(what, names[0], names[1], metric_a, metric_b, measure,
                float(np.mean(ea) - np.mean(eb)), float(lo), float(hi),
                bootstrap_p_value(diff), len(a), len(b), paired)


def training_gap_tests(data: "StudyData | pd.DataFrame", *, measure: str = "std",
                       n_boot: int = N_BOOT) -> list[ConditionTest]:
    """Did adversarial training widen the class gap, on the SAME metric? Runs matched by every
    setting but the objective (standard vs each adversarial objective), per data set and
    objective, per model and pooled over models: AT clean vs standard clean, and AT robust vs
    standard robust (same eps). Paired hierarchical bootstrap over the matched pairs and test
    points."""
    data = _data(data)
    keys = [c for c in data.config_cols if c != "objective"]  # eps too: robust at the same eps
    pairs = []
    for _, group in data.groups(keys):
        std = group[group["objective"] == "standard"].to_dict("records")
        adv = group[group["objective"] != "standard"].to_dict("records")
        for a in adv:
            for s in std:
                pairs.append({"dataset": a["dataset"], "model": a["model"],
                              "objective": a["objective"], "eps": a["eps"],
                              "at": a["run"], "standard": s["run"]})
    if not pairs:
        return []
    frame = pd.DataFrame(pairs)
    tests = []
    for (dataset, objective, eps), g in frame.groupby(["dataset", "objective", "eps"], sort=False):
        scopes = [("all models", g)] + ([(str(m), gm) for m, gm in g.groupby("model", sort=False)]
                                        if g["model"].nunique() > 1 else [])
        for scope, gs in scopes:
            for metric in ("clean_acc", "robust_acc"):
                tests.append(compare_conditions(
                    data, gs["at"].tolist(), gs["standard"].tolist(), metric_a=metric,
                    measure=measure, paired=True, n_boot=n_boot,
                    what=f"{dataset}, {scope}, eps {eps}", names=(objective, "standard")))
    return tests


def mitigation_tests(data: "StudyData | pd.DataFrame", *, n_boot: int = N_BOOT,
                     alpha: float = 0.05) -> pd.DataFrame:
    """Each method against its baseline (as in :func:`mitigation_effects`): the difference of
    the worst-class and of the average robust accuracy (means over seeds), each with a
    hierarchical-bootstrap interval (seeds and test points) and p-value; Holm-adjusted over the
    methods for the worst class; the verdict: "closes the gap" when the worst class rises with
    adjusted p < ``alpha`` and the average falls by less than that rise."""
    from ..metrics._stats import holm

    data = _data(data)
    runs = data.runs.assign(method=(data.runs["objective"] + " + " + data.runs["mitigation"])
                            .str.replace(" + none", "", regex=False))
    keys = [c for c in data.config_cols if c not in ("objective", "mitigation", "seed")]
    shown = [k for k in keys if data.varies(k)]
    groups = runs.groupby([runs[k].astype(str) for k in keys], sort=False) if keys else [((), runs)]
    rows = []
    for _, ctx in groups:
        if ctx["method"].nunique() < 2:
            continue
        stats = ctx.groupby("method", sort=False).agg(objective=("objective", "first"),
                                                      mitigation=("mitigation", "first"))
        context = ", ".join(f"{k}={ctx[k].iloc[0]}" for k in shown) or "all runs"
        for method, row in stats.iterrows():
            base = _baseline(stats, row)
            if base is None:
                continue
            a = ctx[ctx["method"] == method]["run"].tolist()
            b = ctx[ctx["method"] == base]["run"].tolist()
            worst = compare_conditions(data, a, b, measure="worst", n_boot=n_boot,
                                       names=(method, base), what=context)
            avg = compare_conditions(data, a, b, measure="mean", n_boot=n_boot,
                                     names=(method, base), what=context)
            rows.append({"context": context, "method": method, "baseline": base,
                         "seeds": len(a), "baseline_seeds": len(b), "worst": worst, "avg": avg})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    out["worst_p_holm"] = holm([t.p_value for t in out["worst"]])
    out["verdict"] = [
        "closes the gap" if (w.estimate > 0 and p < alpha and -a.estimate < w.estimate)
        else "does not pass"
        for w, a, p in zip(out["worst"], out["avg"], out["worst_p_holm"])]
    return out
