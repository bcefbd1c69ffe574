"""The per-epoch evaluation and its log: the rows of ``epochs.csv`` and the ``keep`` rule.

After every epoch the evaluated weights are attacked with PGD-``eval_steps`` on the validation
split; :class:`EpochLog` turns the per-class counts into one row per class and one for the
epoch (pooled counts, the worst class), keeps the rows (``frame``, written as ``epochs.csv``)
and the epoch rows (``history``, stored in the manifest), and tracks the best epoch under the
config's ``keep`` rule.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from . import distributed as ddp
from .config import TrainConfig
from .evaluate import evaluate_classwise
from .mitigations import EpochStats
from .parts import TrainData

CSV_COLUMNS = ["epoch", "scope", "class", "n", "clean_acc", "robust_acc", "natural_error",
               "boundary_error", "loss", "train_acc", "lr", "time_s", "worst_class",
               "worst_class_robust_acc", "note"]

KEEP_TEXT = {
    "last": "the last epoch's weights",
    "best_avg": "the epoch with the best validation robust accuracy (earliest on ties)",
    "best_avg_worst": "the epoch with the best validation robust accuracy + worst-class robust "
                      "accuracy (earliest on ties)",
}


class EpochLog:
    """The validation results of a run so far (restored from the run folder on resume)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, info: ddp.DistInfo,
                 memory_format: torch.memory_format, *, history: list[dict] | None = None,
                 frame: pd.DataFrame | None = None, best: dict | None = None) -> None:
        self.cfg, self.data, self.info, self.memory_format = cfg, data, info, memory_format
        self.history: list[dict] = list(history or [])  # one row per epoch
        self.frame = frame if frame is not None else pd.DataFrame(columns=CSV_COLUMNS)
        self.best = best  # {"epoch", "score"} under the keep rule; None for keep=last

    def evaluate(self, net: nn.Module, epoch: int, *, loss: float, train_acc: float,
                 lr: float, started: float) -> tuple[dict, list[dict], EpochStats]:
        """Attack ``net`` on the validation split: ``(epoch row, class rows, stats)``.

        ``loss``, ``train_acc`` and ``lr`` are the epoch's training figures; ``started`` its
        start (``time.perf_counter()``), for the time it took with this evaluation.
        """
        cfg, data = self.cfg, self.data
        ddp.broadcast_buffers(net, self.info)
        counts = evaluate_classwise(
            net, data.val_x, data.val_y, num_classes=data.num_classes, eps=cfg.eps,
            norm=cfg.norm, steps=cfg.eval_steps, alpha=cfg.eval_alpha(),
            batch_size=cfg.eval_batch_size, seed=cfg.val_seed, rank=self.info.rank,
            world_size=self.info.world_size, memory_format=self.memory_format)
        stats = counts.stats(epoch)
        n, clean, robust = int(counts.n.sum()), int(counts.clean.sum()), int(counts.robust.sum())
        worst = int(torch.argmin(stats.robust_acc))  # first of the tied worst classes
        row = {"epoch": epoch, "scope": "epoch", "class": "", "n": n,
               "clean_acc": clean / max(1, n), "robust_acc": robust / max(1, n),
               "natural_error": 1 - clean / max(1, n), "boundary_error": (clean - robust) / max(1, n),
               "loss": loss, "train_acc": train_acc, "lr": lr,
               "time_s": round(time.perf_counter() - started, 3),
               "worst_class": data.classes[worst],
               "worst_class_robust_acc": float(stats.robust_acc[worst]), "note": ""}
        class_rows = [{"epoch": epoch, "scope": "class", "class": data.classes[c],
                       "n": int(stats.counts[c]), "clean_acc": float(stats.clean_acc[c]),
                       "robust_acc": float(stats.robust_acc[c]),
                       "natural_error": float(stats.natural_error[c]),
                       "boundary_error": float(stats.boundary_error[c])}
                      for c in range(data.num_classes)]
        return row, class_rows, stats

    def update_best(self, row: dict) -> bool:
        """Whether ``row``'s epoch is the new best under the keep rule (the first one wins ties)."""
        if self.cfg.keep == "last":
            return False
        score = row["robust_acc"]
        if self.cfg.keep == "best_avg_worst":
            score += row["worst_class_robust_acc"]
        if self.best is None or score > self.best["score"]:
            self.best = {"epoch": row["epoch"], "score": score}
            return True
        return False

    def append(self, row: dict, class_rows: list[dict]) -> None:
        self.history.append(row)
        new = pd.DataFrame(class_rows + [row], columns=CSV_COLUMNS)
        self.frame = new if self.frame.empty else pd.concat([self.frame, new], ignore_index=True)

    def completed(self) -> list[dict]:
        """The epoch rows whose weights were kept (not an epoch the fgsm_rs guard stopped)."""
        return [h for h in self.history if not is_stop(h)]

    def to_csv(self) -> str:
        return self.frame.to_csv(index=False)


def is_stop(row: dict) -> bool:
    """Whether an epoch row is the one the fgsm_rs guard stopped at (logged, never kept)."""
    return str(row.get("note", "")).startswith("catastrophic overfitting")


def read_log(path: Path) -> pd.DataFrame:
    """``epochs.csv`` as written by :meth:`EpochLog.to_csv` (an empty log if there is none)."""
    if not path.exists():
        return pd.DataFrame(columns=CSV_COLUMNS)
    text_columns = ("scope", "class", "worst_class", "note")
    try:  # class names stay text ("0" is not 0); only numeric columns read "" as missing
        return pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=False,
                           na_values={c: [""] for c in CSV_COLUMNS if c not in text_columns})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is corrupt ({' '.join(str(exc).split())})") from None
