"""The study report: one self-contained HTML file (figures embedded as base64 PNG) plus the
PNGs themselves, in ``DIR/report/``.

A summary on top answers the paper's three questions with numbers and intervals (see
:mod:`robustfair.study.analysis`); below it, the figures the study's axes allow:

- per-class clean vs robust accuracy, standard vs adversarial training;
- each class's deviation from the class mean, per model (heatmap);
- cosine similarity of class profiles across architectures and across hyper-parameters;
- robust accuracy per class against eps (when eps is an axis);
- the worst class through training (from each run's ``epochs.csv``);
- the trade-off between average and worst-class robust accuracy (error bars over seeds);
- the confusion matrix under attack.

A figure the study cannot support (e.g. no architecture axis) is skipped, with the reason.
"""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .._atomic import atomic_write_bytes, atomic_write_text
from . import analysis as A
from . import plots
from .store import StudyStore
from .table import load_tables

__all__ = ["Report", "build_report"]

MAX_PANELS = 6
MAX_LINES = 16
MAX_POINTS = 20


@dataclass
class Report:
    """Where the report was written, which figures it has and which it skipped (and why)."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class _Figure:
    name: str
    title: str
    caption: str
    png: bytes


def _pct(x: float, sd: float | None = None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    text = f"{100 * x:.1f}"
    if sd is not None and np.isfinite(sd):
        text += f" ± {100 * sd:.1f}"
    return text + "%"


def _pts(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:+.1f} points"


def build_report(root: str | os.PathLike, *, out_dir: str | os.PathLike | None = None) -> Report:
    """Write ``report.html`` and the PNGs for the study in ``root``; returns what was written."""
    root = Path(root)
    store = StudyStore(root)
    index = store.read_index()
    tables = load_tables(root)
    results, epochs = tables.results, tables.epochs
    data = A.StudyData(results)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)

    figures: list[_Figure] = []
    skipped: dict[str, str] = {}
    builders: list[tuple[str, Callable]] = [
        ("classwise", _fig_classwise), ("deviation", _fig_deviation),
        ("similarity_architectures", _fig_similarity_arch),
        ("similarity_hparams", _fig_similarity_hparams), ("eps", _fig_eps),
        ("epochs", _fig_epochs), ("tradeoff", _fig_tradeoff), ("confusion", _fig_confusion)]
    for name, builder in builders:
        made = builder(data, epochs, store)
        if isinstance(made, str):
            skipped[name] = made
        else:
            figures.append(made)

    paths = {}
    for f in figures:
        path = out / f"{f.name}.png"
        paths[f.name] = atomic_write_bytes(path, f.png)
    page = _html(index, tables, data, store, figures, skipped, _explain_sections(root))
    html_path = atomic_write_text(out / "report.html", page)
    return Report(html=html_path, figures=paths, skipped=skipped)


# ------------------------------------------------------------------------------ figures
def _mean_profiles(data: A.StudyData, runs: pd.DataFrame, measure: str) -> pd.Series:
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
    return _Figure("classwise", "Clean and robust accuracy per class",
                   "Mean over seeds and any other axes; plain bars: clean, hatched: robust "
                   "(the pointwise worst case over the evaluation attacks)." + note,
                   plots.png_bytes(plots.classwise_bars(panels)))


def _label_profiles(data: A.StudyData, runs: pd.DataFrame, measure: str) -> pd.DataFrame:
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
    return _Figure("deviation", "Each class's deviation from the mean, per model",
                   "Rows: models (mean over seeds); columns: classes; red: below the class "
                   "mean, in accuracy points." + note,
                   plots.png_bytes(plots.deviation_heatmaps(panels[:MAX_PANELS])))


def _similarity_figure(data, by: list[str], name: str, what: str):
    panels = []
    for (dataset, objective), _ in data.runs.groupby(["dataset", "objective"], sort=False):
        prof = A.group_profiles(data, by, dataset=dataset, objective=objective)
        if len(prof) > 1:
            metric = "clean" if objective == "standard" else "robust"
            panels.append((f"{dataset}, {objective} ({metric} accuracy)",
                           A.similarity_matrix(prof)))
            centred = prof.sub(prof.mean(axis=1), axis=0)
            panels.append((f"{dataset}, {objective} ({metric}, centred)",
                           A.similarity_matrix(centred)))
    if not panels:
        return f"no data set and objective has more than one {what}"
    return _Figure(name, f"Similarity of class-wise accuracy across {what}s",
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
    return _Figure("eps", "Robust accuracy per class against eps",
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
    return _Figure("epochs", "The worst class through training",
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
    return _Figure("tradeoff", "Mitigation trade-off: average vs worst-class robust accuracy",
                   "One point per configuration; error bars: std over seeds (none with one "
                   "seed). Up and to the right is better." + note,
                   plots.png_bytes(plots.tradeoff(points)))


def _confusion_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose confusion under attack is shown: adversarially trained without
    mitigation (PGD-AT first), else any adversarially trained, else all."""
    for cond in (lambda r: (r["objective"] == "pgd_at") & (r["mitigation"] == "none"),
                 lambda r: r["objective"] != "standard", lambda r: r["objective"] == r["objective"]):
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


def _fig_confusion(data, epochs, store):
    runs = _confusion_runs(data.runs)
    panels = []
    for dataset, g in runs.groupby("dataset", sort=False):
        label = g["label"].iloc[0]
        chosen = g[g["label"] == label]
        counts = summed_confusion(store, chosen["run"].tolist())
        rates = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0)
        panels.append((f"{dataset}: {label} ({len(chosen)} run(s))", rates))
    return _Figure("confusion", "Confusion under attack",
                   "True class × the prediction under the worst-case attack, as a percentage of "
                   "the true class; summed over seeds.",
                   plots.png_bytes(plots.confusion_matrices(panels[:2])))


# ------------------------------------------------------------------------------ summary
def _summary_universality(data: A.StudyData) -> list[str]:
    u = A.universality(data)
    items = []
    for s in u.similarities:
        if s.across == "seeds":
            continue
        items.append(f"<b>{html.escape(s.dataset)}, {html.escape(s.objective)}</b> "
                     f"({'clean' if s.metric == 'clean_acc' else 'robust'} accuracy): cosine "
                     f"similarity across {s.across} <b>{s.lo:.3f}–{s.hi:.3f}</b> "
                     f"(mean {s.mean:.3f}{_ci(s.mean_interval)}, {s.n} matched "
                     f"pair{'s' if s.n != 1 else ''})" + _centered(s) + ".")
    for s in u.similarities:
        if s.across == "seeds":
            items.append(f"Reference, the same configuration with another seed "
                         f"({html.escape(s.dataset)}, {html.escape(s.objective)}): "
                         f"{s.lo:.3f}–{s.hi:.3f} ({s.n} pair{'s' if s.n != 1 else ''})"
                         + _centered(s) + ".")
    for what, table in (("architecture", u.worst_by_model),
                        ("hyper-parameter setting", u.worst_by_hparams)):
        for (dataset, objective), worst in table.items():
            same = A.same_worst_class(worst)
            listing = ", ".join(f"{html.escape(str(k))} → {html.escape('/'.join(v))}"
                                for k, v in worst.items())
            items.append(f"Worst class per {what} ({html.escape(dataset)}, "
                         f"{html.escape(objective)}): {listing}: "
                         f"<b>{'the same' if same else 'not the same'}</b>.")
    if not items:
        items.append("This study varies neither the architecture nor an optimisation "
                     "hyper-parameter, so universality is not measured.")
    gap = A.training_gap(data)
    if not gap.empty:
        rows = "".join(
            f"<tr><td>{html.escape(str(r.dataset))}</td><td>{html.escape(str(r.model))}</td>"
            f"<td>{html.escape(str(r.objective))}</td><td>{r.pairs}</td>"
            f"<td>{_pct(r.std_standard_clean, r.std_standard_clean_sd)}</td>"
            f"<td>{_pct(r.std_at_clean, r.std_at_clean_sd)}</td>"
            f"<td>{_pct(r.std_at_robust, r.std_at_robust_sd)}</td>"
            f"<td>{_pct(r.worstdev_standard_clean, r.worstdev_standard_clean_sd)}</td>"
            f"<td>{_pct(r.worstdev_at_robust, r.worstdev_at_robust_sd)}</td></tr>"
            for r in gap.itertuples())
        tests = A.training_gap_tests(data)
        lines = "".join(
            f"<li>{html.escape(t.what)}: std of the class accuracies, {html.escape(t.a)} minus "
            f"standard, both <b>{'clean' if t.metric_a == 'clean_acc' else 'robust'}</b>: "
            f"{html.escape(t.describe())} — <b>{'wider' if t.p_value < 0.05 and t.estimate > 0 else 'narrower' if t.p_value < 0.05 else 'no significant difference'}</b></li>"
            for t in tests)
        items.append(
            "Did adversarial training widen the gap between classes? Compared on the SAME "
            "metric (clean vs clean; robust vs robust at the same eps), runs matched by every "
            "other setting, paired hierarchical bootstrap (matched pairs and test points):"
            f"<ul>{lines}</ul>"
            "The table below also shows the AT robust std beside the standard clean std "
            "(different metrics: not a test of widening)."
            "<div class='scroll'><table><tr><th>data set</th><th>model</th><th>AT</th>"
            "<th>pairs</th><th>std, standard clean</th><th>std, AT clean</th>"
            "<th>std, AT robust</th><th>worst-class deviation, standard clean</th>"
            "<th>worst-class deviation, AT robust</th></tr>" + rows + "</table></div>"
            "<small>mean ± std over the matched pairs (each pair: one standard and one "
            "adversarially trained run equal in every other setting: seed, optimiser, ...).</small>")
    return items


def _centered(s: A.Similarity) -> str:
    """The centred cosine (Pearson r of the class deviations), which near-equal accuracies
    cannot push to 1."""
    if not s.centered:
        return ""
    return (f"; centred (Pearson r of the class profiles, which near-equal accuracies cannot "
            f"push to 1) <b>{min(s.centered):.2f}–{max(s.centered):.2f}</b> (mean "
            f"{np.mean(s.centered):.2f}{_ci(s.centered_mean_interval)})")


def _ci(interval) -> str:
    """`` [lo, hi]`` of a mean over matched pairs: 95%, pairs and test points resampled."""
    lo, hi = interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f", 95% interval over pairs and test points [{lo:.2f}, {hi:.2f}]"


def _summary_confusions(data: A.StudyData, store: StudyStore) -> list[str]:
    runs = _confusion_runs(data.runs)
    items = []
    for dataset, g in runs.groupby("dataset", sort=False):
        counts = summed_confusion(store, g["run"].tolist())
        top = A.top_confusions(counts, k=3)
        if not top:
            continue
        what = ", ".join(sorted(set(g["objective"])))
        pairs = "; ".join(
            f"<b>{html.escape(c['true'])} → {html.escape(c['pred'])}</b> "
            f"{100 * c['rate']:.1f}% of {html.escape(c['true'])} "
            f"(95% CI {100 * c['lo']:.1f}–{100 * c['hi']:.1f}%, {c['count']}/{c['total']})"
            for c in top)
        items.append(f"{html.escape(dataset)} ({html.escape(what)}, {len(g)} run(s)), most "
                     f"confused class pairs under attack: {pairs}.")
    return items or ["No confusion under attack to report."]


def _summary_mitigation(data: A.StudyData) -> list[str]:
    effects = A.mitigation_effects(data)
    if effects.empty or "robust_worst_change" not in effects.columns:
        return ["This study compares no mitigation with a baseline (no mitigation axis, or "
                "no run without mitigation to compare with)."]
    compared = effects.dropna(subset=["robust_worst_change"]).sort_values(
        "robust_worst_change", ascending=False)
    items = []
    for r in compared.itertuples():
        items.append(
            f"{html.escape(r.context)}: <b>{html.escape(r.method)}</b> vs "
            f"{html.escape(str(r.baseline))}: worst-class robust "
            f"{_pct(r.robust_worst, r.robust_worst_sd)} ({_pts(r.robust_worst_change)}), "
            f"average robust {_pct(r.robust_mean, r.robust_mean_sd)} "
            f"({_pts(r.robust_mean_change)}), average clean {_pct(r.clean_mean, r.clean_mean_sd)} "
            f"({_pts(r.clean_mean_change)}); {r.seeds} seed(s).")
    tests = A.mitigation_tests(data)
    for r in tests.itertuples() if not tests.empty else ():
        items.append(
            f"{html.escape(r.context)}: <b>{html.escape(r.method)}</b> minus "
            f"{html.escape(r.baseline)}, worst-class robust {html.escape(r.worst.describe())}, "
            f"Holm-adjusted p {r.worst_p_holm:.2g}; average robust "
            f"{html.escape(r.avg.describe())} → <b>{r.verdict}</b>.")
    if len(compared):
        items.insert(0, "Mitigations against their baseline: means over seeds ± the std over "
                        "seeds; then each difference with a 95% hierarchical-bootstrap interval "
                        "(seeds and test points resampled) and p-value. The verdict: the "
                        "worst class rises with Holm-adjusted p < 0.05 (over the methods "
                        "compared) and the average falls by less than that rise.")
    return items


def _run_table(data: A.StudyData) -> str:
    # one row per configuration: runs equal in every config column but the seed, so the ±
    # spans seeds and nothing else (the label can leave out axes that a variant sets)
    runs = data.runs
    keys = [c for c in data.config_cols if c != "seed"]
    runs = runs.assign(label=runs[keys].astype(str).agg(" | ".join, axis=1)
                       .map(dict(zip(runs[keys].astype(str).agg(" | ".join, axis=1),
                                     runs["label"]))))
    config = runs[keys].astype(str).agg(" | ".join, axis=1)
    if config.nunique() != runs["label"].nunique():  # labels do not tell configurations apart
        runs = runs.assign(label=runs["label"].astype(str) + " (" + config + ")")
    g = runs.groupby("label", sort=False)
    stats = g.agg(n=("run", "size"), cm=("clean_mean", "mean"), cms=("clean_mean", "std"),
                  cw=("clean_worst", "mean"), rm=("robust_mean", "mean"),
                  rms=("robust_mean", "std"), rw=("robust_worst", "mean"),
                  rws=("robust_worst", "std"),
                  worst=("robust_worst_class", lambda s: ", ".join(dict.fromkeys(map(str, s)))))
    rows = "".join(
        f"<tr><td>{html.escape(str(label))}</td><td>{r.n}</td><td>{_pct(r.cm, r.cms)}</td>"
        f"<td>{_pct(r.cw)}</td><td>{_pct(r.rm, r.rms)}</td><td>{_pct(r.rw, r.rws)}</td>"
        f"<td>{html.escape(r.worst)}</td></tr>" for label, r in stats.iterrows())
    return ("<div class='scroll'><table><tr><th>configuration</th><th>seeds</th>"
            "<th>clean, class mean</th><th>clean, worst class</th><th>robust, class mean</th>"
            "<th>robust, worst class</th><th>worst class (robust)</th></tr>" + rows +
            "</table></div><small>mean ± std over the seeds of one configuration (every other "
            "setting equal; no ± with one seed); the class mean is the balanced "
            "accuracy.</small>")


def _evaluation_text(store: StudyStore, data: A.StudyData) -> str:
    config = store.read_config(data.runs["run"].iloc[0])
    ev = config["evaluation"]
    attacks = "; ".join(
        f"{html.escape(a['column'])} = {html.escape(a['attack'])}(" + ", ".join(
            f"{k}={html.escape(_fmt(v))}" for k, v in sorted(a["settings"].items())) + ")"
        for a in ev["attacks"])
    n = "all test points" if ev["n"] is None else f"{ev['n']} test points (balanced over classes)"
    return (f"Evaluation: {n}; robust accuracy is the pointwise worst case over: {attacks}. "
            "The paper states no eps or step count; this study's settings are the ones above.")


def _fmt(v) -> str:
    if isinstance(v, float):
        k = v * 255
        return f"{round(k)}/255" if 0 < v < 1 and abs(k - round(k)) < 1e-6 and round(k) <= 32 else f"{v:g}"
    return str(v)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;padding:1em;
max-width:1140px;color:#222;line-height:1.45;overflow-wrap:anywhere}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.scroll{max-width:100%;overflow-x:auto}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
td:not(:first-child){white-space:nowrap}
th{background:#f3f3f3}.note{color:#666;font-size:.9em}li{margin:.3em 0}
figure{margin:1em 0}figcaption{color:#444;font-size:.9em}
"""


# `robustfair explain ... --out STUDY/explain/NAME` puts an explanation where the report finds it
EXPLAIN_DIR = "explain"
EXPLAIN_FIGURES = ("similarity.png", "margins.png", "robust_vs_eps.png", "corruption_vs_attack.png")


def _explain_sections(root: Path) -> list[str]:
    """HTML for each explanation saved under ``root/explain`` (its findings and figures)."""
    sections = []
    base = root / EXPLAIN_DIR
    for path in sorted(base.glob("**/explain.json")) if base.is_dir() else []:
        where = html.escape(str(path.parent.relative_to(root)))
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            findings = [str(f) for f in info["findings"]]
            source = str((info.get("meta") or {}).get("checkpoint", where))
        except (OSError, ValueError, KeyError, TypeError):
            sections.append(f"<p class='note'>{where}/explain.json is unreadable; skipped.</p>")
            continue
        parts = [f"<h3>{html.escape(source)} ({where})</h3><ul>",
                 *[f"<li>{html.escape(f)}</li>" for f in findings], "</ul>"]
        for name in EXPLAIN_FIGURES:
            png = path.parent / name
            if png.is_file():
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(name)}' "
                             f"src='data:image/png;base64,{data}'></figure>")
        sections.append("".join(parts))
    return sections


def _html(index, tables, data, store, figures, skipped, explanations=()) -> str:
    name = html.escape(str(index.get("name", "study")))
    desc = html.escape(str(index.get("description") or ""))
    done = tables.total_runs - len(tables.missing)
    status = f"{done} of {tables.total_runs} runs finished"
    if tables.missing:
        status += f" ({len(tables.missing)} not yet: the report covers the finished ones)"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>robustfair study: {name}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study: {name}</h1>",
        f"<p>{desc}</p>" if desc else "",
        f"<p class='note'>{html.escape(status)}. {_evaluation_text(store, data)}</p>",
        "<h2>Summary</h2>",
        "<h3>(a) Is the class gap universal?</h3><ul>",
        *[f"<li>{s}</li>" for s in _summary_universality(data)],
        "</ul><h3>(b) Where to look for an explanation</h3><ul>",
        *[f"<li>{s}</li>" for s in _summary_confusions(data, store)],
        "</ul><h3>(c) Does a mitigation help the worst class, and at what cost?</h3><ul>",
        *[f"<li>{s}</li>" for s in _summary_mitigation(data)],
        "</ul><h2>Configurations</h2>", _run_table(data),
    ]
    for f in figures:
        data = base64.b64encode(f.png).decode("ascii")
        parts.append(f"<h2>{html.escape(f.title)}</h2><figure><img alt='{html.escape(f.title)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(f.caption)}"
                     "</figcaption></figure>")
    if explanations:
        parts.append("<h2>Why some classes are less robust (robustfair explain)</h2>")
        parts += list(explanations)
    if skipped:
        parts.append("<h2>Not drawn</h2><ul class='note'>")
        parts += [f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in skipped.items()]
        parts.append("</ul>")
    parts.append("<p class='note'>Made by robustfair. Tables: results.csv / results.parquet "
                 "(run × class × measure) and epochs.csv / epochs.parquet beside this "
                 "folder (robustfair study table DIR).</p></body></html>")
    return "\n".join(p for p in parts if p)
