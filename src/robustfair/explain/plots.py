"""The explain figures: similarity heatmap, margin boxes, robust accuracy against eps, corruption vs
attack bars, in the package's one plotting style (:mod:`robustfair.plots`); each function draws
one figure and saves it atomically with :func:`robustfair.plots.save_figure`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from matplotlib import colormaps

from ..plots import TITLE_SIZE, annotate, class_ticks, grid, save_figure


def similarity_heatmap(similarity, path: str | os.PathLike, *, title: str) -> Path:
    """K×K cosine similarity of class centroids, annotated when there are few classes."""
    s = similarity.to_numpy(dtype=float)
    names = [str(c) for c in similarity.index]
    k = len(names)
    size = min(12.0, 2.5 + 0.45 * k)
    fig, (ax,) = grid(1, ncols=1, panel=(size, size * 0.85))
    im = ax.imshow(s, cmap="RdBu_r", vmin=-1, vmax=1)
    class_ticks(ax, "x", names)
    class_ticks(ax, "y", names)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_title(title, fontsize=TITLE_SIZE)
    annotate(fig, [(ax, s, "{:.2f}", None)])
    return save_figure(fig, path)


def margin_boxes(margins: np.ndarray, y: np.ndarray, classes: list[str], path: str | os.PathLike, *,
                 eps: float, eps_max: float, norm: str) -> Path:
    """One box per class of the per-point margins (clean errors at 0; unflipped points drawn at
    ``eps_max``, the edge of the search), with the audit's eps as a line."""
    m = np.where(np.isinf(margins), eps_max, margins)
    data = [m[y == k] for k in range(len(classes))]
    fig, (ax,) = grid(1, ncols=1, panel=(max(6.0, 0.6 * len(classes) + 2), 3.6))
    ax.boxplot(data, positions=range(len(classes)), showfliers=True, flierprops={"markersize": 2})
    class_ticks(ax, "x", classes)
    ax.axhline(eps, color="tab:red", linestyle="--", linewidth=1, label=f"eps = {eps:.4g}")
    ax.axhline(eps_max, color="grey", linestyle=":", linewidth=1, label=f"search limit {eps_max:.4g}")
    ax.set_xlabel("class")
    ax.set_ylabel(f"smallest {norm} eps that flips the point")
    ax.set_title("Per-class margins (PGD + bisection)", fontsize=TITLE_SIZE)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def robust_curves(curve, path: str | os.PathLike, *, eps: float, norm: str) -> Path:
    """Robust accuracy against eps, one line per class (and the mean over points, dashed)."""
    fig, (ax,) = grid(1, ncols=1, panel=(6.5, 4.0))
    eps_grid = curve.index.to_numpy(dtype=float)
    classes = [c for c in curve.columns if c != "all"]
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, c in enumerate(classes):
        ax.plot(eps_grid, 100 * curve[c].to_numpy(), label=c, color=cmap(i % cmap.N), linewidth=1.2)
    ax.plot(eps_grid, 100 * curve["all"].to_numpy(), label="all", color="black", linestyle="--",
            linewidth=1.6)
    ax.axvline(eps, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_title("Robust accuracy per class (robust at eps iff margin > eps)", fontsize=TITLE_SIZE)
    ax.grid(alpha=0.3)
    if len(classes) <= 20:
        ax.legend(fontsize=7, ncol=2 if len(classes) > 10 else 1, loc="upper right")
    return save_figure(fig, path)


def corruption_vs_attack(clean, corrupted, robust, path: str | os.PathLike) -> Path:
    """Per class: clean accuracy, mean accuracy over the corruptions, and robust accuracy."""
    classes = [str(c) for c in clean.index]
    x = np.arange(len(classes))
    bars = [("clean", clean), ("corrupted (mean)", corrupted)]
    if robust is not None:
        bars.append(("under attack", robust))
    width = 0.8 / len(bars)
    fig, (ax,) = grid(1, ncols=1, panel=(max(6.0, 0.8 * len(classes) + 2), 3.6))
    for i, (label, values) in enumerate(bars):
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * np.asarray(values, dtype=float), width, label=label)
    class_ticks(ax, "x", classes)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Class-wise accuracy: clean, common corruptions, adversarial attack",
                 fontsize=TITLE_SIZE)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(bars), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return save_figure(fig, path)
