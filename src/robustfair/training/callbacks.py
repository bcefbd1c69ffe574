"""The callback protocol: what the training loop tells code outside it, and when.

A :class:`Callback` watches (or adjusts) a run from outside the loop. ``train(config, out,
callbacks=[...])`` takes any number; every method does nothing unless overridden, and the loop
calls them in this order for a run of epochs ``start..E``:

1. ``on_run_start(RunStart)``: once, after the run folder is opened and before the first epoch
   of this call (``start_epoch`` > 1 when an interrupted run resumes; ``history`` then holds the
   committed epochs' rows);
2. per epoch: ``on_epoch_start(epoch)``, ``on_step_end(StepEnd)`` after every optimiser step,
   ``on_epoch_end(EpochEnd)`` with the epoch's row and its class rows (the class-wise epoch
   log, the rows ``epochs.csv`` gets), then ``on_checkpoint(Checkpoint)`` once the epoch's files
   are committed (an epoch that a callback stopped is logged but never committed);
3. ``on_run_end(TrainResult)``: once, after ``model.safetensors`` and ``summary.json`` are written.

A run that was already complete calls none of them. ``on_epoch_end`` may return a reason to
stop; the callbacks after the one that stops are not called for that epoch, so a stopped epoch
is logged but never kept and no mitigation adapts to it. Callbacks run in every process of a
distributed run (``RunStart.is_main`` says which one writes). The user's callbacks come after
the progress bar and before the loop's own (EMA, the fgsm_rs guard, the mitigations), so they
see every epoch that is logged.

The loop's own callbacks: :class:`ProgressBar` (a tqdm bar per epoch), :class:`EMAUpdate` (the
moving average of the weights), :class:`CollapseGuard` (fgsm_rs's catastrophic-overfitting
stop) and :class:`MitigationHooks` (the mitigations' ``after_step`` and ``end_epoch``).
Experiment trackers built on this protocol: :mod:`robustfair.training.loggers`.

>>> class Curves(Callback):
...     def __init__(self):
...         self.robust = {}
...     def on_epoch_end(self, end):
...         self.robust[end.epoch] = end.row["robust_acc"]
>>> Curves().on_epoch_end(EpochEnd(1, {"robust_acc": 0.5}, None, [], [])) is None
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._progress import Progress, on_terminal
from .config import TrainConfig
from .ema import EMA
from .mitigations import EpochStats, MitigationStack

if TYPE_CHECKING:
    from .trainer import TrainResult


@dataclass
class RunStart:
    """A run about to train: where, what, and from which epoch."""

    out_dir: Path              # the run folder
    config: TrainConfig
    classes: list[str]
    start_epoch: int           # the first epoch this call trains (> 1 on resume)
    history: list[dict]        # the committed epochs' rows (empty on a fresh run)
    is_main: bool = True       # the process that writes (always True without torchrun)


@dataclass
class StepEnd:
    """The state after one optimiser step."""

    model: nn.Module           # the trained weights, just updated
    step: int                  # the step's index within the epoch
    loss_sum: torch.Tensor     # the epoch's running sums so far (on the device: reading one
    correct: torch.Tensor      # as a number waits for the device, so do it sparingly)
    seen: int


@dataclass
class EpochEnd:
    """An epoch's validation results, before they are logged."""

    epoch: int
    row: dict                  # the epoch's row of epochs.csv (see epoch_log.EpochLog)
    stats: EpochStats          # its per-class validation statistics
    history: list[dict]        # the rows of the epochs before it
    class_rows: list[dict] = field(default_factory=list)  # its rows of epochs.csv, one a class


@dataclass
class Checkpoint:
    """An epoch whose weights, states and log are committed to the run folder."""

    epoch: int
    out_dir: Path
    row: dict                  # the epoch's row (its ``note`` says "best (...)" for a new best)


class Callback:
    """A hook into the training loop; every method does nothing unless overridden."""

    def on_run_start(self, start: RunStart) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step_end(self, step: StepEnd) -> None:
        pass

    def on_epoch_end(self, end: EpochEnd) -> str | None:
        """A reason to stop training after this epoch, or None to go on."""
        return None

    def on_checkpoint(self, saved: Checkpoint) -> None:
        pass

    def on_run_end(self, result: "TrainResult") -> None:
        pass


def epoch_end(callbacks: list[Callback], end: EpochEnd) -> str | None:
    """Call ``on_epoch_end`` in order until one of them gives a reason to stop; return it."""
    for callback in callbacks:
        reason = callback.on_epoch_end(end)
        if reason is not None:
            return reason
    return None


class ProgressBar(Callback):
    """On a terminal, one tqdm bar per epoch: loss and training accuracy so far, the last
    validation results. Elsewhere (a log file), one line per finished epoch with the same
    numbers and the time left (:class:`robustfair._progress.Progress`)."""

    def __init__(self, epochs: int, steps_per_epoch: int, last_row: dict | None) -> None:
        self.epochs, self.steps, self.last_row = epochs, steps_per_epoch, last_row
        self.bar = None
        self.lines = None
        if not on_terminal():  # counted from the epoch this process starts at (a resume)
            done = int(last_row["epoch"]) if last_row is not None and "epoch" in last_row else 0
            self.lines = Progress(epochs, "train", unit="epoch", done=done)

    def on_epoch_start(self, epoch: int) -> None:
        if self.lines is not None:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch}/{self.epochs}", leave=True,
                        dynamic_ncols=True)

    def on_step_end(self, step: StepEnd) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if step.step % 10 == 0 or step.step == self.steps - 1:
            seen = max(1, step.seen)
            shown = {"loss": f"{float(step.loss_sum) / seen:.3f}",
                     "train_acc": f"{float(step.correct) / seen:.1%}"}
            if self.last_row is not None:
                shown.update(_validation(self.last_row))
            self.bar.set_postfix(shown, refresh=False)

    def on_epoch_end(self, end: EpochEnd) -> None:
        shown = {"loss": f"{end.row['loss']:.3f}", **_validation(end.row)}
        if self.lines is not None:
            self.lines.done(f"epoch {end.epoch}/{self.epochs}", units=1,
                            detail=": " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        else:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.close()
        self.last_row = end.row


def _validation(row: dict) -> dict[str, str]:
    return {"val_clean": f"{row['clean_acc']:.1%}", "val_robust": f"{row['robust_acc']:.1%}",
            "worst": f"{row['worst_class']} {row['worst_class_robust_acc']:.0%}"}


class EMAUpdate(Callback):
    """The EMA of the weights takes every optimiser step."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema

    def on_step_end(self, step: StepEnd) -> None:
        self.ema.update(step.model)


class CollapseGuard(Callback):
    """fgsm_rs's catastrophic-overfitting guard (Wong et al. 2020 stop early on it).

    Stops when the validation PGD accuracy falls by more than ``co_drop`` from one epoch to the
    next, or to at most ``co_floor`` from above twice that; the run keeps the epoch before.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.drop, self.floor = cfg.co_drop, cfg.co_floor

    def on_epoch_end(self, end: EpochEnd) -> str | None:
        if not end.history:
            return None
        prev, cur = end.history[-1]["robust_acc"], end.row["robust_acc"]
        if prev - cur > self.drop or (cur <= self.floor and prev > 2 * self.floor):
            return (f"catastrophic overfitting at epoch {end.epoch}: validation PGD accuracy "
                    f"fell from {prev:.1%} to {cur:.1%} (guard: a drop > {self.drop:.0%} or to "
                    f"<= {self.floor:.0%}); stopped and kept epoch {end.epoch - 1}")
        return None


class MitigationHooks(Callback):
    """The mitigations' hooks that follow the loop (the others shape each batch, see trainer)."""

    def __init__(self, mitigations: MitigationStack) -> None:
        self.mitigations = mitigations

    def on_step_end(self, step: StepEnd) -> None:
        self.mitigations.after_step(step.model)

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.mitigations.end_epoch(end.stats)
