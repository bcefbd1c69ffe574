"""Does a stand-in compute a model's function? Outputs and input gradients, up to rounding.

:func:`~robustfair.models.attack_view` checks each faster view it builds against the model on a
few rows before using it, and falls back to a simpler view when this says no.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# allowed output difference, relative to (1 + the largest reference output): folding and
# another memory layout only reorder float operations
_TOLERANCE = 1e-4
# allowed input-gradient difference, relative to the reference's norm. Looser than for outputs:
# float32 input gradients of a deep net are ill-conditioned (PreAct ResNet-18: the model's own
# gradients differ by 0.4% between a contiguous and a channels_last input), while a view that
# is wrong, not just rounded differently, is off by O(1)
_GRAD_TOLERANCE = 5e-2


def short_error(exc: BaseException) -> str:
    """The exception's type and first line, at most 160 characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 160 else text[:157] + "..."


def outputs_and_grad(fn: Callable[[torch.Tensor], Any], rows: torch.Tensor
                     ) -> tuple[Any, torch.Tensor | None]:
    """``fn``'s output on a copy of ``rows`` and the input gradient of a fixed projection."""
    x = rows.clone()
    if not x.is_floating_point():
        with torch.no_grad():
            return fn(x), None
    x.requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return out, None
        # fixed weights from a private generator: the global random state is left alone
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        grad, = torch.autograd.grad((out * weights.to(out)).sum(), x, allow_unused=True)
    return out.detach(), grad


def _mismatch(got: torch.Tensor, want: torch.Tensor, what: str) -> str | None:
    """How ``got`` differs from ``want`` beyond rounding (``None``: it does not)."""
    if got.shape != want.shape:
        return f"{what} shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    finite = torch.isfinite(want)
    if not torch.equal(finite, torch.isfinite(got)):
        return f"{what} not finite where the model's are"
    if not finite.any():
        return None
    got, want = got[finite].double(), want[finite].double()
    if what == "outputs":
        diff = (got - want).abs().max().item()
        tol = _TOLERANCE * (1.0 + want.abs().max().item())
    else:
        diff = (got - want).norm().item()
        tol = _GRAD_TOLERANCE * want.norm().item()
    return None if diff <= tol else f"{what} differ by {diff:.3g} (allowed {tol:.3g})"


def why_not_same(view: Callable[[torch.Tensor], Any], rows: torch.Tensor,
                 reference: tuple[Any, torch.Tensor | None]) -> str | None:
    """Why ``view`` cannot stand in for the model whose ``outputs_and_grad(model, rows)`` is
    ``reference`` (``None``: it can)."""
    try:
        out, grad = outputs_and_grad(view, rows)
    except Exception as exc:  # noqa: BLE001  (any failure just means: use a simpler view)
        return short_error(exc)
    want_out, want_grad = reference
    if not isinstance(out, torch.Tensor):
        return "the output is not a tensor"
    mismatch = _mismatch(out, want_out, "outputs")
    if mismatch is None and want_grad is not None:
        if grad is None:
            return "no input gradient"
        mismatch = _mismatch(grad, want_grad, "input gradients")
    return mismatch
