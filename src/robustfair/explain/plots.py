"""The explain figures: similarity heatmap, margin boxes, robust accuracy against eps, corruption vs
attack bars. Matplotlib with the Agg backend; each function draws one figure and saves it
atomically with :func:`robustfair.plots.save_figure`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..plots import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no screen needed; leaves a user's own backend alone
    import matplotlib.pyplot as plt

    return plt


def _rotation(n: int) -> int:
    return 0 if n <= 12 else 60


def similarity_heatmap(similarity, path: str | os.PathLike, *, title: str) -> Path:
    """K×K cosine similarity of class centroids, annotated when there are few classes."""
    plt = _pyplot()
    s = similarity.to_numpy(dtype=float)
    names = [str(c) for c in similarity.index]
    k = len(names)
    size = min(12.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(s, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k), names, rotation=_rotation(k), fontsize=8 if k > 20 else 10)
    ax.set_yticks(range(k), names, fontsize=8 if k > 20 else 10)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(s[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_title(title)
    return save_figure(fig, path)


def margin_boxes(margins: np.ndarray, y: np.ndarray, classes: list[str], path: str | os.PathLike, *,
                 eps: float, eps_max: float, norm: str) -> Path:
    """One box per class of the per-point margins (clean errors at 0; unflipped points drawn at
    ``eps_max``, the edge of the search), with the audit's eps as a line."""
    plt = _pyplot()
    m = np.where(np.isinf(margins), eps_max, margins)
    data = [m[y == k] for k in range(len(classes))]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(classes) + 2), 3.6))
    ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, len(classes) + 1), classes, rotation=_rotation(len(classes)))
    ax.axhline(eps, color="tab:red", linestyle="--", linewidth=1, label=f"eps = {eps:.4g}")
    ax.axhline(eps_max, color="grey", linestyle=":", linewidth=1, label=f"search limit {eps_max:.4g}")
    ax.set_xlabel("class")
    ax.set_ylabel(f"smallest {norm} eps that flips the point")
    ax.set_title("Per-class margins (PGD + bisection)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def robust_curves(curve, path: str | os.PathLike, *, eps: float, norm: str) -> Path:
    """Robust accuracy against eps, one line per class (and the mean over points, dashed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    grid = curve.index.to_numpy(dtype=float)
    classes = [c for c in curve.columns if c != "all"]
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        ax.plot(grid, 100 * curve[c].to_numpy(), label=c, color=cmap(i % cmap.N), linewidth=1.2)
    ax.plot(grid, 100 * curve["all"].to_numpy(), label="all", color="black", linestyle="--", linewidth=1.6)
    ax.axvline(eps, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_title("Robust accuracy per class (robust at eps iff margin > eps)")
    ax.grid(alpha=0.3)
    if len(classes) <= 20:
        ax.legend(fontsize=7, ncol=2 if len(classes) > 10 else 1, loc="upper right")
    return save_figure(fig, path)


def corruption_vs_attack(clean, corrupted, robust, path: str | os.PathLike) -> Path:
    """Per class: clean accuracy, mean accuracy over the corruptions, and robust accuracy."""
    plt = _pyplot()
    classes = [str(c) for c in clean.index]
    x = np.arange(len(classes))
    bars = [("clean", clean), ("corrupted (mean)", corrupted)]
    if robust is not None:
        bars.append(("under attack", robust))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(classes) + 2), 3.6))
    for i, (label, values) in enumerate(bars):
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * np.asarray(values, dtype=float), width, label=label)
    ax.set_xticks(x, classes, rotation=_rotation(len(classes)))
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Class-wise accuracy: clean, common corruptions, adversarial attack")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(bars), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return save_figure(fig, path)
