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
``gap``                     best minus worst class robust accuracy, stratified-bootstrap interval,
                            ``gap_p_noise`` as above
``class_std``               standard deviation of the class robust accuracies, bootstrap interval,
                            ``class_std_noise_floor`` (what equal classes give from noise alone)
                            and ``class_std_p_noise``
``flags``                   the audit's sanity flags (e.g. ``masking``, ``zero_gradient``)
``seconds``                 the model's audit time (building the model included)
=========================== =====================================================================
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..errors import RobustfairError
from ..metrics import ClassReport

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
    for measure, column in (("difference", "gap"), ("std", "class_std")):
        row[column] = float(d.loc[measure, "value"])
        row[column + "_lo"] = float(d.loc[measure, "lo"])
        row[column + "_hi"] = float(d.loc[measure, "hi"])
        if column == "class_std":
            row[column + "_noise_floor"] = float(d.loc[measure, "noise_floor"])
        row[column + "_p_noise"] = float(d.loc[measure, "p_noise"])
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
