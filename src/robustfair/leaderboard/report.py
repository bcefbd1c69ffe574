"""The leaderboard's outputs, rebuilt from the models' report.json files alone:

* ``leaderboard.csv`` (and ``leaderboard.parquet`` where pyarrow is installed): one row per
  model (:mod:`.table` says what each column estimates);
* ``classwise.csv``: one row per model and class;
* ``robust_by_class.png``: the models x classes heat map of robust accuracy;
* ``leaderboard.html``: one self-contained page (Jinja2 template
  ``robustfair/templates/leaderboard.html.j2``): a sortable table, the heat map, each model's
  flags and a link to its card, the answers across models (:mod:`.analysis`) and the settings.

All of them are written together (each under a temporary name, then renamed).
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pandas as pd

from .._atomic import write_all_atomically
from .._formatting import describe_attack, format_p, interval, number, percent
from .._templates import data_uri, render
from ..metrics import ClassReport
from ..metrics.measures import MEASURES, POINTS
from .spec import LeaderboardSpec

__all__ = ["finished_reports", "render_page", "write_outputs"]

TEMPLATE = "leaderboard.html.j2"
N_BOOT = 1000  # bootstrap resamples for every interval on the page


def finished_reports(out_dir: str | Path, names: list[str]) -> dict[str, ClassReport]:
    """The report of every model in ``names`` that has finished, in that order."""
    from .run import model_folder

    reports = {}
    for name in names:
        path = model_folder(out_dir, name) / "report.json"
        if path.is_file():
            reports[name] = ClassReport.from_json(path)
    return reports


def write_outputs(out_dir: str | Path, spec: LeaderboardSpec, record: dict, *,
                  failed: dict[str, str] | None = None) -> dict[str, Path]:
    """Write the tables, the figure and the page for the finished models of ``spec``."""
    from .analysis import cross_model
    from .figures import robust_heatmap
    from .table import classwise_table, leaderboard_table

    out = Path(out_dir)
    reports = finished_reports(out, [m.name for m in spec.models])
    seed = record["settings"]["seed"]
    table = leaderboard_table(reports, n_boot=N_BOOT, seed=seed)
    classwise = classwise_table(reports)
    analysis = cross_model(reports, n_boot=N_BOOT, seed=seed) if reports else None
    heatmap = robust_heatmap(classwise, list(table["model"])) if reports else None
    missing = [m.name for m in spec.models if m.name not in reports]
    page = render_page(spec, record, table, reports, analysis, heatmap,
                       failed=failed or {}, missing=missing)
    writers = {
        out / "leaderboard.csv": _text(table.to_csv(index=False)),
        out / "classwise.csv": _text(classwise.to_csv(index=False)),
        out / "leaderboard.html": _text(page),
    }
    if heatmap is not None:
        writers[out / "robust_by_class.png"] = lambda tmp: Path(tmp).write_bytes(heatmap)
    if _has_pyarrow():
        writers[out / "leaderboard.parquet"] = lambda tmp: table.to_parquet(tmp, index=False)
    paths = write_all_atomically(writers)
    return {p.name: p for p in paths}


def _text(text: str):
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def _has_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


# ------------------------------------------------------------------------------ the page
def _pct(v) -> str:
    return percent(v, missing="–")


def _with_interval(row, column: str) -> tuple[str, str]:
    """The value and, for a second line in its cell, its interval."""
    return _pct(row[column]), interval(row[column + "_lo"], row[column + "_hi"])


def _p(v) -> str:
    return format_p(v, missing="–")


def _sort_value(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else str(v)


def _rows(table: pd.DataFrame, reports: dict[str, ClassReport]) -> list[dict]:
    """Each model's cells as (text, sort value) pairs, in the table's order."""
    rows = []
    for rank, (_, r) in enumerate(table.iterrows(), start=1):
        flags = reports[r["model"]].flags
        cells = [  # (text or (text, interval), sort value)
            (str(rank), rank),
            (r["model"], r["model"]),
            (_with_interval(r, "robust_acc"), r["robust_acc"]),
            (_with_interval(r, "clean_acc"), r["clean_acc"]),
            (str(r["worst_class"]), str(r["worst_class"])),
            (_with_interval(r, "worst_class_acc"), r["worst_class_acc"]),
            (_pct(r["worst_class_acc_corrected"]), r["worst_class_acc_corrected"]),
            (_p(r["worst_p_noise"]), r["worst_p_noise"]),
        ]
        for m in _measures():  # value with interval, noise floor, p_noise: read from the table
            column = m.leaderboard
            shown = _pct if m.unit == POINTS else partial(number, missing="–")
            cells += [((shown(r[column]), interval(r[column + "_lo"], r[column + "_hi"],
                                                   scale=100 if m.unit == POINTS else 1,
                                                   digits=1 if m.unit == POINTS else 3)),
                       r[column]),
                      (shown(r[column + "_noise_floor"]), r[column + "_noise_floor"]),
                      (_p(r[column + "_p_noise"]), r[column + "_p_noise"])]
        cells += [
            (", ".join(f["code"] for f in flags) or "none", len(flags)),
            ("–" if r["seconds"] is None or not math.isfinite(r["seconds"]) else f"{r['seconds']:.1f}",
             r["seconds"]),
        ]
        rows.append({"model": r["model"], "flagged": bool(flags), "source": r["source"] or "",
                     "cells": [(text if isinstance(text, tuple) else (text, ""), _sort_value(v))
                               for text, v in cells]})
    return rows


def _measures() -> list:
    """The discrepancy measures with a leaderboard column (:mod:`robustfair.metrics.measures`)."""
    return [m for m in MEASURES.values() if m.leaderboard]


def columns() -> list[tuple[str, str]]:
    """(header, tooltip) of each column of the page's table: what it estimates."""
    out = HEAD_COLUMNS[:]
    for m in _measures():
        name = m.leaderboard.replace("_", " ")
        out += [(f"{name} (points)" if m.unit == POINTS else name,
                 f"{m.about} (class robust accuracies), stratified-bootstrap 95% interval"),
                (f"{name} noise floor",
                 f"the {name} that classes of equal accuracy give from sampling noise alone"),
                (f"{name} p_noise", f"share of equal-class draws (each class's n kept) with a "
                                    f"{name} at least as wide: small = stands out from noise")]
    return out + TAIL_COLUMNS


HEAD_COLUMNS = [  # (header, tooltip): what each column of the table estimates
    ("#", "rank by robust accuracy"),
    ("model", "the model's name in the spec; links to its card"),
    ("robust %", "robust accuracy over all points, 95% Wilson interval"),
    ("clean %", "clean accuracy over all points, 95% Wilson interval"),
    ("worst class", "the class with the lowest robust accuracy on these points"),
    ("worst class %", "that class's robust accuracy, 95% Wilson interval for that class "
                      "(not adjusted for its having been picked as the lowest)"),
    ("bias-corr. %", "worst-class accuracy minus the bootstrap estimate of the bias of taking "
                     "the lowest of K noisy estimates"),
    ("worst p_noise", "share of equal-class draws (each class's n kept) with a lowest class as "
                      "far below the class mean: small = stands out from noise"),
]
TAIL_COLUMNS = [
    ("flags", "sanity flags of the audit (see each model's card)"),
    ("time (s)", "the model's audit time"),
]


def render_page(spec: LeaderboardSpec, record: dict, table: pd.DataFrame,
                reports: dict[str, ClassReport], analysis, heatmap: bytes | None, *,
                failed: dict[str, str], missing: list[str]) -> str:
    """The HTML text of ``leaderboard.html``."""
    s, data = record["settings"], record["data"]
    per_class = (f"{s['points_per_class']} per class" if s["points_per_class"] is not None
                 else "every point of the split")
    settings = [
        ("data", f"{data['label']} ({s['split']} split)"),
        ("points", f"{data['n_points']} ({per_class}, chosen with seed {s['seed']}; the same "
                   f"points for every model)"),
        ("data SHA-256 (the audited images and labels)", data["sha256"]),
        ("threat model", f"{s['norm']}, eps = {s['eps_text']} ({s['eps']:.6g})"),
        ("attacks", "; ".join(f"{a['column']} = " + describe_attack(a["attack"], a["settings"])
                              .replace("\n", "; ") if a["settings"] else f"{a['column']} = {a['attack']}"
                              for a in s["attacks"])),
        ("attack seed, batch size", f"{s['seed']}, {s['batch_size']}"),
        ("intervals", f"95%; bootstrap intervals from {N_BOOT} resamples of the test points "
                      f"within each class"),
    ]
    if spec.expected_time:
        settings.append(("expected time", spec.expected_time))
    flags = [{"model": name, "flags": reports[name].flags} for name in table["model"]]
    worst_counts = []
    if analysis is not None:
        for c, r in analysis.worst_counts.iterrows():
            worst_counts.append({"class": c, "models": f"{r.models:g}", "resampled": f"{r.resampled:.2f}",
                                 "interval": interval(r.lo, r.hi, scale=1)})
    return render(
        TEMPLATE,
        title=f"Leaderboard: {spec.name}",
        description=spec.description,
        columns=columns(),
        rows=_rows(table, reports) if len(table) else [],
        heatmap=data_uri(heatmap) if heatmap is not None else None,
        flags=flags,
        findings=analysis.findings() if analysis is not None else [],
        worst=[] if analysis is None else [
            {"model": r.model, "worst_class": r.worst_class, "acc": _pct(r.worst_class_acc),
             "stays": percent(r.stays_lowest, digits=0, unit="%"), "p_noise": _p(r.p_noise)}
            for r in analysis.worst.itertuples()],
        worst_counts=worst_counts,
        tau=[] if analysis is None else [
            {"pair": f"{r.model_a} / {r.model_b}", "tau": f"{r.tau:.2f}" if math.isfinite(r.tau) else "–",
             "interval": interval(r.lo, r.hi, scale=1, digits=2)}
            for r in analysis.tau.itertuples()],
        n_boot=N_BOOT,
        settings=settings,
        failed=failed,
        missing=[m for m in missing if m not in failed],
        spec_text=spec.text,
    )
