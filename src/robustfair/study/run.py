"""One run of a study, start to finish: train (resuming), audit, commit.

This is the unit every executor runs, in-process, in a worker process or as a Ray task. It
needs nothing but the study directory, the run's key and config, so it can run anywhere
that sees the directory.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .._device import torch_threads
from .store import StudyStore

__all__ = ["evaluation_indices", "execute_run", "execute_run_safely"]


def evaluation_indices(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """``n`` test points, spread evenly over the classes, in a fixed random order.

    The points are a seeded permutation taken round-robin over the classes (the first of each
    class, then the second of each ...), so a small ``n`` still has every class about equally;
    ``n=None`` (or more than there are) keeps every point. Sorted, for a stable order.

    >>> y = torch.tensor([0, 0, 0, 0, 1, 1])
    >>> torch.bincount(y[evaluation_indices(y, 4, seed=0)]).tolist()
    [2, 2]
    """
    total = len(labels)
    if n is None or n >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=gen)
    y = labels[order].long()
    rank = torch.empty(total, dtype=torch.long)
    for c in torch.unique(y):  # rank of each point within its class, in permuted order
        where = (y == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    # a stable sort by rank: round-robin over classes, random within each round
    picked = order[torch.sort(rank, stable=True).indices[:n]]
    return torch.sort(picked).values


def execute_run(root: str | Path, key: str, config: dict, *, device: str | None = None,
                data_dir: str | None = None, runtime: dict | None = None,
                threads: int | None = None, logger: str | None = None) -> dict[str, Any]:
    """Train (or resume) and audit one run; write ``report.json`` then the ``done`` marker.

    ``runtime``: TrainConfig runtime settings (amp, compile ...); ``threads``: torch's CPU
    thread count for this run (the same count gives the same numbers, whatever the executor);
    ``logger``: an experiment tracker (``"tensorboard"``, ``"mlflow[:URI]"``, see
    :mod:`robustfair.training.loggers`) for the run's training, one tracked run per grid point,
    tagged with its axes (MLflow: in the experiment named after the study, with the audit's
    ``report.json`` and its card, ``card.html`` and ``card.png``, as artifacts).
    Returns a summary (key, seconds, overall clean and robust accuracy). A finished run is
    skipped; one that another process is running is waited for (then found done).
    """
    store = StudyStore(root)
    if store.is_done(key):
        return {"key": key, "skipped": True}
    with torch_threads(threads):
        return _execute(store, key, config, device=device, data_dir=data_dir, runtime=runtime,
                        logger=logger)


def execute_run_safely(root: str | Path, key: str, config: dict, **options: Any) -> dict[str, Any]:
    """:func:`execute_run`, but a failure is recorded in ``error.txt`` and returned as
    ``{"key", "error"}`` instead of raised (one failed run does not stop a study)."""
    try:
        return execute_run(root, key, config, **options)
    except Exception as exc:  # noqa: BLE001 - any failure of one run is that run's result
        from ..errors import RobustfairError

        message = str(exc) if isinstance(exc, RobustfairError) else (
            f"{type(exc).__name__}: {exc}")
        detail = message if isinstance(exc, RobustfairError) else traceback.format_exc()
        try:
            StudyStore(root).write_error(key, detail)
        except OSError:
            pass
        return {"key": key, "error": " ".join(message.split())}


def _tracker(store: StudyStore, key: str, logger: str):
    """The run's experiment tracker, named and tagged from the study's index."""
    from ..training.loggers import build_logger

    index = store.read_index()
    entry = next((r for r in index.get("runs", []) if r.get("key") == key), {})
    tags = {**{str(k): v for k, v in (entry.get("axes") or {}).items()},
            "study": index.get("name"), "study_run": key}
    return build_logger(logger, run_name=entry.get("label") or key, tags=tags,
                        experiment=str(index.get("name") or "robustfair"))


def _execute(store: StudyStore, key: str, config: dict, *, device, data_dir, runtime,
             logger=None) -> dict:
    from ..attacks import build_attack
    from ..auditing import audit
    from ..data import load_dataset
    from ..training import TrainConfig, train

    t0 = time.perf_counter()
    with store.lock(key):
        if store.is_done(key):  # finished by another process while we waited
            return {"key": key, "skipped": True}
        store.write_config(key, config)
        cfg = TrainConfig.from_dict(config["train"], device=device, data_dir=data_dir,
                                    **(runtime or {}))
        tracker = _tracker(store, key, logger) if logger else None
        model = train(cfg, store.train_dir(key), resume=True, progress=False,
                      callbacks=[tracker] if tracker else ()).model

        ev = config["evaluation"]
        ds = load_dataset(cfg.dataset, data_dir=data_dir, **cfg.dataset_options)
        idx = evaluation_indices(ds.test.y, ev["n"], ev["seed"])
        attacks = {a["column"]: build_attack(a["attack"], **a["settings"]) for a in ev["attacks"]}
        report = audit(model, ds.test.x[idx], ds.test.y[idx], attacks=attacks,
                       classes=ds.classes, batch_size=ev["batch_size"], seed=ev["seed"],
                       progress=False)
        report.to_json(store.report_path(key))
        if hasattr(tracker, "log_file"):  # an MLflow run: the audit and its card beside the curves
            tracker.log_file(store.report_path(key))
            from ..card import build_card

            card = build_card(report, store.run_dir(key) / "card", title=f"Robustness card: {key}")
            for path in (card.html, card.png):
                tracker.log_file(path)
        overall = report.overall
        summary = {
            "key": key,
            "seconds": round(time.perf_counter() - t0, 2),
            "device": str(next(iter(model.parameters())).device),
            "clean_acc": float(overall["clean_acc"]),
            "robust_acc": float(overall["robust_acc"]),
        }
        store.mark_done(key, summary)
    return summary
