"""Executors: where a study's runs execute.

``local``  in this process, one run after another; or, with ``workers=N``, N worker processes
           (one per device: CUDA devices in turn, else the CPU, whose cores they share).
``ray``    one Ray task per run, each asking for the spec's ``resources`` (num_gpus,
           num_cpus); a local Ray instance unless ``address`` names a cluster, whose nodes
           must have robustfair installed and see the study directory (a shared file system).

Every executor runs the same :func:`~robustfair.study.run.execute_run` and so writes the
same run directories; finished runs are skipped, started ones resume.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._checks import positive_int
from .._ray import check_reachable, ray_session
from ..errors import ConfigError, RobustfairError
from .grid import Run, expand
from .progress import StudyProgress
from .run import execute_run_safely
from .spec import StudySpec
from .store import StudyStore

__all__ = ["EXECUTORS", "StudyResult", "run_study"]

EXECUTORS = ("local", "ray")


@dataclass
class StudyResult:
    """What a call of :func:`run_study` did."""

    out_dir: Path
    runs: list[Run]
    already_done: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # key -> one-line error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def run_study(spec: StudySpec, out_dir: str | os.PathLike, *, executor: str = "local",
              workers: int = 1, address: str | None = None, device: str | None = None,
              data_dir: str | None = None, progress: bool = True,
              logger: str | None = None) -> StudyResult:
    """Run every unfinished run of ``spec`` into ``out_dir``; returns what happened.

    ``logger`` (``"tensorboard"`` or ``"mlflow[:URI]"``) tracks every run's training, one
    tracked run per grid point tagged with its axes (see :func:`~robustfair.study.run.execute_run`).

    A failed run is recorded (``runs/<key>/error.txt``, ``result.failed``) and the others go on.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(EXECUTORS)}")
    positive_int(workers, "workers")
    runs = expand(spec)
    if logger:  # a missing package or a bad name: one line before any run starts
        from ..training.loggers import resolved_logger

        logger = resolved_logger(logger)
    if executor == "ray" and address:
        check_reachable(address)  # before anything is written; Ray itself would retry for ages
    store = StudyStore(out_dir)
    store.prepare(spec.text, spec.name, runs, description=spec.description,
                  expected_time=spec.expected_time)
    result = StudyResult(out_dir=Path(out_dir), runs=runs)
    result.already_done = [r.key for r in runs if store.is_done(r.key)]
    todo = [r for r in runs if not store.is_done(r.key)]
    options = {"data_dir": data_dir, "runtime": dict(spec.runtime), "logger": logger}
    t0 = time.perf_counter()
    with StudyProgress(store, runs, enabled=progress and bool(todo)) as bar:
        if not todo:
            pass  # everything is done already
        elif executor == "ray":
            _run_ray(store, todo, spec, options, device, address, bar, result)
        elif workers == 1:
            _run_sequential(store, todo, spec, options, device, bar, result)
        else:
            _run_workers(store, todo, spec, options, device, workers, bar, result)
    result.seconds = time.perf_counter() - t0
    return result


def _record(outcome: dict[str, Any], bar: StudyProgress, result: StudyResult) -> None:
    key = outcome["key"]
    if "error" in outcome:
        result.failed[key] = outcome["error"]
        bar.finish(key, ok=False)
    else:
        result.completed.append(key)
        bar.finish(key)


# ------------------------------------------------------------------------------ local
def _run_sequential(store, todo, spec, options, device, bar, result) -> None:
    threads = int(spec.resources.num_cpus) if spec.resources.num_cpus_given else None
    for run in todo:
        bar.start(run.key)
        outcome = execute_run_safely(store.root, run.key, run.config, device=device,
                                     threads=threads, **options)
        _record(outcome, bar, result)


def _devices(device: str | None, workers: int) -> list[str | None]:
    """One device per worker: the one asked for, else CUDA devices in turn, else the CPU."""
    if device is not None:
        return [device] * workers
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i % n}" for i in range(workers)] if n else ["cpu"] * workers


def _worker_init(devices, threads: int | None) -> None:
    # each worker takes the next device off the queue, once, for its whole life
    global _WORKER_DEVICE, _WORKER_THREADS
    _WORKER_DEVICE = devices.get()
    _WORKER_THREADS = threads


_WORKER_DEVICE: str | None = None
_WORKER_THREADS: int | None = None


def _worker_task(root: str, key: str, config: dict, options: dict) -> dict:
    return execute_run_safely(root, key, config, device=_WORKER_DEVICE, threads=_WORKER_THREADS,
                              **options)


def _run_workers(store, todo, spec, options, device, workers, bar, result) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads start is unsafe
    devices = ctx.Queue()
    chosen = _devices(device, workers)
    for d in chosen:
        devices.put(d)
    if spec.resources.num_cpus_given:
        threads = int(spec.resources.num_cpus)
    else:  # CPU workers share the machine's cores
        threads = max(1, (os.cpu_count() or 1) // workers) if chosen[0] == "cpu" else None
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                initargs=(devices, threads)) as pool:
        futures = {}
        for run in todo:
            futures[pool.submit(_worker_task, str(store.root), run.key, run.config, options)] = run
        bar.watch([r.key for r in todo])
        for future in cf.as_completed(futures):
            run = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died takes its run with it
                outcome = {"key": run.key, "error": f"worker failed: {type(exc).__name__}: {exc}"}
            _record(outcome, bar, result)


# ------------------------------------------------------------------------------ ray
def _run_ray(store, todo, spec, options, device, address, bar, result) -> None:
    with ray_session(address) as ray:
        _submit_ray(ray, store, todo, spec, options, device, bar, result)


def _submit_ray(ray, store, todo, spec, options, device, bar, result) -> None:
    res = spec.resources
    task = ray.remote(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=0)(
        execute_run_safely)
    # the run's CPU threads: what it asked for (Ray also sets OMP_NUM_THREADS to it)
    threads = max(1, int(res.num_cpus)) if res.num_cpus >= 1 else 1
    pending = {}
    for run in todo:
        ref = task.remote(str(store.root.resolve()), run.key, run.config, device=device,
                          threads=threads, **options)
        pending[ref] = run
    bar.watch([r.key for r in todo])
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            run = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a task that died (node lost, OOM)
                outcome = {"key": run.key, "error": f"ray task failed: {' '.join(str(exc).split())[:300]}"}
            _record(outcome, bar, result)
