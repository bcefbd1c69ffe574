"""Checks on every call of a user's model during an audit, not only the first.

A model can pass the one forward check before an audit and still misbehave inside it: change
its input in place (``x.mul_``, ``x.clamp_``: the audit's images, or autograd's leaf), return
outputs with no gradient (detached, one-hot), integer or complex "logits", fewer rows than it
was given, or raise only on the larger batches the attacks run. :class:`CheckedModel` wraps the
model the audit runs and turns each into one :class:`~robustfair.errors.ModelError` line naming
the problem and the batch (an attack adds its name, see :meth:`Attack.perturb`); a model that
changes its input is worked around (it gets a copy of every batch) and the report says so.

>>> import torch
>>> from torch import nn
>>> class Doubles(nn.Module):
...     def forward(self, x):
...         return x.mul_(2).flatten(1)
>>> net, flags = checked_model(Doubles(), torch.rand(2, 1, 2, 2))
>>> x = torch.ones(2, 1, 2, 2)
>>> _ = net(x); float(x.max()), [f["code"] for f in flags]
(1.0, ['input_changed'])
"""
from __future__ import annotations

import torch
from torch import nn

from ._batch_size import is_out_of_memory
from ._tensor_checks import check_logits
from .errors import ModelError
from .sanity import Flag

INPUT_CHANGED = Flag(
    "input_changed",
    "the model changes its input in place (e.g. x.mul_ or x.clamp_ in forward); the audit gives "
    "it a copy of every batch, so its images stay as they were",
)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class CheckedModel(nn.Module):
    """``model`` with its output checked on every call (and its input copied if it writes
    to it)."""

    def __init__(self, model: nn.Module, copy_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.copy_input = copy_input
        # what robustfair reads off a model (the channels it was built for, its metadata)
        for name in ("robustfair_config", "robustfair_metadata"):
            value = getattr(model, name, None)
            if value is not None:
                setattr(self, name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = len(x)
        try:
            out = self.model(x.clone() if self.copy_input else x)
        except ModelError:
            raise
        except Exception as exc:  # the user's model can raise anything: one line, with the batch
            if is_out_of_memory(exc):  # the batch-size search halves on it; the CLI says it
                raise
            raise ModelError(f"the model failed on a batch of {rows} images "
                             f"({'x'.join(map(str, x.shape[1:]))}): {_one_line(exc)}") from None
        return check_output(out, x, rows)


def check_output(out: object, x: torch.Tensor, rows: int) -> torch.Tensor:
    """One batch's output: a tensor of floating-point scores, one row per image, with a
    gradient to ``x`` when one is being taken."""
    if not isinstance(out, torch.Tensor):
        check_logits(out)  # its message names the fix (SelectOutput, --output-index)
    if not out.is_floating_point():
        raise ModelError(f"the model returns {out.dtype} outputs on a batch of {rows} images; "
                         f"class scores must be floating-point logits (attacks follow their "
                         f"gradient)")
    if out.dim() < 1 or out.shape[0] != rows:
        got = out.shape[0] if out.dim() else "no"
        raise ModelError(f"the model returned {got} rows for a batch of {rows} images: it must "
                         f"give one row of class scores per image")
    if torch.is_grad_enabled() and x.requires_grad and not out.requires_grad:
        raise ModelError(f"the model's output has no gradient with respect to its input (on a "
                         f"batch of {rows} images): it is detached (torch.no_grad, .detach(), "
                         f"numpy) or one-hot; gradient attacks cannot run on it (a black-box "
                         f"attack can: --attack square)")
    return out


def changes_input(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether ``model`` writes into its input (tried once on a copy of ``example``)."""
    probe = example.clone()
    try:
        with torch.inference_mode():
            model(probe)
    except Exception:  # noqa: BLE001 - the audit's own checks report a failing model
        return False
    return not torch.equal(probe, example)


def checked_model(model: nn.Module, example: torch.Tensor) -> tuple[CheckedModel, list[dict]]:
    """The model as the audit runs it (checked; given copies if it changes its input), and
    the flags that say what was worked around."""
    copy = changes_input(model, example)
    return CheckedModel(model, copy_input=copy), [INPUT_CHANGED.to_dict()] if copy else []
