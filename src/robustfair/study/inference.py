"""Hypothesis tests on a study's runs: per-run intervals of the class-discrepancy measures,
and comparisons of two conditions for the training gap (did adversarial training widen it?)
and the mitigations (did the worst class rise, at what cost on average?). Every comparison
goes through the one engine, :func:`robustfair.metrics.compare_values` (bootstrap intervals
over seeds or matched pairs and test points; exact tests at few seeds); this module feeds it
the study's class counts. See docs/STATISTICS.md."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics.compare import Comparison
from ..metrics.measures import MEASURES, ClassValues, discrepancy_measures, get_measure
from .analysis import StudyData, as_study_data, baseline_method

__all__ = ["COST_MARGIN", "ConditionTest", "N_BOOT", "at_floor", "class_counts",
           "comparisons_table", "compare_conditions", "mitigation_tests", "resample_accuracies",
           "run_measures", "run_statistics", "training_gap_tests"]


# The results table keeps, per run and class, the accuracy and the number of test points, not
# each point's outcome. Test-point noise is therefore resampled parametrically: each class's
# count is redrawn Binomial(n, observed accuracy) — the same distribution as resampling the
# class's points — independently for every run. Runs evaluated on the same points are
# positively correlated, so for a difference between two conditions this overstates the
# test-point part of the noise a little (a conservative test); benchmarks that keep the
# per-point outcomes pair them (robustfair.metrics.compare_runs).
N_BOOT = 2000


def run_measures() -> list[str]:
    """The measures of every run in ``runs.csv``: those of
    :data:`robustfair.metrics.measures.MEASURES` marked ``per_run``."""
    return [m.name for m in MEASURES.values() if m.per_run]


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
    """One row per run: for clean and robust accuracy, each of :func:`run_measures` (the mean
    over classes, the worst class, the std over classes, the std over the mean, the mean of the
    worst 20% of classes) with a stratified-bootstrap interval (``_lo``/``_hi``, over test
    points), the worst class, and ``<metric>_p_noise``: the chance that classes with one common
    accuracy show a std this large (:func:`robustfair.metrics._stats.noise_floor`), beside
    ``<metric>_std_noise_floor``, the std that sampling noise alone produces."""
    from ..metrics import noise_floor

    data = as_study_data(data)
    out = data.runs[["run", "label"] + data.config_cols].copy()
    tail = 100.0 * (1.0 - confidence) / 2.0
    rng = np.random.default_rng(seed)
    measures = run_measures()
    for metric in ("clean", "robust"):
        hits_f, n_f = class_counts(data, f"{metric}_acc")
        point = {m: np.full(len(out), np.nan) for m in measures}
        lo = {m: np.full(len(out), np.nan) for m in measures}
        hi = {m: np.full(len(out), np.nan) for m in measures}
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
            for m in measures:
                point[m][rows] = est[m]
                with np.errstate(all="ignore"):
                    lo[m][rows], hi[m][rows] = np.nanpercentile(reps[m], [tail, 100 - tail], axis=0)
            nf = noise_floor(hits, n, n_sim=n_boot, seed=seed + 1)
            floor[rows], p_noise[rows] = nf["std"]
        for m in measures:
            out[f"{metric}_{m}"] = point[m]
            out[f"{metric}_{m}_lo"] = lo[m]
            out[f"{metric}_{m}_hi"] = hi[m]
        out[f"{metric}_worst_class"] = data.runs[f"{metric}_worst_class"].to_numpy()
        out[f"{metric}_std_noise_floor"] = floor
        out[f"{metric}_p_noise"] = p_noise
    return out


@dataclass
class ConditionTest:
    """Condition ``a`` minus condition ``b`` on one measure: a labelled
    :class:`robustfair.metrics.Comparison` (the one engine's result: bootstrap interval over
    seeds or matched pairs and test points; the verdict's p-value, exact below 10 units)."""

    what: str
    a: str
    b: str
    metric_a: str
    metric_b: str
    result: Comparison
    skipped: int = 0          # pairs left out: a run at 0% robust in every class

    measure = property(lambda self: self.result.measure)
    estimate = property(lambda self: self.result.estimate)
    lo = property(lambda self: self.result.lo)
    hi = property(lambda self: self.result.hi)
    p_value = property(lambda self: self.result.p_value)
    runs_a = property(lambda self: self.result.runs_a)
    runs_b = property(lambda self: self.result.runs_b)
    paired = property(lambda self: self.result.paired)

    def describe(self) -> str:
        text = self.result.describe()
        if self.skipped:
            text += (f"; {self.skipped} pair(s) with a run at 0% robust accuracy in every "
                     f"class left out (its spread is a floor, not a gap)")
        return text

    def as_row(self) -> dict:
        row = self.result.as_row(f"{self.a} vs {self.b}")
        row.update(what=self.what, a=self.a, b=self.b, metric_a=self.metric_a,
                   metric_b=self.metric_b, skipped=self.skipped)
        return row


def _measure_reps(data: StudyData, runs: list[str], metric: str, measure: str, n_boot: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the measure as observed (runs,) and over test-point resamples (n_boot, runs)."""
    compute = get_measure(measure).compute
    hits_f, n_f = class_counts(data, metric)
    hits = hits_f.set_index(data.runs["run"]).loc[runs]
    n = n_f.set_index(data.runs["run"]).loc[runs]
    keep = n.notna().all(axis=0).to_numpy()
    hits, n = hits.to_numpy()[:, keep], n.to_numpy()[:, keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        est = compute(ClassValues(hits / n))
        reps = compute(ClassValues(resample_accuracies(hits, n, n_boot, rng)))
    return est, reps


def at_floor(data: "StudyData | pd.DataFrame", runs: list[str], metric: str = "robust_acc") -> np.ndarray:
    """Per run: whether it sits at 0% of ``metric`` in every class (a standard model under
    attack, typically): its spread over classes is 0 because there is nothing to spread."""
    data = as_study_data(data)
    hits, _ = class_counts(data, metric)
    hits = hits.set_index(data.runs["run"]).loc[runs]
    return (hits.fillna(0).to_numpy() == 0).all(axis=1)


def compare_conditions(data: "StudyData | pd.DataFrame", a: list[str], b: list[str], *,
                       metric_a: str = "robust_acc", metric_b: str | None = None,
                       measure: str = "worst", paired: bool = False, what: str = "",
                       names: tuple[str, str] = ("a", "b"), n_boot: int = N_BOOT,
                       seed: int = 0, alternative: str = "two-sided",
                       shift: float = 0.0) -> ConditionTest:
    """Runs ``a`` against runs ``b``: the difference of the mean over runs of ``measure`` of
    the class-wise ``metric_a`` (of ``a``) and ``metric_b`` (of ``b``; default the same),
    through :func:`robustfair.metrics.compare_values`.

    Each replicate redraws every run's class counts (test points); the engine then resamples
    the runs — ``paired``: ``a[i]`` and ``b[i]`` are matched (same model, optimiser, seed, ...)
    and the pairs are resampled together; else each condition's runs on their own. The
    verdict's p-value tests "a - b = ``shift``" against ``alternative``: an exact sign-flip
    (paired) or permutation test on the per-run values below 10 units, else the bootstrap.
    """
    from ..metrics import compare_values

    data = as_study_data(data)
    metric_b = metric_b or metric_a
    if paired and len(a) != len(b):
        raise ValueError("paired conditions need as many runs on each side")
    rng = np.random.default_rng(seed)
    ea, ra = _measure_reps(data, a, metric_a, measure, n_boot, rng)
    eb, rb = _measure_reps(data, b, metric_b, measure, n_boot, rng)
    result = compare_values(ea, eb, ra, rb, metric=metric_a if metric_a == metric_b else
                            f"{metric_a} vs {metric_b}", measure=measure, paired=paired,
                            alternative=alternative, shift=shift, rng=rng,
                            estimand="each run's own worst class" if measure == "worst"
                            else measure)
    return ConditionTest(what, names[0], names[1], metric_a, metric_b, result)


def training_gap_tests(data: "StudyData | pd.DataFrame", *, measure: str = "std",
                       n_boot: int = N_BOOT) -> list[ConditionTest]:
    """Did adversarial training widen the class gap, on the SAME metric? Runs matched by every
    setting but the objective (standard vs each adversarial objective), per data set and
    objective, per model and pooled over models: AT clean vs standard clean, and AT robust vs
    standard robust (same eps). Paired: a bootstrap interval over the matched pairs and test
    points, and (below 10 pairs) an exact two-sided sign-flip test.

    Robust spread: a pair where either run sits at 0% robust in every class is left out (a
    standard model under attack typically does; its std of 0 is a floor, and "AT widened the
    robust std" would only say that AT models have some robustness); ``skipped`` counts them."""
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
    frame["floor"] = (at_floor(data, frame["at"].tolist())
                      | at_floor(data, frame["standard"].tolist()))
    tests = []
    for (dataset, objective, eps), g in frame.groupby(["dataset", "objective", "eps"], sort=False):
        scopes = [("all models", g)] + ([(str(m), gm) for m, gm in g.groupby("model", sort=False)]
                                        if g["model"].nunique() > 1 else [])
        for scope, gs in scopes:
            for metric in ("clean_acc", "robust_acc"):
                use = gs[~gs["floor"]] if metric == "robust_acc" else gs
                if use.empty:
                    continue
                t = compare_conditions(
                    data, use["at"].tolist(), use["standard"].tolist(), metric_a=metric,
                    measure=measure, paired=True, n_boot=n_boot,
                    what=f"{dataset}, {scope}, eps {eps}", names=(objective, "standard"))
                t.skipped = len(gs) - len(use)
                tests.append(t)
    return tests


# the cost condition of a mitigation: its average robust accuracy may fall by at most this
# much (accuracy points, as a fraction) — a non-inferiority margin stated before the test
COST_MARGIN = 0.02


def mitigation_tests(data: "StudyData | pd.DataFrame", *, n_boot: int = N_BOOT,
                     alpha: float = 0.05, margin: float = COST_MARGIN) -> pd.DataFrame:
    """Each method against its baseline (as in :func:`mitigation_effects`), on the two
    questions actually asked:

    * does the method raise the worst class? One-sided ("greater") test of the difference of
      the worst-class robust accuracy (each run's own worst class; means over seeds),
      Holm-adjusted over the methods (the family of these questions);
    * is the cost acceptable? Non-inferiority of the average robust accuracy: one-sided test
      that it falls by less than ``margin`` (H0: a - b <= -margin).

    Intervals: hierarchical bootstrap (seeds and test points); p-values: exact permutation
    tests below 10 seeds a side (:func:`robustfair.metrics.compare_values`). The verdict:
    "raises the worst class" when the first passes at adjusted p < ``alpha`` and the second at
    p < ``alpha``; "raises the worst class; cost not shown within margin" when only the first;
    else "not shown to raise the worst class"."""
    from ..metrics import holm

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
                                       names=(method, base), what=context,
                                       alternative="greater")
            avg = compare_conditions(data, a, b, measure="mean", n_boot=n_boot,
                                     names=(method, base), what=context,
                                     alternative="greater", shift=-margin)
            rows.append({"context": context, "method": method, "baseline": base,
                         "seeds": len(a), "baseline_seeds": len(b), "worst": worst, "avg": avg})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    out["worst_p_holm"] = holm([t.p_value for t in out["worst"]])
    out["verdict"] = [
        ("raises the worst class" if a.p_value < alpha
         else "raises the worst class; cost not shown within margin")
        if (w.estimate > 0 and p < alpha) else "not shown to raise the worst class"
        for w, a, p in zip(out["worst"], out["avg"], out["worst_p_holm"])]
    return out


def comparisons_table(data: "StudyData | pd.DataFrame", *, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Every comparison the study report prints, one row each (``comparisons.csv``): the
    training-gap tests and the mitigation tests, with ``comparison, measure, estimate, lo,
    hi, p, test, n_units`` and the rest of :meth:`robustfair.metrics.Comparison.as_row`
    (plus ``p_holm`` and ``verdict`` for the mitigation's worst-class rows)."""
    data = as_study_data(data)
    rows = []
    for t in training_gap_tests(data, n_boot=n_boot):
        rows.append({"family": "training gap", **t.as_row(), "p_holm": np.nan, "verdict": ""})
    tests = mitigation_tests(data, n_boot=n_boot)
    for r in (tests.itertuples() if not tests.empty else ()):
        rows.append({"family": "mitigation: worst class rises", **r.worst.as_row(),
                     "what": r.context, "p_holm": r.worst_p_holm, "verdict": r.verdict})
        rows.append({"family": f"mitigation: average within {100 * COST_MARGIN:g} points",
                     **r.avg.as_row(), "what": r.context, "p_holm": np.nan, "verdict": ""})
    columns = ["family", "comparison", "what", "metric", "measure", "estimand", "estimate",
               "lo", "hi", "p", "test", "n_units", "alternative", "shift", "p_min",
               "p_holm", "verdict", "p_bootstrap", "p_exact", "welch_p", "runs_a", "runs_b",
               "paired", "skipped", "n_boot", "confidence"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    return frame.reindex(columns=columns)
