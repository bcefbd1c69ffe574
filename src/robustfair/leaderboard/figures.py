"""The leaderboard's figure: robust accuracy per model and class, as a heat map (models in
the table's order, best first; each cell annotated while the grid stays legible)."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["robust_heatmap"]


def robust_heatmap(classwise: pd.DataFrame, models: list[str]) -> bytes:
    """PNG bytes of the models x classes heat map of robust accuracy (%) from ``classwise``
    (:func:`~robustfair.leaderboard.table.classwise_table`), rows in the order of ``models``."""
    from matplotlib.figure import Figure  # matplotlib: only when a page is drawn

    from ..plots import annotate, class_ticks, png_bytes

    table = classwise.pivot(index="model", columns="class", values="robust_acc")
    classes = list(dict.fromkeys(classwise["class"]))  # the data set's class order
    table = table.reindex(index=models, columns=classes) * 100
    k, m = len(classes), len(models)
    fig = Figure(figsize=(min(18.0, 2.5 + 0.55 * k), min(14.0, 1.4 + 0.42 * m)), layout="constrained")
    ax = fig.subplots()
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    class_ticks(ax, "x", classes)
    ax.set_yticks(np.arange(m), models, fontsize=8)
    ax.set_xlabel("class")
    fig.colorbar(image, ax=ax, label="robust accuracy (%)", fraction=0.04, pad=0.02)
    ax.set_title("Robust accuracy per class (%)", fontsize=10)
    annotate(fig, [(ax, values, "{:.0f}", None)])  # while the cells stay readable
    return png_bytes(fig)
