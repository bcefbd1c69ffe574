"""A synthetic Gaussian mixture whose per-class spread sets each class's difficulty.

Each class has a random mean image (pixels uniform in [0.25, 0.75], so moderate noise is rarely
clipped); a sample is ``mean + spread[class] * noise``, clipped to [0, 1] and quantised to uint8.
With a list of spreads some classes are tight (easy) and some diffuse (hard): a controlled
ground truth for class-wise robustness gaps. Deterministic given ``seed``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .._checks import positive_int
from ..errors import DataError
from ._base import Dataset, Split, register_dataset


def _spreads(spread: float | Sequence[float], num_classes: int) -> torch.Tensor:
    values = [spread] * num_classes if isinstance(spread, (int, float)) else list(spread)
    if len(values) != num_classes:
        raise DataError(
            f"gaussian: spread must be one number or one per class ({num_classes}), "
            f"got {len(values)} values"
        )
    try:
        out = torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError):
        raise DataError(f"gaussian: spread values must be numbers, got {values!r}") from None
    if not torch.isfinite(out).all() or (out < 0).any():
        raise DataError(f"gaussian: spread values must be finite and >= 0, got {values!r}")
    return out


@register_dataset("gaussian")
def load_gaussian(
    data_dir: Path | None = None,
    download: bool = False,
    *,
    num_classes: int = 10,
    n_train_per_class: int = 200,
    n_test_per_class: int = 100,
    image_size: int = 8,
    channels: int = 1,
    spread: float | Sequence[float] = 0.2,
    seed: int = 0,
) -> Dataset:
    """Build the mixture (``data_dir`` and ``download`` are unused).

    >>> ds = load_gaussian(num_classes=3, n_train_per_class=4, n_test_per_class=2)
    >>> tuple(ds.train.x.shape), ds.test.y.tolist()
    ((12, 1, 8, 8), [0, 0, 1, 1, 2, 2])
    """
    k = positive_int(num_classes, "gaussian: num_classes", DataError)
    for name, value in (("n_train_per_class", n_train_per_class),
                        ("n_test_per_class", n_test_per_class),
                        ("image_size", image_size), ("channels", channels)):
        positive_int(value, f"gaussian: {name}", DataError)
    sigma = _spreads(spread, k)
    gen = torch.Generator().manual_seed(int(seed))
    shape = (channels, image_size, image_size)
    means = 0.25 + 0.5 * torch.rand((k, *shape), generator=gen, dtype=torch.float64)

    def sample(n_per_class: int) -> Split:
        y = torch.arange(k).repeat_interleave(n_per_class)
        noise = torch.randn((len(y), *shape), generator=gen, dtype=torch.float64)
        x = means[y] + sigma[y].view(-1, 1, 1, 1) * noise
        return Split((x.clamp(0, 1) * 255).round().to(torch.uint8), y)

    train = sample(n_train_per_class)  # drawn in a fixed order: train first, then test
    test = sample(n_test_per_class)
    info = {"spread": sigma.tolist(), "seed": int(seed)}
    return Dataset("gaussian", train, test, [str(i) for i in range(k)], info)
