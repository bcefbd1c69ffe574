"""The leaderboard's tables, computed from each model's :class:`~robustfair.metrics.ClassReport`
alone (its per-point predictions): one row per model, and one row per (model, class).

The columns and what each number estimates:

=========================== =====================================================================
``clean_acc``, ``robust_acc`` accuracy over all audited points, with 95% Wilson intervals
                            (``_lo``/``_hi``); robust = the pointwise worst case over the attacks
``worst_class``             the class with the lowest robust accuracy *on these points*
``worst_class_acc``         that class's robust accuracy, with its 95% Wilson interval: an interval
                            for that one class's accuracy, not adjusted for its having been picked
                            as the lowest of K (the minimum of K noisy estimates is biased low)
``worst_class_acc_corrected`` ``worst_class_acc`` minus the stratified-bootstrap estimate of that
                            selection bias (``ClassReport.discrepancy()``'s ``worst`` row)
``worst_p_noise``           how often classes of equal true accuracy (each class's n kept) give a
                            lowest class at least this far below the class mean: small means the
                            lowest class stands out from sampling noise
``gap``, ``class_std``      the measures of :data:`robustfair.metrics.measures.MEASURES` with a
                            leaderboard column (best minus worst class robust accuracy; the std
                            of the class robust accuracies), each with its stratified-bootstrap
                            interval (``_lo``/``_hi``), ``_noise_floor`` (what classes of equal
                            accuracy give from sampling noise alone) and ``_p_noise`` as above
``flags``                   the audit's sanity flags (e.g. ``masking``, ``zero_gradient``)
``seconds``                 the model's audit time (building the model included)
=========================== =====================================================================
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..errors import RobustfairError
from ..metrics import ClassReport
from ..metrics.measures import MEASURES

__all__ = ["classwise_table", "leaderboard_table", "model_row"]


def model_row(name: str, report: ClassReport, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """One model's row of the leaderboard (columns in the module docstring)."""
    overall = report.overall
    row: dict = {"model": name, "n_points": int(overall["n"])}
    for metric in ("clean_acc", "robust_acc"):
        for suffix in ("", "_lo", "_hi"):
            row[metric + suffix] = float(overall[metric + suffix])
    try:
        worst, value = report.worst_class("robust_acc")
    except RobustfairError:  # no class has a robust value
        worst, value = None, float("nan")
    by_class = report.by_class
    row.update(worst_class=worst, worst_class_acc=value,
               worst_class_acc_lo=float(by_class.loc[worst, "robust_acc_lo"]) if worst else float("nan"),
               worst_class_acc_hi=float(by_class.loc[worst, "robust_acc_hi"]) if worst else float("nan"))
    d = report.discrepancy("robust_acc", n_boot=n_boot, seed=seed)
    row["worst_class_acc_corrected"] = float(d.loc["worst", "value"] - d.loc["worst", "bias"])
    row["worst_p_noise"] = float(d.loc["worst", "p_noise"])
    for measure in MEASURES.values():
        column = measure.leaderboard
        if column is None:
            continue
        for field, suffix in (("value", ""), ("lo", "_lo"), ("hi", "_hi"),
                              ("noise_floor", "_noise_floor"), ("p_noise", "_p_noise")):
            row[column + suffix] = float(d.loc[measure.name, field])
    row["flags"] = ";".join(f["code"] for f in report.flags)
    info = report.meta.get("leaderboard") or {}
    row["seconds"] = info.get("seconds")
    row["source"] = info.get("label")
    return row


def leaderboard_table(reports: Mapping[str, ClassReport], *, n_boot: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """One row per model, best robust accuracy first (ties: by name)."""
    rows = [model_row(name, report, n_boot=n_boot, seed=seed) for name, report in reports.items()]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values(["robust_acc", "model"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def classwise_table(reports: Mapping[str, ClassReport]) -> pd.DataFrame:
    """One row per (model, class): n, clean and robust accuracy with 95% Wilson intervals."""
    columns = ["n"] + [m + s for m in ("clean_acc", "robust_acc") for s in ("", "_lo", "_hi")]
    frames = []
    for name, report in reports.items():
        part = report.by_class[columns].reset_index()
        part.insert(0, "model", name)
        frames.append(part)
    if not frames:
        return pd.DataFrame(columns=["model", "class"] + columns)
    return pd.concat(frames, ignore_index=True)
