"""Sharded audits: one audit cut into N shards, each shard one task, each finished shard
committed to disk at once; a rerun audits only the shards that are missing.

    report = audit_sharded(ModelSource(checkpoint="model.safetensors"), x, y,
                           attacks=[build_attack("autoattack", eps=8/255)],
                           out_dir="runs/audit/shards", shards=8, executor="ray",
                           data_shape=DataShape(10, 3, 32, 32))

* **Split**: shard ``i`` of ``N`` holds the points ``floor(i n / N) .. floor((i + 1) n / N) - 1``
  (consecutive, sizes differing by at most one).
* **Executors**: ``local`` runs the shards one after another in this process (the model is
  built once); ``ray`` sends one task per shard (``num_gpus=1`` where the cluster has GPUs,
  one CPU otherwise) to the Ray cluster at ``address``, or to a local Ray instance. A task
  gets the :class:`~robustfair.models.source.ModelSource` and rebuilds the model itself (a
  live ``nn.Module`` from a user's ``file.py:factory`` cannot be pickled by reference), and
  returns its report; the driver commits it. Workers need robustfair and the model's files,
  not the output folder.
* **The result does not depend on N**: every shard runs the pieces of
  :func:`robustfair.audit` (``prepare``, ``check_model``, ``audit_pool``, ``build_report``)
  with its points' positions in the whole test set, and every random draw of the attacks for a
  point is keyed by the seed and that position (:mod:`robustfair.attacks._random`). The model
  checks run in shard 0, on the first points of the whole set, as the unsharded audit runs
  them; :meth:`ClassReport.concat` recomputes the result checks over the union. So the merged
  report has the unsharded audit's per-point predictions, per-class table and flags.
* **The folder** (``out_dir``): ``settings.json`` (what decides the shards' results: the
  number of shards and points, the data's SHA-256, the model source, the attacks' settings,
  the seed and the audit options) and ``shard-IIII.json``, one report per finished shard,
  each written atomically. A rerun with other settings is refused in one line; batch size,
  device and executor may change between runs (they do not change a point's result). While a
  run is on, the folder is locked against a second one.
* **Failures**: a shard that raises fails the audit with one line naming the shard, its points
  and the cause; the shards finished before it (local) or beside it (Ray) stay on disk.
* **Progress**: one line per finished shard on stderr (index, points, time), with or without
  a terminal; on a terminal also a tqdm bar over the points.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ._atomic import atomic_write_text
from ._checks import is_int
from ._device import model_device, resolve_device
from ._lock import folder_lock
from .auditing import (LAYOUTS, _name_attacks, audit_points, check_arguments, check_optimize,
                       on_device, recheck_masking, timed_layout)
from .data.audit_source import points_sha256
from .errors import ConfigError, RobustfairError
from .metrics import ClassReport
from .models.source import DataShape, ModelSource
from .sanity import CHECK_POINTS, RESULT_CODES, result_flags

__all__ = ["audit_sharded", "shard_ranges", "EXECUTORS"]

EXECUTORS = ("local", "ray")
SETTINGS = "settings.json"
FORMAT = "robustfair-shards/1"
# settings.json's entry for the layout the shards' model view runs in (optimize=True): chosen
# once, by timing, and reused by every shard and rerun (not a setting a rerun must repeat)
LAYOUT = "layout"
# audit() options a sharded audit passes on; those that decide results are in settings.json
OPTIONS = ("target", "targeted_all", "independent", "amp", "sanity", "optimize", "compile")
RESULT_OPTIONS = ("target", "targeted_all", "independent", "amp", "sanity")
# the audit options' defaults, as robustfair.audit has them
DEFAULTS = {"target": None, "targeted_all": False, "independent": True, "amp": False,
            "sanity": True, "optimize": True, "compile": False}


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` point ranges of ``shards`` consecutive shards of ``n`` points.

    >>> shard_ranges(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [(i * n // shards, (i + 1) * n // shards) for i in range(shards)]


@dataclass
class ShardTask:
    """All a worker needs to audit one shard: plain data, picklable."""

    shard: int
    shards: int
    start: int
    stop: int
    x: torch.Tensor
    y: torch.Tensor
    source: ModelSource
    data_shape: DataShape
    attacks: dict
    classes: list[str] | None
    seed: int
    batch_size: int | str
    device: str | None
    options: dict = field(default_factory=dict)
    # shard 0: the first points of the whole test set, for the model checks
    check_x: torch.Tensor | None = None
    check_y: torch.Tensor | None = None


def run_shard(task: ShardTask, model: nn.Module | None = None) -> ClassReport:
    """Audit one shard with the pieces of :func:`robustfair.audit`; ``model``: one already
    built from ``task.source`` (else it is built here, on the task's device)."""
    options = {key: task.options.get(key, default) for key, default in DEFAULTS.items()}
    if model is None:
        device = resolve_device(task.device)
        model, _ = task.source.build(task.data_shape, device=device)
    dev = model_device(model) if task.device is None else resolve_device(task.device)
    pairs = check_arguments(model, task.x, attacks=task.attacks, batch_size=task.batch_size,
                            **{k: options[k] for k in ("target", "targeted_all", "amp", "optimize",
                                                       "compile")})
    check = None if task.check_x is None else (task.check_x, task.check_y)
    report = audit_points(model, task.x, task.y, pairs, index=torch.arange(task.start, task.stop),
                          device=dev, check_points=check, classes=task.classes,
                          batch_size=task.batch_size, seed=task.seed, **options)
    report.meta["shard"] = {"index": task.shard, "of": task.shards, "range": [task.start, task.stop],
                            "host": platform.node()}
    return report


def _run_shard_safely(task: ShardTask, model: nn.Module | None = None) -> dict:
    """:func:`run_shard` as a task's result: the report as a dict, or the error in one line."""
    try:
        return {"report": run_shard(task, model).to_dict()}
    except Exception as exc:  # noqa: BLE001 - the driver names the shard and the cause
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}


class ShardStore:
    """The shard folder: ``settings.json`` and one ``shard-IIII.json`` per finished shard."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:04d}.json"

    def done(self, shard: int) -> bool:
        return self.path(shard).is_file()

    def open(self, settings: dict) -> dict:
        """Write ``settings`` on first use; refuse, in one line, a folder made with others.
        Returns the folder's settings (with the shards' ``layout`` once one was chosen)."""
        path = self.root / SETTINGS
        if not path.exists():
            if any(self.root.glob("shard-*.json")):
                raise ConfigError(f"{self.root} holds shard results but no {SETTINGS}: it was not "
                                  f"made by this audit; give another folder or remove it")
            self._write_settings(settings)
            return json.loads(json.dumps(settings))
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        ours = json.loads(json.dumps(settings))  # the same JSON types as the file's
        differ = [k for k in sorted(set(ours) | set(theirs) - {LAYOUT})
                  if ours.get(k) != theirs.get(k)]
        if differ:
            detail = ", ".join(_difference(k, theirs.get(k), ours.get(k)) for k in differ)
            raise ConfigError(f"{self.root} holds shards audited with other settings ({detail}); "
                              f"give another folder, or remove it to start over")
        return theirs

    def layout(self, settings: dict, choose: Callable[[], str]) -> str:
        """The model view's layout every shard of this folder runs in: the one its first
        shards used (in ``settings``, as :meth:`open` returned them), else ``choose()``'s,
        kept in ``settings.json`` for the shards to come."""
        if settings.get(LAYOUT) not in LAYOUTS:
            settings = {**settings, LAYOUT: choose()}
            self._write_settings(settings)
        return settings[LAYOUT]

    def _write_settings(self, settings: dict) -> None:
        atomic_write_text(self.root / SETTINGS,
                          json.dumps(settings, indent=1, sort_keys=True) + "\n")

    def commit(self, shard: int, report: dict) -> None:
        atomic_write_text(self.path(shard), json.dumps(report) + "\n")

    def load(self, shard: int) -> ClassReport:
        return ClassReport.from_json(self.path(shard))


def _difference(key: str, theirs: Any, ours: Any) -> str:
    """``key: X there, Y here`` for short values, else the key alone."""
    there, here = json.dumps(theirs), json.dumps(ours)
    if len(there) + len(here) > 80:
        return key
    return f"{key}: {there} there, {here} here"


class ShardProgress:
    """One line per finished shard on stderr (always, unless ``enabled`` is False) and, on a
    terminal, a tqdm bar over the points."""

    def __init__(self, total: int, done: int, *, enabled: bool | None) -> None:
        self.lines = enabled is not False
        bar = sys.stderr.isatty() if enabled is None else enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=done, desc="audit shards", unit="img",
                        disable=not bar, leave=False, dynamic_ncols=True)

    def finished(self, task: ShardTask, seconds: float) -> None:
        self.bar.update(task.stop - task.start)
        if self.lines:
            self.bar.write(f"robustfair: shard {task.shard + 1}/{task.shards} done: points "
                           f"{task.start}-{task.stop - 1} ({task.stop - task.start}) in {seconds:.1f} s",
                           file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _check_options(n: int, shards: object, executor: object, address: object,
                   audit_options: dict) -> None:
    if not is_int(shards) or shards < 1:
        raise ConfigError(f"shards must be an integer >= 1, got {shards!r}")
    if shards > n:
        raise ConfigError(f"{shards} shards for {n} points: give at most one shard per point")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise ConfigError("an address names a Ray cluster: it goes with executor 'ray'")
    unknown = sorted(set(audit_options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown audit option(s) {', '.join(unknown)}; a sharded audit takes: "
                          f"{', '.join(OPTIONS)}")
    check_optimize(audit_options.get("optimize", True))


def audit_sharded(
    source: ModelSource,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks,
    out_dir: str | Path,
    shards: int,
    executor: str = "local",
    address: str | None = None,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int | str = 256,
    device: str | None = None,
    progress: bool | None = None,
    data_shape: DataShape,
    model: nn.Module | None = None,
    **audit_options,
) -> ClassReport:
    """Audit the model ``source`` describes on ``(x, y)`` in ``shards`` shards (see the module
    docstring); returns the merged report, equal to ``audit(model, x, y, ...)``'s.

    ``out_dir`` holds the shards (created, or resumed: finished shards are not audited again).
    ``executor``: ``local`` (this process, one shard after another) or ``ray``
    (``address``: a cluster, default a local instance). ``data_shape``: what the model is
    built for. ``model``: the model already built from ``source``, used by the local executor
    instead of building it again. ``progress``: ``None`` (a line per shard; a bar on a
    terminal), ``True`` or ``False`` (silent). ``audit_options``: ``target``,
    ``targeted_all``, ``independent``, ``amp``, ``sanity``, ``optimize``, ``compile``, as in
    :func:`robustfair.audit`; with ``optimize=True`` the model view's layout is timed once,
    here, and every shard (and rerun) of the folder runs in it (``settings.json``'s
    ``layout``), so that all shards round alike. An unsharded audit times its own: to compare
    the two to the last bit, pin the same layout in both (``optimize="channels_last"``).

    >>> import tempfile, robustfair as rf
    >>> from robustfair.models.source import DataShape, ModelSource
    >>> ds = rf.load_dataset("digits")
    >>> folder = tempfile.mkdtemp()
    >>> net = rf.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    >>> rf.save_model(net, folder + "/net.safetensors")  # doctest: +ELLIPSIS
    PosixPath(...)
    >>> report = audit_sharded(ModelSource(checkpoint=folder + "/net.safetensors"),
    ...                        ds.test.x[:30], ds.test.y[:30], attacks=[rf.build_attack("fgsm", eps=0.1)],
    ...                        out_dir=folder + "/shards", shards=3, progress=False,
    ...                        data_shape=DataShape.of(ds))
    >>> len(report.predictions), [s["range"] for s in report.meta["shards"]]
    (30, [[0, 10], [10, 20], [20, 30]])
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise RobustfairError("x and y must be torch tensors")
    n = len(x)
    _check_options(n, shards, executor, address, audit_options)
    if len(y) != n:
        raise RobustfairError(f"got {n} images but {len(y)} labels")
    named = _named_attacks(attacks)
    settings = {
        "format": FORMAT, "shards": shards, "n": n, "data_sha256": points_sha256(x, y),
        "model": source.to_dict(), "seed": seed, "classes": None if classes is None else list(classes),
        "attacks": {name: a.settings() for name, a in named.items()},
        "options": {k: audit_options[k] for k in RESULT_OPTIONS if k in audit_options},
    }
    ranges = shard_ranges(n, shards)
    first = slice(0, min(CHECK_POINTS, n))
    tasks = [ShardTask(shard=i, shards=shards, start=a, stop=b, x=x[a:b], y=y[a:b], source=source,
                       data_shape=data_shape, attacks=named, classes=None if classes is None else list(classes),
                       seed=seed, batch_size=batch_size, device=device, options=dict(audit_options),
                       check_x=x[first] if i == 0 else None, check_y=y[first] if i == 0 else None)
             for i, (a, b) in enumerate(ranges)]
    store = ShardStore(out_dir)
    with folder_lock(store.root, "a sharded audit"):
        stored = store.open(settings)
        todo = [t for t in tasks if not store.done(t.shard)]
        if todo and audit_options.get("optimize", True) is True \
                and not audit_options.get("compile", False):
            # one layout for all shards (a timed choice could differ between them, and so
            # would their float rounding): chosen here once, or the earlier shards' one
            def choose() -> str:
                built = model if model is not None else source.build(
                    data_shape, device=resolve_device(device))[0]
                dev = model_device(built) if device is None else resolve_device(device)
                return timed_layout(built, x, dev)

            layout = store.layout(stored, choose)
            for task in todo:
                task.options["optimize"] = layout
        bar = ShardProgress(n, sum(t.stop - t.start for t in tasks if store.done(t.shard)),
                            enabled=progress)
        try:
            if executor == "ray":
                failed = _run_ray(todo, store, bar, address)
            else:
                failed = _run_local(todo, store, bar, model)
        finally:
            bar.close()
        if failed:
            task, error = failed[0]
            more = f" ({len(failed) - 1} more shard(s) failed too)" if len(failed) > 1 else ""
            raise RobustfairError(f"shard {task.shard + 1}/{task.shards} (points {task.start}-"
                                  f"{task.stop - 1}) failed: {error}{more}; the finished shards are "
                                  f"kept in {store.root}")
        merged = ClassReport.concat([store.load(t.shard) for t in tasks])
    if audit_options.get("sanity", True):  # counts over the points: over the union, once
        merged.flags.extend(result_flags(merged))
    if audit_options.get("sanity", True) and any(f["code"] in RESULT_CODES for f in merged.flags):
        # the masking re-check runs once, on the whole test set, as the unsharded audit's does
        if model is None:
            model, _ = source.build(data_shape, device=resolve_device(device))
        with on_device(model, model_device(model) if device is None else resolve_device(device)):
            recheck_masking(model, x, y, merged,
                            batch_size=batch_size if isinstance(batch_size, int) else 256)
    return merged


def _named_attacks(attacks) -> dict:
    """The attacks as ``{column name: attack}``, named as :func:`robustfair.audit` names them."""
    return dict(_name_attacks(attacks))


Failed = list[tuple[ShardTask, str]]


def _finish(task: ShardTask, outcome: dict, seconds: float, store: ShardStore,
            bar: ShardProgress, failed: Failed) -> None:
    if "error" in outcome:
        failed.append((task, outcome["error"]))
        return
    store.commit(task.shard, outcome["report"])
    bar.finished(task, seconds)


def _run_local(todo: list[ShardTask], store: ShardStore, bar: ShardProgress,
               model: nn.Module | None) -> Failed:
    """One shard after another in this process; stops at the first that fails."""
    failed: Failed = []
    for task in todo:
        if model is None:  # built once, for every shard
            model, _ = task.source.build(task.data_shape, device=resolve_device(task.device))
        t0 = time.perf_counter()
        _finish(task, _run_shard_safely(task, model), time.perf_counter() - t0, store, bar, failed)
        if failed:
            break
    return failed


def _run_ray(todo: list[ShardTask], store: ShardStore, bar: ShardProgress,
             address: str | None) -> Failed:
    """One Ray task per shard; every shard runs, the finished ones are committed as they come."""
    from ._ray import ray_session

    failed: Failed = []
    if not todo:
        return failed
    with ray_session(address, num_cpus=os.cpu_count() or 1) as ray:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        remote: Callable = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(_ray_task)
        pending = {remote.remote(task): (task, time.perf_counter()) for task in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task, t0 = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task that died (node lost, OOM)
                    outcome = {"error": f"the Ray task failed: {' '.join(str(exc).split())[:300]}"}
                _finish(task, outcome, time.perf_counter() - t0, store, bar, failed)
    return failed


def _ray_task(task: ShardTask) -> dict:
    """A Ray task: rebuild the model from its source and audit the shard on one thread per
    CPU Ray gave it (its GPU where it got one)."""
    if task.device is None and not torch.cuda.is_available():
        torch.set_num_threads(1)
    return _run_shard_safely(task)
