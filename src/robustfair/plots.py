"""Figures a user can put in a paper: class-wise clean vs robust bars.

Matplotlib with the non-interactive Agg backend (no screen needed); every function writes a PNG
atomically and returns its path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ._atomic import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Save a matplotlib figure to ``path`` atomically (temp file + rename) and close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight",
                                                          format="png"))
    finally:
        _pyplot().close(fig)


def classwise_bars(
    reports: Mapping[str, "object"],
    path: str | os.PathLike,
    *,
    title: str = "Class-wise clean and robust accuracy",
) -> Path:
    """Grouped bars per class: clean and robust accuracy for each model, with Wilson intervals.

    ``reports`` maps a model label (e.g. "standard", "PGD-AT") to its ClassReport.
    """
    plt = _pyplot()
    labels = list(reports)
    classes = list(next(iter(reports.values())).classes)
    series = []  # (label, values, lo, hi, hatch)
    for label in labels:
        table = reports[label].by_class
        for metric, hatch in (("clean_acc", ""), ("robust_acc", "//")):
            series.append((f"{label} {metric.split('_')[0]}", table[metric].to_numpy(),
                           table[f"{metric}_lo"].to_numpy(), table[f"{metric}_hi"].to_numpy(), hatch))
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(classes) + 2), 3.6))
    for i, (name, vals, lo, hi, hatch) in enumerate(series):
        color = colors[(i // 2) % len(colors)]
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * vals, width, label=name, color=color,
               alpha=1.0 if not hatch else 0.55, hatch=hatch, edgecolor="black", linewidth=0.4,
               yerr=[100 * np.clip(vals - lo, 0, None), 100 * np.clip(hi - vals, 0, None)], error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.set_xticks(x, classes, rotation=0 if len(classes) <= 12 else 60)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=min(4, len(series)), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return save_figure(fig, path)
