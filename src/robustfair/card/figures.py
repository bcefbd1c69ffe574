"""The audit card's figures, in the package's one plotting style (:mod:`robustfair.plots`).

Each ``draw_*`` function draws into a given axes, so the page's separate figures and the
one-image summary (:func:`summary_figure`) show the same drawing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots import annotate, class_ticks, png_bytes, short

__all__ = ["broken_by_figure", "class_figure", "confusion_figure", "png_bytes", "summary_figure"]

WORST_COLOR = "#c0392b"


def draw_class_bars(ax, by_class: pd.DataFrame, worst: str | None) -> None:
    """Clean and robust accuracy per class with 95% Wilson intervals; the worst class in red."""
    names = [str(c) for c in by_class.index]
    x = np.arange(len(names))
    for offset, metric, label, style in ((-0.2, "clean_acc", "clean", {"color": "#95a5a6"}),
                                         (0.2, "robust_acc", "robust", {"color": "#2c7fb8"})):
        v = by_class[metric].to_numpy(float)
        lo = np.clip(v - by_class[f"{metric}_lo"].to_numpy(float), 0, None)
        hi = np.clip(by_class[f"{metric}_hi"].to_numpy(float) - v, 0, None)
        colors = [WORST_COLOR if metric == "robust_acc" and n == worst else style["color"] for n in names]
        ax.bar(x + offset, 100 * np.nan_to_num(v), 0.4, color=colors, label=label,
               yerr=[100 * np.nan_to_num(lo), 100 * np.nan_to_num(hi)],
               error_kw={"elinewidth": 0.7, "capsize": 1.5}, edgecolor="black", linewidth=0.3)
    class_ticks(ax, "x", names)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("class")
    ax.grid(axis="y", alpha=0.3)
    # below the axes: inside, it would hide the bars of the last classes
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    title = "clean and robust accuracy per class (95% CI)"
    ax.set_title(title + (f"; worst: {worst}" if worst is not None else ""), fontsize=9)


def draw_confusion(fig: Figure, ax, counts: pd.DataFrame) -> None:
    """The confusion matrix under attack, as % of each true class."""
    totals = counts.sum(axis=1).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = 100 * counts.to_numpy(float) / totals[:, None]
    image = ax.imshow(rates, cmap="Reds", vmin=0, vmax=100)
    names = [str(c) for c in counts.index]
    class_ticks(ax, "x", names)
    class_ticks(ax, "y", names)
    ax.set_xlabel("predicted under attack")
    ax.set_ylabel("true class")
    ax.set_title("adversarial confusion (% of the true class)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.6)
    annotate(fig, [(ax, rates, "{:.0f}", lambda v: v < 0.5)])


def draw_broken_by(ax, table: pd.DataFrame) -> None:
    """Stacked bars per class: points broken first by each attack, robust, wrong when clean."""
    names = [str(c) for c in table.index]
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    fixed = {"robust": "#2c7fb8", "clean_wrong": "#7f7f7f"}
    others = [c for c in table.columns if c not in fixed]
    palette = ["#e67e22", "#8e44ad", "#f1c40f", "#16a085", "#e84393", "#d35400", "#6c5ce7"]
    for i, column in enumerate(others + [c for c in fixed if c in table.columns]):
        values = table[column].to_numpy(float)
        color = fixed.get(column, palette[i % len(palette)])
        ax.bar(x, values, 0.7, bottom=bottom, label=column.replace("_", " "), color=color,
               edgecolor="black", linewidth=0.2)
        bottom += values
    class_ticks(ax, "x", names)
    ax.set_ylabel("points")
    ax.set_xlabel("class")
    ax.set_title("which attack broke each point first", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def class_figure(by_class: pd.DataFrame, worst: str | None) -> Figure:
    fig = Figure(figsize=(min(11.0, 4.0 + 0.45 * len(by_class)), 3.4), layout="constrained")
    draw_class_bars(fig.add_subplot(), by_class, worst)
    return fig


def confusion_figure(counts: pd.DataFrame) -> Figure:
    side = min(7.0, 2.6 + 0.32 * len(counts))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    draw_confusion(fig, fig.add_subplot(), counts)
    return fig


def broken_by_figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(min(11.0, 5.0 + 0.45 * len(table)), 3.2), layout="constrained")
    draw_broken_by(fig.add_subplot(), table)
    return fig


def summary_figure(*, title: str, lines: list[str], by_class: pd.DataFrame, worst: str | None,
                   counts: pd.DataFrame, broken: pd.DataFrame) -> Figure:
    """One image for a model release: the headline, the per-class bars, the adversarial
    confusion and which attack broke what."""
    fig = Figure(figsize=(12.0, 8.6), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[0.55, 2.2, 1.6], width_ratios=[1.5, 1.0])
    fig.suptitle(short(title, 100), fontsize=13, fontweight="bold", x=0.01, ha="left")
    head = fig.add_subplot(grid[0, :])
    head.axis("off")
    # the text must not take part in the layout: a long line would squeeze the plots instead
    text = head.text(0.0, 1.0, "\n".join(short(line, 150) for line in lines), fontsize=8.5,
                     va="top", ha="left", family="monospace", transform=head.transAxes)
    text.set_in_layout(False)
    draw_class_bars(fig.add_subplot(grid[1, 0]), by_class, worst)
    draw_confusion(fig, fig.add_subplot(grid[1:, 1]), counts)
    draw_broken_by(fig.add_subplot(grid[2, 0]), broken)
    return fig
