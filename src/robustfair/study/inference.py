"""Hypothesis tests on a study's runs: per-run intervals of the class-discrepancy measures,
and hierarchical-bootstrap comparisons of two conditions (over seeds or matched pairs, and
test points) for the training gap (did adversarial training widen it?) and the mitigations
(did the worst class rise, at what cost on average?). See docs/STATISTICS.md."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .analysis import StudyData, as_study_data, baseline_method

__all__ = ["ConditionTest", "N_BOOT", "RUN_MEASURES", "class_counts", "compare_conditions",
           "mitigation_tests", "resample_accuracies", "run_statistics", "training_gap_tests"]


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
    data = as_study_data(data)
    rows = data.results[data.results["measure"] == measure]
    order = rows.drop_duplicates("class").sort_values("class_index")["class"].tolist()
    n = rows.pivot(index="run", columns="class", values="n").reindex(
        index=data.runs["run"], columns=order)
    acc = data.profile(measure).reindex(index=data.runs["run"], columns=order)
    return (acc * n).round(), n


def resample_accuracies(hits: np.ndarray, n: np.ndarray, n_boot: int,
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

    data = as_study_data(data)
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
            reps = discrepancy_measures(resample_accuracies(hits, n, n_boot, rng))
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
    reps = discrepancy_measures(resample_accuracies(hits, n, n_boot, rng))[measure]
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

    data = as_study_data(data)
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
    data = as_study_data(data)
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

    data = as_study_data(data)
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
            base = baseline_method(stats, row)
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
