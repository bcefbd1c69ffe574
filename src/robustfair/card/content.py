"""What the audit card says, as plain data for its template: every number comes from the
:class:`~robustfair.metrics.ClassReport` (no recomputation of accuracy here).

>>> import pandas as pd
>>> from robustfair.metrics import ClassReport
>>> preds = pd.DataFrame({"y_true": [0, 0, 1, 1], "clean_pred": [0, 0, 1, 0],
...                       "pgd_pred": [1, 0, 1, 0], "worst_pred": [1, 0, 1, 0]})
>>> r = ClassReport(predictions=preds, classes=["a", "b"], attacks=[{"attack": "pgd"}])
>>> print(confusion_markdown(r).splitlines()[2])  # a backslash is escaped for Markdown
| true \\\\ predicted | a | b |
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._formatting import describe_attack, estimate, format_p, interval, percent
from ..errors import RobustfairError
from .._formatting import markdown_table

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import ClassReport

__all__ = ["broken_by", "card_context", "confusion_markdown", "published_comparison", "sanity_flags",
           "top_confusions"]

# what the columns of report.discrepancy() mean, for those it returns (others are shown as they are)
DISCREPANCY_COLUMNS = {
    "bias": "bias: the bootstrap estimate of the measure's bias (for worst, the selection bias of "
            "taking the lowest of K noisy class estimates; value - bias corrects it)",
    "noise_floor": "noise_floor: the value sampling noise alone gives if every class had the same "
                   "true accuracy",
    "p_noise": "p_noise: the share of such no-gap draws with a gap at least as wide as observed "
               "(small: the gap exceeds sampling noise)",
}


def confusion_markdown(report: "ClassReport", attack: str = "worst") -> str:
    """The confusion matrix under ``attack`` as a markdown section (counts)."""
    matrix = report.confusion(attack)
    header = ["true \\ predicted"] + [str(c) for c in matrix.columns]
    rows = [[str(name)] + [str(int(v)) for v in row] for name, row in matrix.iterrows()]
    what = "the worst case over the attacks" if attack == "worst" else attack
    return (f"## Confusion under attack ({what}): true class × predicted class, counts\n\n"
            + markdown_table(header, rows) + "\n")


def broken_by(report: "ClassReport") -> pd.DataFrame:
    """Per class: how many points each attack broke first, and how many stayed ``robust``."""
    return report.broken_by()


def sanity_flags(report: "ClassReport") -> list[dict]:
    """The report's sanity flags (``{"code", "message", "classes"}`` each)."""
    return list(report.flags)


def top_confusions(report: "ClassReport", n: int = 5) -> list[dict]:
    """The ``n`` largest off-diagonal cells of the worst-case confusion matrix."""
    counts = report.confusion("worst")
    values = counts.to_numpy().astype(float)
    np.fill_diagonal(values, 0)
    totals = counts.sum(axis=1).to_numpy()
    out = []
    for flat in np.argsort(-values, axis=None, kind="stable")[:n]:
        i, j = np.unravel_index(flat, values.shape)
        if values[i, j] <= 0:
            break
        out.append({"true": counts.index[i], "pred": counts.columns[j], "count": int(values[i, j]),
                    "share": percent(values[i, j] / totals[i]) if totals[i] else "n/a"})
    return out


def _interval(row, metric: str) -> str:
    return estimate(row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"])


def _split(text: str) -> tuple[str, str]:
    """``"97.2 [95.5, 98.3]"`` -> ``("97.2", "[95.5, 98.3]")`` for the headline boxes."""
    value, _, interval = text.partition(" ")
    return value, interval


def _number(value) -> str:
    """A discrepancy-table cell: whatever type the column holds, shown compactly."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.3f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2g}"
    return str(value)


def _discrepancy(report: "ClassReport", metric: str, n_boot: int, seed: int) -> dict | None:
    """``report.discrepancy(metric)`` as a header and rows, every column it returns."""
    try:
        frame = report.discrepancy(metric, n_boot=n_boot, seed=seed)
    except RobustfairError:  # no class has a value for this metric
        return None
    header = [frame.index.name or "measure"] + [str(c) for c in frame.columns]
    # p-values as every p-value is printed; the other columns compactly
    rows = [[str(name)] + [format_p(v) if column == "p_noise" else _number(v)
                           for column, v in row.items()] for name, row in frame.iterrows()]
    return {"metric": metric, "header": header, "rows": rows, "frame": frame}


def _class_rows(report: "ClassReport", broken: pd.DataFrame, worst: str | None) -> tuple[dict, list[dict]]:
    """The per-class table: clean and robust accuracy with intervals, each attack's accuracy
    (the value only, to keep the table narrow), and the points each attack broke first.

    The header has a group row (``groups``: label and column span) above the column names.
    """
    by_class = report.by_class
    attack_metrics = [f"{a}_acc" for a in report.attack_names]
    tail = [c for c in ("robust", "clean_wrong") if c in broken.columns]
    breakers = [c for c in broken.columns if c not in tail]
    header = {
        "groups": [("", 2), ("accuracy, % [95% CI]", 2 + len(attack_metrics)),
                   ("points broken first by", len(breakers)), ("points", len(tail))],
        # a composite attack's parts are named "autoattack:apgd-ce": the part is enough here
        "columns": (["class", "n", "clean", "robust"] + list(report.attack_names)
                    + [c.split(":", 1)[-1] for c in breakers] + [c.replace("_", " ") for c in tail]),
    }
    rows = []
    for name, row in by_class.iterrows():
        cells = [str(name), str(int(row["n"])), _interval(row, "clean_acc"), _interval(row, "robust_acc")]
        cells += [percent(row[m]) for m in attack_metrics]
        cells += [str(int(broken.loc[name, c])) for c in breakers + tail]
        rows.append({"cells": cells, "worst": name == worst, "overall": False})
    overall = report.overall
    cells = ["overall", str(int(overall["n"])), _interval(overall, "clean_acc"),
             _interval(overall, "robust_acc")]
    cells += [percent(overall[m]) for m in attack_metrics]
    total = broken.sum(axis=0)
    cells += [str(int(total[c])) for c in breakers + tail]
    rows.append({"cells": cells, "worst": False, "overall": True})
    return header, rows


def card_context(report: "ClassReport", *, title: str, figures: dict[str, str],
                 n_boot: int = 1000, seed: int = 0) -> dict:
    """Everything the card template shows. ``figures`` maps a figure name to its data URI."""
    meta = report.meta
    broken = broken_by(report)
    try:
        worst_name = report.worst_class("robust_acc")[0]
    except RobustfairError:  # no class has a robust value
        worst_name = None
    header, rows = _class_rows(report, broken, worst_name)
    overall = report.overall
    headline = {  # (value, interval) pairs
        "clean": _split(_interval(overall, "clean_acc")),
        "robust": _split(_interval(overall, "robust_acc")),
        "worst_class": worst_name,
        "worst": _split(_interval(report.by_class.loc[worst_name], "robust_acc") if worst_name else "n/a"),
        "n": int(overall["n"]),
    }
    discrepancy = [d for d in (_discrepancy(report, m, n_boot, seed) for m in ("robust_acc", "clean_acc"))
                   if d is not None]
    robust = next((d["frame"] for d in discrepancy if d["metric"] == "robust_acc"), None)
    if robust is not None and "difference" in robust.index:
        gap = robust.loc["difference"]
        headline["gap"] = ((percent(gap["value"]), interval(gap["lo"], gap["hi"]))
                           if math.isfinite(gap["value"]) else ("n/a", ""))
    attacks = [{"name": name, "lines": describe_attack(name, settings).splitlines()}
               for name, settings in zip(report.attack_names, report.attacks)]
    provenance = [
        ("model", model_name(meta)),
        ("RobustBench entry", _robustbench_text(meta.get("robustbench"))),
        ("weights", meta.get("weights") or meta.get("checkpoint")),
        ("weights SHA-256", meta.get("weights_sha256")),
        ("input normalisation", _normalize_text(meta.get("normalize"))),
        ("output index", meta.get("output_index")),
        ("data", meta.get("dataset")),
        ("split", meta.get("split")),
        ("points audited", len(report.predictions)),
        ("data SHA-256 (audited images and labels)", meta.get("data_sha256")),
        ("device", meta.get("device")),
        ("started (UTC)", meta.get("started")),
        ("audit time", f"{meta['time_seconds']:.1f} s" if isinstance(meta.get("time_seconds"), (int, float)) else None),
        ("batch size", meta.get("batch_size")),
        ("seed", meta.get("seed")),
        ("mixed precision", "yes" if meta.get("amp") else "no"),
        ("model run", " + ".join(meta.get("model_optimizations") or []) or "as is"),
        ("attacks independent", "yes" if meta.get("independent", True) else "no (skip fooled points)"),
    ]
    versions = sorted((meta.get("versions") or {}).items())
    return {
        "title": title,
        "headline": headline,
        "eps_text": meta.get("eps_text"),
        "class_header": header,
        "class_rows": rows,
        "broken_columns": list(broken.columns),
        "discrepancy": discrepancy,
        "discrepancy_notes": [text for column, text in DISCREPANCY_COLUMNS.items()
                              if any(column in d["header"] for d in discrepancy)],
        "top_confusions": top_confusions(report),
        "flags": sanity_flags(report),
        "attacks": attacks,
        "provenance": [(k, v) for k, v in provenance if v is not None and v != ""],
        "published": published_comparison(report),
        "versions": versions,
        "figures": figures,
        "n_boot": n_boot,
    }


def published_comparison(report: "ClassReport") -> list[str]:
    """For a RobustBench entry: its published clean and robust accuracy beside this audit's,
    as lines of text, with what differs between the two evaluations (empty for other models).

    >>> import pandas as pd
    >>> from robustfair.metrics import ClassReport
    >>> preds = pd.DataFrame({"y_true": [0, 1], "clean_pred": [0, 1], "pgd_pred": [1, 1],
    ...                       "worst_pred": [1, 1]})
    >>> r = ClassReport(predictions=preds, classes=["a", "b"], attacks=[{"attack": "pgd"}],
    ...                 meta={"eps_text": "8/255", "robustbench": {"name": "Standard",
    ...                       "dataset": "cifar10", "threat_model": "Linf", "published": {
    ...                       "clean_acc": 94.78, "robust_acc": 0.0, "robust_metric": "AutoAttack",
    ...                       "eps": "8/255", "architecture": "WideResNet-28-10", "source": "README"}}})
    >>> print(published_comparison(r)[0])
    RobustBench cifar10/Linf/Standard (WideResNet-28-10), published: clean 94.78%, AutoAttack 0.00% at eps 8/255, on its full test set; from README
    """
    info = report.meta.get("robustbench")
    if not isinstance(info, dict):
        return []
    label = f"{info.get('dataset')}/{info.get('threat_model')}/{info.get('name')}"
    pub = info.get("published")
    if not pub:
        return [f"RobustBench {label}: the installed RobustBench lists no published accuracy for it"]
    robust = "n/a" if pub.get("robust_acc") is None else f"{pub['robust_acc']:.2f}%"
    at = f" at eps {pub['eps']}" if pub.get("eps") else ""
    lines = [f"RobustBench {label} ({pub.get('architecture') or 'architecture not listed'}), "
             f"published: clean {pub['clean_acc']:.2f}%, {pub.get('robust_metric')} {robust}{at}, "
             f"on its full test set; from {pub.get('source')}"]
    overall = report.overall
    attacks = ", ".join(report.attack_names) or "no attack"
    clean, robust_here = (_split(_interval(overall, m)) for m in ("clean_acc", "robust_acc"))
    lines.append(f"robustfair, this audit: clean {clean[0]}% {clean[1]}, robust {robust_here[0]}% "
                 f"{robust_here[1]} at eps {report.meta.get('eps_text')} ({attacks}), "
                 f"{len(report.predictions)} points (95% intervals)")
    differs = []
    if pub.get("eps") and str(report.meta.get("eps_text")) != str(pub["eps"]):
        differs.append(f"eps {report.meta.get('eps_text')} here, {pub['eps']} published")
    if pub.get("robust_metric") == "AutoAttack" and report.attack_names != ["autoattack"]:
        differs.append(f"attacks {attacks} here, AutoAttack published")
    if differs:
        lines.append("not the same evaluation: " + "; ".join(differs))
    return lines


def model_name(meta: dict) -> str:
    """How the card names the model: the ``--model`` spec, else the checkpoint and its architecture."""
    if meta.get("model_spec"):
        return str(meta["model_spec"])
    config = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    parts = [str(meta["checkpoint"])] if meta.get("checkpoint") else []
    if config.get("name"):
        parts.append(f"({config['name']})")
    return " ".join(parts) or "model"


def _normalize_text(value) -> str | None:
    if not isinstance(value, dict):
        return None
    fmt = lambda xs: ", ".join(f"{x:g}" for x in xs)  # noqa: E731
    return f"{value.get('spec')}: mean ({fmt(value['mean'])}), std ({fmt(value['std'])})"


def _robustbench_text(info) -> str | None:
    if not isinstance(info, dict):
        return None
    return (f"{info.get('name')} ({info.get('dataset')}, {info.get('threat_model')}), loaded by "
            f"robustbench {info.get('robustbench_version')} from {info.get('model_dir')}")
