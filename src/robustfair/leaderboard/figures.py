"""The leaderboard's figure: robust accuracy per model and class, as a heat map (models in
the table's order, best first; each cell annotated while the grid stays legible)."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["robust_heatmap"]


def robust_heatmap(classwise: pd.DataFrame, models: list[str]) -> bytes:
    """PNG bytes of the models x classes heat map of robust accuracy (%) from ``classwise``
    (:func:`~robustfair.leaderboard.table.classwise_table`), rows in the order of ``models``."""
    from matplotlib.figure import Figure

    from ..study.plots import png_bytes  # no pyplot: nothing global to close

    grid = classwise.pivot(index="model", columns="class", values="robust_acc")
    classes = list(dict.fromkeys(classwise["class"]))  # the data set's class order
    grid = grid.reindex(index=models, columns=classes) * 100
    k, m = len(classes), len(models)
    fig = Figure(figsize=(min(18.0, 2.5 + 0.55 * k), min(14.0, 1.4 + 0.42 * m)))
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(np.arange(k), [str(c) for c in classes], rotation=0 if k <= 12 else 90,
                  fontsize=8 if k <= 30 else 5)
    ax.set_yticks(np.arange(m), models, fontsize=8)
    ax.set_xlabel("class")
    if k * m <= 400:  # numbers in the cells while they stay readable
        for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 60 else "black")
    fig.colorbar(image, ax=ax, label="robust accuracy (%)", fraction=0.04, pad=0.02)
    ax.set_title("Robust accuracy per class (%)")
    return png_bytes(fig)
