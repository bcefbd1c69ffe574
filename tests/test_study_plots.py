"""The study figures stay legible with many configurations: every series its own colour and
marker, legend labels whole, heat-map numbers sized to their cells and coloured against them."""
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba

from robustfair.study import plots

AXES = [f"model={m}, optimizer={o}, eps={e}, objective={obj}"
        for m in ("mlp", "small_cnn") for o in ("sgd", "adam") for e in (0.1, 0.2)
        for obj in ("standard", "pgd_at, mitigations=class_weight(weights={3=5})")]


def _legend_texts(fig) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def _points() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"name": AXES, "x": rng.uniform(0.2, 0.4, 16), "x_sd": 0.01,
                         "y": rng.uniform(0.0, 0.2, 16), "y_sd": 0.01})


def test_sixteen_configurations_have_whole_labels_and_distinct_styles():
    assert len(AXES) == 16 and max(map(len, AXES)) > 80
    curves = {name: pd.DataFrame({"clean_mean": [0.5, 0.6], "clean_worst": [0.3, 0.4],
                                  "robust_mean": [0.2, 0.3], "robust_worst": [0.1, 0.2]},
                                 index=[1, 2]) for name in AXES}
    for fig in (plots.tradeoff(_points()), plots.epoch_curves(curves)):
        texts = _legend_texts(fig)
        # wrapped onto lines, never cut: joined again they are the labels, in order
        assert [t.replace("\n", " ") for t in texts] == AXES
        assert not any("…" in t for t in texts)
        ax = fig.axes[0]
        styles = {(to_rgba(line.get_color()), line.get_marker()) for line in ax.get_lines()
                  if line.get_marker() not in (None, "None", "", "_", "|")}
        colours = {c for c, _ in styles}
        markers = {m for _, m in styles}
        assert len(styles) == 16 and len(colours) == 16 and len(markers) >= 13
        # the legend lies inside the saved image (the figure grew to hold it)
        fig.draw_without_rendering()
        box = fig.legends[0].get_window_extent()
        assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width
        assert fig.axes[0].get_window_extent().height > 150  # panels not squeezed


def test_heatmap_numbers_are_sized_to_cells_and_contrast_with_them():
    cls = [str(i) for i in range(10)]
    few = pd.DataFrame(np.linspace(-0.25, 0.25, 3 * 10).reshape(3, 10), index=AXES[:3], columns=cls)
    many = pd.DataFrame(np.linspace(-0.25, 0.25, 16 * 10).reshape(16, 10), index=AXES, columns=cls)
    sizes = []
    for frame in (few, many):
        fig = plots.deviation_heatmaps([("digits", frame)])
        ax = fig.axes[0]
        texts = ax.texts
        assert len(texts) == frame.size  # every cell written
        sizes.append(texts[0].get_fontsize())
        image = ax.images[0]
        for text in texts:
            j, i = text.get_position()
            r, g, b, _ = image.cmap(image.norm(100 * frame.iloc[i, j]))
            dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5
            assert text.get_color() == ("white" if dark else "black")
        assert {t.get_color() for t in texts} == {"white", "black"}  # both occur here
    assert 7 <= sizes[1] <= sizes[0] <= 12
    # the saved PNG shows them: render one to be sure nothing raises on a real draw
    assert plots.png_bytes(fig)[:4] == b"\x89PNG"
