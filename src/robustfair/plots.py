"""The one plotting style, and the figure helpers every room's figures share (the card, the
study report, explain, the leaderboard, the demo).

One style: matplotlib's object API (a ``Figure`` and its Agg canvas: no pyplot, so no global
state, no display needed and no backend forced on a user), a constrained layout, titles at 10
pt and class ticks at 7 pt, light grids, one palette of twenty colours and thirteen markers.
A figure becomes PNG bytes (:func:`png_bytes`, for pages that embed it) or a PNG file written
atomically (:func:`save_figure`). matplotlib is imported with this module, never by a room's
package: import it where a figure is drawn.

:func:`classwise_bars` draws the figure a user puts in a paper: clean and robust accuracy per
class for one or more models, with Wilson intervals.
"""
from __future__ import annotations

import io
import math
import os
import textwrap
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._atomic import atomic_write_bytes

__all__ = ["MAX_WIDTH", "TITLE_SIZE", "annotate", "class_ticks", "classwise_bars", "grid",
           "legend_below", "png_bytes", "save_figure", "series_style", "short", "wrap"]

MAX_WIDTH = 11.0  # inches: 1100 px at the pages' 100 dpi
TITLE_SIZE = 10
TICK_SIZE = 7
# twenty colours (tab10, then its lighter partners from tab20) and thirteen markers: series i
# gets colour i % 20 and marker i % 13, so no two of the first 260 series look the same, and
# neighbours differ in both
COLOURS = colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2]
MARKERS = "osD^v<>pP*Xhd"


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write a figure to ``path`` as PNG, atomically (a temporary file, then a rename)."""
    return atomic_write_bytes(path, png_bytes(fig, dpi=dpi))


def grid(n: int, *, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list]:
    """A figure of ``n`` panels of ``panel`` inches, ``ncols`` a row, at most MAX_WIDTH wide."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = min(MAX_WIDTH, panel[0] * ncols)
    fig = Figure(figsize=(width, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def class_ticks(ax, axis: str, names, *, rotate: bool | None = None) -> None:
    """Class names as ticks; with many classes (CIFAR-100) only every n-th is written.
    ``rotate`` (default: more than 10 classes) slants the x labels."""
    names = [str(n) for n in names]
    rotate = len(names) > 10 if rotate is None else rotate
    step = max(1, math.ceil(len(names) / 40))
    ticks = list(range(0, len(names), step))
    labels = [short(names[i], 10) for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=45 if rotate else 0, fontsize=TICK_SIZE,
                      ha="right" if rotate else "center", rotation_mode="anchor")
    else:
        ax.set_yticks(ticks, labels, fontsize=TICK_SIZE)


def short(text: str, width: int = 48) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def wrap(text: str, width: int = 48) -> str:
    """A long label on several lines, whole (a legend entry that ends in "…" can no longer
    tell two configurations apart); breaks after the commas between axes where it can."""
    return "\n".join(textwrap.wrap(str(text), width, break_on_hyphens=False)) or str(text)


def series_style(i: int) -> dict:
    """Colour and marker of the i-th series: distinct for every series of a figure."""
    return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)]}


def legend_below(fig: Figure, handles: list, labels: list[str], ncols: int,
                 fontsize: float = 7) -> None:
    """One legend under the panels; the figure grows by the legend's height, so that many
    long (wrapped) labels never squeeze the panels."""
    if not labels:
        return
    ncols = min(ncols, len(labels))
    per_col = math.ceil(len(labels) / ncols)
    columns = [labels[c * per_col:(c + 1) * per_col] for c in range(ncols)]  # filled by column
    # a text line is about 1.25 em high, and entries are 0.5 em apart
    tallest = max(sum(1.25 * (t.count("\n") + 1) + 0.5 for t in col) for col in columns)
    fig.set_figheight(fig.get_figheight() + (tallest * fontsize + 10) / 72)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=fontsize)


def _cell_text(fmt: str, v: float) -> str:
    """``fmt`` of ``v``, with a value that rounds to zero written "0" (not "-0" or "+0")."""
    text = fmt.format(v)
    return "0" if text.lstrip("+-").strip("0.") == "" else text


def annotate(fig: Figure, cells: list[tuple[object, np.ndarray, str, Callable | None]]) -> None:
    """Write each cell's value in its heat map, for each ``(axes, values, fmt, skip)``: the
    font sized to the cell (once the layout has fixed the axes' size) and black or white by
    the cell's colour; nothing in a panel whose cells are too small to read."""
    FigureCanvasAgg(fig)
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)  # the layout alone fixes the axes (no full draw)
    for ax, values, fmt, skip in cells:
        box, image = ax.get_window_extent(), ax.images[0]
        rows, cols = values.shape
        cell_w, cell_h = (72 / fig.dpi) * box.width / cols, (72 / fig.dpi) * box.height / rows
        texts = [[_cell_text(fmt, v) if np.isfinite(v) and not (skip and skip(v)) else ""
                  for v in row] for row in values]
        chars = max((len(t) for row in texts for t in row), default=1)
        # a digit is about 0.6 em wide; leave about one digit of margin in the cell
        size = min(cell_h * 0.55, cell_w / (0.6 * chars + 0.8), 12.0)
        if size < 5:
            continue
        for (i, j), v in np.ndenumerate(values):
            if texts[i][j]:
                r, g, b, _ = image.cmap(image.norm(v))
                luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
                ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=size,
                        color="white" if luminance < 0.5 else "black")


def classwise_bars(
    reports: Mapping[str, "object"],
    path: str | os.PathLike,
    *,
    title: str = "Class-wise clean and robust accuracy",
) -> Path:
    """Grouped bars per class: clean and robust accuracy for each model, with Wilson
    intervals, written to ``path`` (PNG). ``reports`` maps a model label (e.g. "standard",
    "PGD-AT") to its ClassReport."""
    labels = list(reports)
    classes = list(next(iter(reports.values())).classes)
    series = []  # (label, values, lo, hi, robust)
    for label in labels:
        table = reports[label].by_class
        for metric in ("clean_acc", "robust_acc"):
            series.append((f"{label} {metric.split('_')[0]}", table[metric].to_numpy(float),
                           table[f"{metric}_lo"].to_numpy(float),
                           table[f"{metric}_hi"].to_numpy(float), metric == "robust_acc"))
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    fig, (ax,) = grid(1, ncols=1, panel=(max(6.0, 0.9 * len(classes) + 2), 3.6))
    for i, (name, vals, lo, hi, robust) in enumerate(series):
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * vals, width, label=name,
               color=COLOURS[(i // 2) % len(COLOURS)], alpha=0.55 if robust else 1.0,
               hatch="//" if robust else None, edgecolor="black", linewidth=0.4,
               yerr=[100 * np.clip(vals - lo, 0, None), 100 * np.clip(hi - vals, 0, None)],
               error_kw={"elinewidth": 0.6, "capsize": 1.5})
    class_ticks(ax, "x", classes, rotate=len(classes) > 12)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.grid(axis="y", alpha=0.3)
    legend_below(fig, *ax.get_legend_handles_labels(), ncols=min(4, len(series)), fontsize=8)
    return save_figure(fig, path)
