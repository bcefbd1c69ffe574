"""``batch_size="auto"``: the largest attack batch that fits in the accelerator's memory.

An attack pass holds the activations of a forward and a backward pass w.r.t. the input, so
its memory grows with the batch. On CUDA the audit probes: it tries one such pass at a
candidate size (doubling from ``AUTO_START`` up to ``AUTO_LIMIT`` or the number of points)
and keeps the largest size that ran, halving on an out-of-memory error; a margin
(``AUTO_HEADROOM``) leaves room for the rest of the audit. Elsewhere it is ``CPU_BATCH``: a
CPU gains nothing from larger batches and has the memory for this one.

>>> fit_batch_size(lambda b: None, n=100, device=torch.device("cpu"))
100
>>> fit_batch_size(lambda b: None, n=10_000, device=torch.device("cpu")) == CPU_BATCH
True
"""
from __future__ import annotations

from typing import Callable

import torch

from .errors import RobustfairError

AUTO_START = 32
AUTO_LIMIT = 4096
AUTO_HEADROOM = 0.75  # use 3/4 of the largest size that ran
CPU_BATCH = 256


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator running out of memory."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def fit_batch_size(try_pass: Callable[[int], None], *, n: int, device: torch.device) -> int:
    """The batch size to use for ``n`` points: see the module docstring.

    ``try_pass(b)`` runs one attack pass on ``b`` points and raises an out-of-memory error if
    they do not fit; it is only called on CUDA.
    """
    if device.type != "cuda":
        return max(1, min(n, CPU_BATCH))
    limit = max(1, min(n, AUTO_LIMIT))
    size, largest, too_big = min(AUTO_START, limit), 0, limit + 1
    while True:
        try:
            try_pass(size)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are expected here
            if not is_out_of_memory(exc):
                raise
            torch.cuda.empty_cache()
            too_big = size
            if largest:
                break
            if size == 1:
                raise RobustfairError("not even one point fits in the device's memory for an "
                                      "attack pass; use a smaller model or another device") from None
            size = max(1, size // 2)
            continue
        largest = size
        if size >= limit or min(limit, size * 2) >= too_big:
            break
        size = min(limit, size * 2)
    torch.cuda.empty_cache()
    return largest if largest >= limit else max(1, int(largest * AUTO_HEADROOM))


def attack_pass(model: torch.nn.Module, example: torch.Tensor) -> Callable[[int], None]:
    """``try_pass`` for :func:`fit_batch_size`: forward and input-gradient on ``b`` copies of a point."""
    def run(b: int) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            x = example[:1].expand(b, *example.shape[1:]).clone().requires_grad_(True)
            logits = model(x)
            (grad,) = torch.autograd.grad(logits.float().logsumexp(1).sum(), x)
        del logits, grad, x
    return run
