"""The study report's figures, in the package's one plotting style (:mod:`robustfair.plots`,
whose helpers they use). Each function takes ready-made frames and returns a Figure;
:func:`png_bytes` renders one."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots import (MAX_WIDTH, annotate, class_ticks, grid, legend_below, png_bytes,
                     series_style, short, wrap)

__all__ = ["classwise_bars", "confusion_matrices", "deviation_heatmaps", "epoch_curves",
           "eps_curves", "png_bytes", "similarity_matrices", "tradeoff"]

def classwise_bars(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Grouped bars per class; each panel's frame has classes as rows and one column per bar
    series (e.g. ``standard clean``, ``pgd_at clean``, ``pgd_at robust``), values in [0, 1]."""
    fig, axes = grid(len(panels), ncols=2, panel=(5.5, 3.2))
    for ax, (title, frame) in zip(axes, panels):
        k, series = len(frame), list(frame.columns)
        width = 0.8 / max(1, len(series))
        x = np.arange(k)
        for i, name in enumerate(series):
            hatch = "//" if "robust" in name else None
            ax.bar(x + (i - (len(series) - 1) / 2) * width, 100 * frame[name].to_numpy(float),
                   width, label=name, hatch=hatch, color=f"C{i // 2 if len(series) > 2 else i}",
                   alpha=0.55 if "robust" in name else 0.95, edgecolor="black", linewidth=0.3)
        class_ticks(ax, "x", list(frame.index), rotate=k > 10)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(wrap(title, 60), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    _shared_legend(fig, axes)
    return fig


def _shared_legend(fig: Figure, axes: list, ncols: int = 4) -> None:
    """One legend under all panels (the series of every panel, once each)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    legend_below(fig, list(seen.values()), list(seen), ncols=ncols)


def deviation_heatmaps(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Heatmaps of each class's deviation from the class mean (points); rows: models,
    columns: classes. A diverging colour map centred at zero (red: below the mean)."""
    rows = max(len(f) for _, f in panels)
    k = max(f.shape[1] for _, f in panels)
    panel_w = min(MAX_WIDTH, 4.0 + 0.45 * k)
    fig, axes = grid(len(panels), ncols=2 if panel_w <= 5.5 else 1,
                      panel=(panel_w, 1.2 + 0.3 * rows))
    for ax, (title, frame) in zip(axes, panels):
        values = 100 * frame.to_numpy(float)
        bound = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
        image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        class_ticks(ax, "x", list(frame.columns), rotate=frame.shape[1] > 10)
        ax.set_yticks(range(len(frame)), [wrap(r, 60) for r in frame.index], fontsize=7)
        ax.set_title(wrap(title, 70), fontsize=10)
        fig.colorbar(image, ax=ax, label="deviation (points)", shrink=0.8)
    annotate(fig, [(ax, 100 * frame.to_numpy(float), "{:+.0f}", None)
                    for ax, (_, frame) in zip(axes, panels)])
    return fig


def similarity_matrices(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Cosine-similarity (or, for a title with "centred", Pearson r) matrices (symmetric
    frames) with their values written in."""
    n = max(len(f) for _, f in panels)
    side = min(5.5, 2.0 + 0.45 * n)
    fig, axes = grid(len(panels), ncols=2, panel=(side + 1.0, side))
    for ax, (title, frame) in zip(axes, panels):
        values = frame.to_numpy(float)
        off = values[~np.eye(len(values), dtype=bool) & np.isfinite(values)]
        # the colours span what is there (all near 1 is common), never less than 0.02 wide;
        # centred correlations can be negative
        low = max(-1.0, min(0.98, float(off.min()) - 0.005)) if off.size else 0.0
        image = ax.imshow(values, cmap="viridis", vmin=low, vmax=1.0)
        labels = [wrap(c, 24) for c in frame.columns]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7,
                      rotation_mode="anchor")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(wrap(title, 60), fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8,
                     label="Pearson r" if "centred" in title else "cosine")
    annotate(fig, [(ax, frame.to_numpy(float), "{:.2f}", None)
                    for ax, (_, frame) in zip(axes, panels)])
    return fig


def eps_curves(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Robust accuracy of each class against eps; each frame: eps rows × class columns."""
    fig, axes = grid(len(panels), ncols=2, panel=(5.5, 3.4))
    for ax, (title, frame) in zip(axes, panels):
        for i, cls in enumerate(frame.columns):
            ax.plot(frame.index, 100 * frame[cls].to_numpy(float), markersize=4,
                    label=short(str(cls), 12), linestyle="-" if i < 10 else "--", **series_style(i))
        ax.set_xlabel("eps (training and evaluation)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(wrap(title, 60), fontsize=10)
        ax.grid(alpha=0.3)
        if len(frame.columns) <= 20:
            ax.legend(fontsize=6, ncols=2)
    return fig


def epoch_curves(curves: dict[str, pd.DataFrame]) -> Figure:
    """Validation accuracy through training: for each model (dict key), a frame indexed by
    epoch with ``clean_mean``, ``clean_worst``, ``robust_mean``, ``robust_worst``. Solid:
    mean over classes; dashed: the worst class."""
    fig, axes = grid(2, ncols=2, panel=(5.5, 3.4))
    for ax, metric in zip(axes, ("clean", "robust")):
        for i, (name, frame) in enumerate(curves.items()):
            ax.plot(frame.index, 100 * frame[f"{metric}_mean"], markersize=4,
                    label=wrap(name, 55), **series_style(i))
            ax.plot(frame.index, 100 * frame[f"{metric}_worst"], markersize=4, linestyle="--",
                    **series_style(i))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{metric}: mean (solid) and worst class (dashed)", fontsize=10)
        ax.grid(alpha=0.3)
    legend_below(fig, *axes[0].get_legend_handles_labels(), ncols=2)
    return fig


def tradeoff(points: pd.DataFrame) -> Figure:
    """Average vs worst-class robust accuracy, one point per method (columns ``name``,
    ``x``, ``x_sd``, ``y``, ``y_sd``: fractions; error bars: std over seeds)."""
    fig, axes = grid(1, ncols=1, panel=(8.5, 4.5))
    ax = axes[0]
    for i, row in enumerate(points.itertuples()):
        style = series_style(i)
        ax.errorbar(100 * row.x, 100 * row.y, xerr=100 * np.nan_to_num(row.x_sd),
                    yerr=100 * np.nan_to_num(row.y_sd), fmt=style["marker"],
                    color=style["color"], markersize=6, capsize=3, alpha=0.9,
                    label=wrap(row.name, 55))
    ax.set_xlabel("average robust accuracy over classes (%)")
    ax.set_ylabel("worst-class robust accuracy (%)")
    ax.set_title("trade-off: average vs worst class (error bars: std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    legend_below(fig, *ax.get_legend_handles_labels(), ncols=2)
    return fig


def confusion_matrices(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Row-normalised confusion matrices (true × predicted, fractions)."""
    k = max(len(f) for _, f in panels)
    side = min(5.5, 2.2 + 0.35 * k)
    fig, axes = grid(len(panels), ncols=2, panel=(side + 1.0, side))
    for ax, (title, frame) in zip(axes, panels):
        values = 100 * frame.to_numpy(float)
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=100)
        class_ticks(ax, "x", list(frame.columns), rotate=k > 10)
        class_ticks(ax, "y", list(frame.index), rotate=False)
        ax.set_xlabel("predicted under attack")
        ax.set_ylabel("true class")
        ax.set_title(wrap(title, 60), fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8, label="% of the true class")
    annotate(fig, [(ax, 100 * frame.to_numpy(float), "{:.0f}", lambda v: v < 0.5)
                    for ax, (_, frame) in zip(axes, panels)])
    return fig
