"""What the study report says, as plain values for its template
(``robustfair/templates/study_report.html.j2``, which holds the prose and the markup): the
summary's answers to the paper's three questions, the table of configurations and the
evaluation settings. Numbers arrive here formatted (``"81.2 ± 1.3%"``); nothing here is HTML,
the template escapes every value."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._formatting import format_p, format_setting, interval, percent, points
from .analysis import StudyData, mitigation_effects, same_worst_class, top_confusions, training_gap
from .inference import COST_MARGIN, mitigation_tests, training_gap_tests
from .store import StudyStore
from .universality import Similarity, universality

__all__ = ["configurations", "confusion_runs", "confusions", "evaluation", "mitigation", "pct",
           "summed_confusion", "universality_summary"]


def pct(x: float | None, sd: float | None = None) -> str:
    """A fraction as a percentage, with ``± sd`` when there is one.

    >>> pct(0.8123, 0.0131), pct(float("nan"))
    ('81.2 ± 1.3%', 'n/a')
    """
    return percent(x, sd=sd, unit="%")


def _metric_word(metric: str) -> str:
    return "clean" if metric == "clean_acc" else "robust"


def _interval(bounds: tuple[float, float]) -> str | None:
    """``[lo, hi]`` of a mean over matched pairs (None when there is none)."""
    return interval(*bounds, scale=1, digits=2, missing=None)


# ------------------------------------------------------------------------------ (a)
def _similarity(s: Similarity) -> dict[str, Any]:
    centred = None
    if s.centered:
        centred = {"range": f"{min(s.centered):.2f}–{max(s.centered):.2f}",
                   "mean": f"{np.mean(s.centered):.2f}",
                   "interval": _interval(s.centered_mean_interval)}
    return {"dataset": s.dataset, "objective": s.objective, "metric": _metric_word(s.metric),
            "across": s.across, "range": f"{s.lo:.3f}–{s.hi:.3f}", "mean": f"{s.mean:.3f}",
            "interval": _interval(s.mean_interval), "n": s.n, "centred": centred}


def universality_summary(data: StudyData) -> dict[str, Any]:
    """(a) Is the class gap universal? Matched-pair similarities (across architectures and
    hyper-parameters; across seeds as the reference), the worst class of each setting, and
    the training gap (did adversarial training widen it?) with its paired tests."""
    u = universality(data)
    worst = []
    for what, table in (("architecture", u.worst_by_model),
                        ("hyper-parameter setting", u.worst_by_hparams)):
        for (dataset, objective), classes in table.items():
            worst.append({"what": what, "dataset": dataset, "objective": objective,
                          "listing": [(str(k), "/".join(v)) for k, v in classes.items()],
                          "same": same_worst_class(classes)})
    return {"similarities": [_similarity(s) for s in u.similarities if s.across != "seeds"],
            "seeds": [_similarity(s) for s in u.similarities if s.across == "seeds"],
            "worst": worst, "gap": _training_gap(data)}


def _training_gap(data: StudyData) -> dict[str, Any] | None:
    gap = training_gap(data)
    if gap.empty:
        return None
    tests = []
    for t in training_gap_tests(data):
        if t.result.p_min >= 0.05:  # e.g. 2 pairs: no p-value below 0.5 exists
            verdict = f"too few pairs to test at 5% ({t.runs_a})"
        elif t.p_value < 0.05:
            verdict = "wider" if t.estimate > 0 else "narrower"
        else:
            verdict = "no significant difference"
        tests.append({"what": t.what, "a": t.a, "metric": _metric_word(t.metric_a),
                      "result": t.describe(), "verdict": verdict})
    rows = [[str(r.dataset), str(r.model), str(r.objective), str(r.pairs),
             pct(r.std_standard_clean, r.std_standard_clean_sd),
             pct(r.std_at_clean, r.std_at_clean_sd), pct(r.std_at_robust, r.std_at_robust_sd),
             pct(r.worstdev_standard_clean, r.worstdev_standard_clean_sd),
             pct(r.worstdev_at_robust, r.worstdev_at_robust_sd)] for r in gap.itertuples()]
    return {"tests": tests, "rows": rows}


# ------------------------------------------------------------------------------ (b)
def confusion_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose confusion under attack is shown: adversarially trained without
    mitigation (PGD-AT first), else any adversarially trained, else all."""
    for cond in (lambda r: (r["objective"] == "pgd_at") & (r["mitigation"] == "none"),
                 lambda r: r["objective"] != "standard"):
        chosen = runs[cond(runs)]
        if len(chosen):
            return chosen
    return runs


def summed_confusion(store: StudyStore, run_keys: list[str]) -> pd.DataFrame:
    """Sum of the runs' confusion counts under attack (the pointwise worst case)."""
    from ..metrics import ClassReport

    total = None
    for key in run_keys:
        c = ClassReport.from_json(store.report_path(key)).confusion("worst")
        total = c if total is None else total + c
    return total


def confusions(data: StudyData, store: StudyStore) -> list[dict[str, Any]]:
    """(b) Per data set, the class pairs most confused under attack, with Wilson intervals."""
    out = []
    for dataset, g in confusion_runs(data.runs).groupby("dataset", sort=False):
        top = top_confusions(summed_confusion(store, g["run"].tolist()), k=3)
        if top:
            out.append({"dataset": dataset, "objectives": ", ".join(sorted(set(g["objective"]))),
                        "runs": len(g),
                        "pairs": [{"true": c["true"], "pred": c["pred"],
                                   "rate": percent(c["rate"]), "lo": percent(c["lo"]),
                                   "hi": percent(c["hi"]), "count": c["count"],
                                   "total": c["total"]} for c in top]})
    return out


# ------------------------------------------------------------------------------ (c)
def mitigation(data: StudyData) -> dict[str, Any] | None:
    """(c) Each mitigation against its baseline: means ± std over seeds and the changes, then
    the bootstrap tests with their verdicts. None when the study compares no mitigation."""
    effects = mitigation_effects(data)
    if effects.empty or "robust_worst_change" not in effects.columns:
        return None
    compared = effects.dropna(subset=["robust_worst_change"]).sort_values(
        "robust_worst_change", ascending=False)
    rows = [{"context": r.context, "method": r.method, "baseline": str(r.baseline),
             "robust_worst": pct(r.robust_worst, r.robust_worst_sd),
             "robust_worst_change": points(r.robust_worst_change),
             "robust_mean": pct(r.robust_mean, r.robust_mean_sd),
             "robust_mean_change": points(r.robust_mean_change),
             "clean_mean": pct(r.clean_mean, r.clean_mean_sd),
             "clean_mean_change": points(r.clean_mean_change), "seeds": r.seeds}
            for r in compared.itertuples()]
    tests = mitigation_tests(data)
    checks = [{"context": r.context, "method": r.method, "baseline": r.baseline,
               "worst": r.worst.describe(), "p_holm": format_p(r.worst_p_holm),
               "average": r.avg.describe(), "verdict": r.verdict}
              for r in (tests.itertuples() if not tests.empty else ())]
    return {"effects": rows, "tests": checks, "margin": f"{100 * COST_MARGIN:g}"}


# ------------------------------------------------------------------------------ the rest
def configurations(data: StudyData) -> list[list[str]]:
    """One row per configuration (runs equal in every setting but the seed, so ``±`` spans
    seeds and nothing else): label, seeds, clean mean and worst class, robust mean and worst
    class, the robust worst class(es)."""
    runs = data.runs
    keys = [c for c in data.config_cols if c != "seed"]
    config = runs[keys].astype(str).agg(" | ".join, axis=1)
    # the label can leave out axes that a variant sets: then it does not tell configurations
    # apart, and the configuration is written out beside it
    runs = runs.assign(label=config.map(dict(zip(config, runs["label"]))))
    if config.nunique() != runs["label"].nunique():
        runs = runs.assign(label=runs["label"].astype(str) + " (" + config + ")")
    stats = runs.groupby("label", sort=False).agg(
        n=("run", "size"), cm=("clean_mean", "mean"), cms=("clean_mean", "std"),
        cw=("clean_worst", "mean"), rm=("robust_mean", "mean"), rms=("robust_mean", "std"),
        rw=("robust_worst", "mean"), rws=("robust_worst", "std"),
        worst=("robust_worst_class", lambda s: ", ".join(dict.fromkeys(map(str, s)))))
    return [[str(label), str(r.n), pct(r.cm, r.cms), pct(r.cw), pct(r.rm, r.rms),
             pct(r.rw, r.rws), r.worst] for label, r in stats.iterrows()]


def evaluation(store: StudyStore, data: StudyData) -> dict[str, Any]:
    """How the runs were audited (from the first run's resolved config: one for the study)."""
    ev = store.read_config(data.runs["run"].iloc[0])["evaluation"]
    return {"points": "all test points" if ev["n"] is None
            else f"{ev['n']} test points (balanced over classes)",
            "attacks": [{"column": a["column"], "attack": a["attack"],
                         "settings": ", ".join(f"{k}={format_setting(v)}"
                                               for k, v in sorted(a["settings"].items()))}
                        for a in ev["attacks"]]}
