"""Input checks shared by attacks, the audit and training.

They raise :class:`~robustfair.errors.RobustfairError` with a one-line message, so bad input
never reaches the middle of a computation and never produces a traceback in the CLI.
"""
from __future__ import annotations

import torch

from .errors import ModelError, RobustfairError


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as float images in [0, 1], N×C×H×W (uint8 input is scaled by 1/255)."""
    if not isinstance(x, torch.Tensor):
        raise RobustfairError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise RobustfairError(
            f"images must have shape N×C×H×W (4 dimensions), got shape {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise RobustfairError(f"images must be uint8 or floating point, got {x.dtype}")
    if x.numel() and not torch.isfinite(x).all():
        raise RobustfairError("images contain NaN or infinite values")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise RobustfairError(
                f"images must lie in [0, 1] (normalisation lives in the model), got range "
                f"[{lo:.4g}, {hi:.4g}]"
            )
    return x


def check_labels(y: torch.Tensor, num_classes: int, n: int | None = None) -> torch.Tensor:
    """Return ``y`` as int64 labels after checking they index ``num_classes`` classes."""
    if not isinstance(y, torch.Tensor):
        raise RobustfairError(f"labels must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1:
        raise RobustfairError(f"labels must be 1-dimensional, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise RobustfairError(f"labels must be integers, got {y.dtype}")
    if n is not None and y.numel() != n:
        raise RobustfairError(f"got {n} images but {y.numel()} labels")
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise RobustfairError(
                f"labels must lie in 0..{num_classes - 1} (the model's {num_classes} classes), "
                f"got range {lo}..{hi}"
            )
    return y.long()


def check_logits(logits: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Check a model's output: N×K, finite, and K equal to ``num_classes`` when given."""
    if not isinstance(logits, torch.Tensor):
        raise ModelError(
            f"the model returned a {type(logits).__name__}, not a logits tensor; wrap it so that "
            f"it returns the logits: robustfair.models.SelectOutput(model, index) in Python, "
            f"--output-index N on the command line"
        )
    if logits.dim() != 2:
        raise ModelError(f"model output must be N×classes, got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ModelError(f"model output must be floating-point logits, got {logits.dtype}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ModelError(
            f"model outputs {logits.shape[1]} logits but the data has {num_classes} classes"
        )
    if not torch.isfinite(logits).all():
        raise ModelError("model produced NaN or infinite outputs")
    return logits


def check_model_input(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Check that ``x`` has the channel count ``model`` was built for (a robustfair model
    records it in ``robustfair_config``), instead of a convolution's RuntimeError mid-run.

    >>> from robustfair.models import build_model
    >>> m = build_model("mlp", num_classes=3, in_channels=1, image_size=8)
    >>> check_model_input(m, torch.zeros(2, 3, 8, 8))
    Traceback (most recent call last):
    ...
    robustfair.errors.ModelError: the model takes 1-channel images, got 3-channel ones (shape (2, 3, 8, 8))
    """
    config = getattr(model, "robustfair_config", None)
    expected = config.get("in_channels") if isinstance(config, dict) else None
    if isinstance(expected, int) and x.dim() == 4 and x.shape[1] != expected:
        raise ModelError(f"the model takes {expected}-channel images, got {x.shape[1]}-channel "
                         f"ones (shape {tuple(x.shape)})")
