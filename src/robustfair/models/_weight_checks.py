"""What a weights file's tensors must be before they go into a model.

``load_state_dict`` copies with a cast: int32, bool or complex weights would become floats and
the audit would run on a different network than the file holds, without a word. A sparse or a
meta tensor (no values) has no place in a state dict either. Each is one line naming the key.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError


def _holds_without_loss(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether every value of ``source`` is a value of ``target`` (float16 -> float32: yes;
    float64 -> float32, int32 -> float32, bool -> float, complex -> float: no)."""
    if source == target:
        return True
    if target.is_floating_point:
        return source.is_floating_point and torch.promote_types(source, target) == target
    if target.is_complex or target == torch.bool:
        return False
    # integer buffers (BatchNorm's num_batches_tracked): any integer that promotes to it
    return (not source.is_floating_point and not source.is_complex and source != torch.bool
            and torch.promote_types(source, target) == target)


def check_loaded_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                         path: str | Path) -> None:
    """Refuse sparse and meta tensors and dtypes the model's tensor cannot hold exactly.

    >>> check_loaded_tensors({"w": torch.ones(2, dtype=torch.int32)}, {"w": torch.ones(2)}, "f.pt")
    Traceback (most recent call last):
    ...
    robustfair.errors.ModelError: f.pt: w is torch.int32 but the model's w is torch.float32; casting would change the network (save the weights in their own dtype)
    """
    for key, value in state.items():
        if value.layout != torch.strided:
            raise ModelError(f"{path}: {key} is a {str(value.layout).replace('torch.', '')} "
                             f"tensor; a state dict holds dense tensors")
        if value.is_meta:
            raise ModelError(f"{path}: {key} is a meta tensor (a shape without values); the file "
                             f"holds no weights for it")
        target = expected.get(key)
        if target is not None and not _holds_without_loss(value.dtype, target.dtype):
            raise ModelError(f"{path}: {key} is {value.dtype} but the model's {key} is "
                             f"{target.dtype}; casting would change the network (save the "
                             f"weights in their own dtype)")


def meta_tensor(model: nn.Module) -> str | None:
    """The name of a parameter or buffer of ``model`` on the meta device, or None."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            return name
    return None


def refuse_meta(model: nn.Module) -> None:
    """A model with a tensor on the meta device cannot run: one line naming the tensor."""
    empty = meta_tensor(model)
    if empty is not None:
        raise ModelError(f"the model's {empty} is on the meta device (it has no values): build "
                         f"the model on the CPU, or give --weights to fill every tensor")
