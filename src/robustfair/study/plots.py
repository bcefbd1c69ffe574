"""The study report's figures, drawn with matplotlib's object API (no pyplot, so no global
state and no display needed). Each function takes ready-made frames and returns a Figure;
:func:`png_bytes` renders one."""
from __future__ import annotations

import io
import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["classwise_bars", "confusion_matrices", "deviation_heatmaps", "epoch_curves",
           "eps_curves", "png_bytes", "similarity_matrices", "tradeoff"]

MAX_WIDTH = 11.0  # inches: 1100 px at the report's 100 dpi
# twenty colours (tab10, then its lighter partners from tab20) and thirteen markers: series i
# gets colour i % 20 and marker i % 13, so no two of the first 260 series look the same, and
# neighbours differ in both
_COLOURS = colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2]
_MARKERS = "osD^v<>pP*Xhd"


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _grid(n: int, *, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = min(MAX_WIDTH, panel[0] * ncols)
    fig = Figure(figsize=(width, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _class_ticks(ax, axis: str, names, *, rotate: bool) -> None:
    """Class names as ticks; with many classes (CIFAR-100) only every n-th is written."""
    step = max(1, math.ceil(len(names) / 40))
    ticks = list(range(0, len(names), step))
    labels = [_short(str(names[i]), 10) for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=45 if rotate else 0, fontsize=7)
    else:
        ax.set_yticks(ticks, labels, fontsize=7)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str, width: int = 48) -> str:
    """A long label on several lines, whole (a legend entry that ends in "…" can no longer
    tell two configurations apart); breaks after the commas between axes where it can."""
    return "\n".join(textwrap.wrap(str(text), width, break_on_hyphens=False)) or str(text)


def _style(i: int) -> dict:
    """Colour and marker of the i-th series: distinct for every series of a study."""
    return {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[i % len(_MARKERS)]}


def _legend_below(fig: Figure, handles: list, labels: list[str], ncols: int,
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


def _annotate(fig: Figure, cells: list[tuple]) -> None:
    """Write each cell's value in it, for each ``(axes, values, fmt, skip)``: the font sized to
    the cell (once the layout has fixed the axes' size) and black or white by the cell's
    colour; nothing in a panel whose cells are too small to read."""
    FigureCanvasAgg(fig)
    fig.get_layout_engine().execute(fig)  # the layout alone fixes the axes (no full draw)
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


def classwise_bars(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Grouped bars per class; each panel's frame has classes as rows and one column per bar
    series (e.g. ``standard clean``, ``pgd_at clean``, ``pgd_at robust``), values in [0, 1]."""
    fig, axes = _grid(len(panels), ncols=2, panel=(5.5, 3.2))
    for ax, (title, frame) in zip(axes, panels):
        k, series = len(frame), list(frame.columns)
        width = 0.8 / max(1, len(series))
        x = np.arange(k)
        for i, name in enumerate(series):
            hatch = "//" if "robust" in name else None
            ax.bar(x + (i - (len(series) - 1) / 2) * width, 100 * frame[name].to_numpy(float),
                   width, label=name, hatch=hatch, color=f"C{i // 2 if len(series) > 2 else i}",
                   alpha=0.55 if "robust" in name else 0.95, edgecolor="black", linewidth=0.3)
        _class_ticks(ax, "x", list(frame.index), rotate=k > 10)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(_wrap(title, 60), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    _shared_legend(fig, axes)
    return fig


def _shared_legend(fig: Figure, axes: list, ncols: int = 4) -> None:
    """One legend under all panels (the series of every panel, once each)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    _legend_below(fig, list(seen.values()), list(seen), ncols=ncols)


def deviation_heatmaps(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Heatmaps of each class's deviation from the class mean (points); rows: models,
    columns: classes. A diverging colour map centred at zero (red: below the mean)."""
    rows = max(len(f) for _, f in panels)
    k = max(f.shape[1] for _, f in panels)
    panel_w = min(MAX_WIDTH, 4.0 + 0.45 * k)
    fig, axes = _grid(len(panels), ncols=2 if panel_w <= 5.5 else 1,
                      panel=(panel_w, 1.2 + 0.3 * rows))
    for ax, (title, frame) in zip(axes, panels):
        values = 100 * frame.to_numpy(float)
        bound = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
        image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        _class_ticks(ax, "x", list(frame.columns), rotate=frame.shape[1] > 10)
        ax.set_yticks(range(len(frame)), [_wrap(r, 60) for r in frame.index], fontsize=7)
        ax.set_title(_wrap(title, 70), fontsize=10)
        fig.colorbar(image, ax=ax, label="deviation (points)", shrink=0.8)
    _annotate(fig, [(ax, 100 * frame.to_numpy(float), "{:+.0f}", None)
                    for ax, (_, frame) in zip(axes, panels)])
    return fig


def similarity_matrices(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Cosine-similarity (or, for a title with "centred", Pearson r) matrices (symmetric
    frames) with their values written in."""
    n = max(len(f) for _, f in panels)
    side = min(5.5, 2.0 + 0.45 * n)
    fig, axes = _grid(len(panels), ncols=2, panel=(side + 1.0, side))
    for ax, (title, frame) in zip(axes, panels):
        values = frame.to_numpy(float)
        off = values[~np.eye(len(values), dtype=bool) & np.isfinite(values)]
        # the colours span what is there (all near 1 is common), never less than 0.02 wide;
        # centred correlations can be negative
        low = max(-1.0, min(0.98, float(off.min()) - 0.005)) if off.size else 0.0
        image = ax.imshow(values, cmap="viridis", vmin=low, vmax=1.0)
        labels = [_wrap(c, 24) for c in frame.columns]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7,
                      rotation_mode="anchor")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(_wrap(title, 60), fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8,
                     label="Pearson r" if "centred" in title else "cosine")
    _annotate(fig, [(ax, frame.to_numpy(float), "{:.2f}", None)
                    for ax, (_, frame) in zip(axes, panels)])
    return fig


def eps_curves(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Robust accuracy of each class against eps; each frame: eps rows × class columns."""
    fig, axes = _grid(len(panels), ncols=2, panel=(5.5, 3.4))
    for ax, (title, frame) in zip(axes, panels):
        for i, cls in enumerate(frame.columns):
            ax.plot(frame.index, 100 * frame[cls].to_numpy(float), markersize=4,
                    label=_short(str(cls), 12), linestyle="-" if i < 10 else "--", **_style(i))
        ax.set_xlabel("eps (training and evaluation)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(_wrap(title, 60), fontsize=10)
        ax.grid(alpha=0.3)
        if len(frame.columns) <= 20:
            ax.legend(fontsize=6, ncols=2)
    return fig


def epoch_curves(curves: dict[str, pd.DataFrame]) -> Figure:
    """Validation accuracy through training: for each model (dict key), a frame indexed by
    epoch with ``clean_mean``, ``clean_worst``, ``robust_mean``, ``robust_worst``. Solid:
    mean over classes; dashed: the worst class."""
    fig, axes = _grid(2, ncols=2, panel=(5.5, 3.4))
    for ax, metric in zip(axes, ("clean", "robust")):
        for i, (name, frame) in enumerate(curves.items()):
            ax.plot(frame.index, 100 * frame[f"{metric}_mean"], markersize=4,
                    label=_wrap(name, 55), **_style(i))
            ax.plot(frame.index, 100 * frame[f"{metric}_worst"], markersize=4, linestyle="--",
                    **_style(i))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{metric}: mean (solid) and worst class (dashed)", fontsize=10)
        ax.grid(alpha=0.3)
    _legend_below(fig, *axes[0].get_legend_handles_labels(), ncols=2)
    return fig


def tradeoff(points: pd.DataFrame) -> Figure:
    """Average vs worst-class robust accuracy, one point per method (columns ``name``,
    ``x``, ``x_sd``, ``y``, ``y_sd``: fractions; error bars: std over seeds)."""
    fig, axes = _grid(1, ncols=1, panel=(8.5, 4.5))
    ax = axes[0]
    for i, row in enumerate(points.itertuples()):
        style = _style(i)
        ax.errorbar(100 * row.x, 100 * row.y, xerr=100 * np.nan_to_num(row.x_sd),
                    yerr=100 * np.nan_to_num(row.y_sd), fmt=style["marker"],
                    color=style["color"], markersize=6, capsize=3, alpha=0.9,
                    label=_wrap(row.name, 55))
    ax.set_xlabel("average robust accuracy over classes (%)")
    ax.set_ylabel("worst-class robust accuracy (%)")
    ax.set_title("trade-off: average vs worst class (error bars: std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend_below(fig, *ax.get_legend_handles_labels(), ncols=2)
    return fig


def confusion_matrices(panels: list[tuple[str, pd.DataFrame]]) -> Figure:
    """Row-normalised confusion matrices (true × predicted, fractions)."""
    k = max(len(f) for _, f in panels)
    side = min(5.5, 2.2 + 0.35 * k)
    fig, axes = _grid(len(panels), ncols=2, panel=(side + 1.0, side))
    for ax, (title, frame) in zip(axes, panels):
        values = 100 * frame.to_numpy(float)
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=100)
        _class_ticks(ax, "x", list(frame.columns), rotate=k > 10)
        _class_ticks(ax, "y", list(frame.index), rotate=False)
        ax.set_xlabel("predicted under attack")
        ax.set_ylabel("true class")
        ax.set_title(_wrap(title, 60), fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8, label="% of the true class")
    _annotate(fig, [(ax, 100 * frame.to_numpy(float), "{:.0f}", lambda v: v < 0.5)
                    for ax, (_, frame) in zip(axes, panels)])
    return fig
