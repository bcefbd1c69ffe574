"""Small helpers shared by the explain measures: batches, input checks, class names, JSON values."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._checks import positive_int
from .._device import model_device
from .._tensor_checks import as_float_images, check_labels
from ..attacks import eval_mode
from ..errors import RobustfairError


def float_batches(x: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, batch)`` pairs: each batch moved to ``device`` and made float in [0, 1] there."""
    check_batch_size(batch_size)
    for start in range(0, len(x), batch_size):
        yield start, as_float_images(x[start:start + batch_size].to(device, non_blocking=True))


def check_batch_size(batch_size: int) -> int:
    return positive_int(batch_size, "batch_size", RobustfairError)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes of ``model`` on images ``x`` (uint8 or float), on the model's device."""
    device = model_device(model)
    preds = []
    with eval_mode(model):
        for _, xb in float_batches(x, batch_size, device):
            preds.append(model(xb).argmax(dim=1))
    if not preds:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(preds)


def check_inputs(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Check images and labels (without touching all the pixels); return the labels as int64."""
    as_float_images(x[:0])
    if len(x) == 0:
        raise RobustfairError("no images given")
    return check_labels(y, num_classes, len(x))


def resolve_classes(model: nn.Module, classes: Sequence[str] | None, x: torch.Tensor | None = None) -> list[str]:
    """Class names: given, else the model's saved metadata or build config, else ``"0".."K-1"``
    with ``K`` the width of the model's output on the first image of ``x``."""
    if classes is not None:
        names = [str(c) for c in classes]
    else:
        meta = getattr(model, "robustfair_metadata", None) or {}
        config = getattr(model, "robustfair_config", None) or {}
        if meta.get("classes"):
            names = [str(c) for c in meta["classes"]]
        elif config.get("num_classes"):
            names = [str(i) for i in range(int(config["num_classes"]))]
        elif x is not None and len(x):
            names = [str(i) for i in range(output_width(model, x))]
        else:
            raise RobustfairError("cannot tell the classes: pass classes=[...]")
    if len(names) < 2 or len(set(names)) != len(names):
        raise RobustfairError("classes must be at least two distinct names")
    return names


@torch.no_grad()
def output_width(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits the model gives for one image of ``x``."""
    with eval_mode(model):
        logits = model(next(float_batches(x[:1], 1, model_device(model)))[1])
    if logits.dim() != 2:
        raise RobustfairError(f"model output must be N×classes, got shape {tuple(logits.shape)}")
    return int(logits.shape[1])


def safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` with NaN where ``b`` is 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


def finite_or_none(v: float | None) -> float | None:
    """A float for JSON: ``None`` for NaN or infinity (JSON has neither)."""
    return float(v) if v is not None and np.isfinite(v) else None


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-able dicts (the index under its name, else ``class``; NaN as null)."""
    out = []
    for name, row in frame.iterrows():
        rec = {frame.index.name or "class": str(name)}
        for col, v in row.items():
            if isinstance(v, (float, np.floating)):
                rec[str(col)] = finite_or_none(float(v))
            elif isinstance(v, np.integer):
                rec[str(col)] = int(v)
            elif isinstance(v, np.bool_):
                rec[str(col)] = bool(v)
            else:
                rec[str(col)] = v
        out.append(rec)
    return out
