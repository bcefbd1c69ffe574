"""Run a leaderboard: each model one resumable job, every model on the same points.

The leaderboard folder::

    DIR/settings.json           the settings and the points (indices, SHA-256): written once
    DIR/leaderboard.yaml        the spec as last run
    DIR/models/<name>/          one model's audit: card.html, card.png, report.json; written as
                                one unit with report.json last, so report.json means "done"
    DIR/models/<name>/error.txt the model's last failure, if it failed
    DIR/leaderboard.csv (.parquet), classwise.csv, leaderboard.html   (see :mod:`.report`)

A rerun audits only the models without a report.json: a finished model is never audited
again, a model added to the spec is audited alone, and a kill at any instant loses at most
the models that were being audited. A rerun is refused, in one line, when it would mix two
evaluations: other settings (data, eps, norm, attacks, points, seed, batch size) than
``settings.json`` records, or a model whose entry (or weights file) changed since it was
audited under the same name. (Refusing, rather than silently redoing, keeps every row of the
table an audit of what the spec now says; give a changed model a new name, or remove its
folder, to audit it again.) One process at a time runs a leaderboard folder (a lock).

Executors: ``local`` audits the models one after another in this process; ``ray`` runs one
task per model, asking for the spec's ``resources`` (``num_gpus``, ``num_cpus``), each
rebuilding its model from its :class:`~robustfair.models.source.ModelSource` (a model never
travels between processes; the points travel once, through Ray's object store).
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write_text
from .._checks import positive_int
from .._formatting import percent
from .._lock import folder_lock
from ..errors import ConfigError, RobustfairError
from ..models.source import ModelSource
from .points import class_shortfall, stratified_indices
from .spec import LeaderboardSpec, ModelEntry

__all__ = ["EXECUTORS", "LeaderboardResult", "ModelJob", "audit_model", "run_leaderboard"]

EXECUTORS = ("local", "ray")
SETTINGS = "settings.json"
SCHEMA = "robustfair.leaderboard/1"


@dataclass(frozen=True)
class ModelJob:
    """Everything one model's audit needs, as picklable data (a Ray task receives it)."""

    name: str
    folder: str
    source: ModelSource
    written: dict           # the spec entry as written: recorded, compared on a rerun
    settings: dict          # LeaderboardSpec.settings()
    classes: tuple[str, ...]
    data_label: str
    data_sha256: str
    device: str | None = None
    threads: int | None = None
    shards: int | None = None         # audit in this many shards (DIR/shards/<name>/), resumable
    executor: str = "local"           # where the shards run (with shards only)
    address: str | None = None


@dataclass
class LeaderboardResult:
    """What a call of :func:`run_leaderboard` did."""

    out_dir: Path
    models: list[str]
    already_done: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # name -> one-line error
    seconds: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def model_folder(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / "models" / name


def is_done(out_dir: str | Path, name: str) -> bool:
    return (model_folder(out_dir, name) / "report.json").is_file()


# ------------------------------------------------------------------------------ one model
def audit_model(job: ModelJob, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Audit one model on the leaderboard's points and commit its folder; returns a summary.

    This is the one place a model is audited, whatever the executor. With ``job.shards`` the
    audit is :func:`robustfair.sharding.audit_sharded` (its shards kept in
    ``DIR/shards/<name>/``, so a killed run resumes inside a model too); the report is the same.
    """
    from .._device import resolve_device, torch_threads
    from .._tensor_checks import as_float_images
    from ..attacks import build_attack
    from ..auditing import audit
    from ..card import build_card
    from ..data.audit_source import points_sha256
    from ..models.source import DataShape

    t0 = time.perf_counter()
    s = job.settings
    with torch_threads(job.threads):
        if points_sha256(x, y) != job.data_sha256:  # e.g. a Ray node that holds other data
            raise RobustfairError(f"model {job.name}: the points it received are not the "
                                  f"leaderboard's (SHA-256 differs)")
        device = resolve_device(job.device)
        shape = DataShape(len(job.classes), int(x.shape[1]), int(x.shape[2]), job.data_label)
        model, provenance = job.source.build(shape, device=device, example=as_float_images(x[:2]))
        attacks = {a["column"]: build_attack(a["attack"], **{"eps": s["eps"], "norm": s["norm"],
                                                             "seed": s["seed"], **a["settings"]})
                   for a in s["attacks"]}
        if job.shards:
            from ..sharding import audit_sharded

            shard_dir = Path(job.folder).parent.parent / "shards" / job.name
            report = audit_sharded(job.source, x, y, attacks=attacks, out_dir=shard_dir,
                                   shards=job.shards, executor=job.executor, address=job.address,
                                   classes=list(job.classes), batch_size=s["batch_size"],
                                   seed=s["seed"], device=job.device, progress=False,
                                   data_shape=shape, model=model)
        else:
            report = audit(model, x, y, attacks=attacks, classes=list(job.classes),
                           batch_size=s["batch_size"], seed=s["seed"], progress=False)
    seconds = round(time.perf_counter() - t0, 2)
    report.meta.update(dataset=s["dataset"], split=s["split"], eps_text=s["eps_text"],
                       data_sha256=job.data_sha256)
    report.meta.update(provenance)
    report.meta["leaderboard"] = {"name": job.name, "entry": job.written, "label": job.source.label,
                                  "source": job.source.to_dict(), "seconds": seconds}
    folder = Path(job.folder)
    build_card(report, folder, title=f"{job.name}: {job.source.label}")
    (folder / "error.txt").unlink(missing_ok=True)
    overall = report.overall
    return {"name": job.name, "seconds": seconds, "clean_acc": float(overall["clean_acc"]),
            "robust_acc": float(overall["robust_acc"]), "flags": [f["code"] for f in report.flags]}


def audit_model_safely(job: ModelJob, x: torch.Tensor, y: torch.Tensor) -> dict:
    """:func:`audit_model`, with a failure written to the model's ``error.txt`` and returned as
    ``{"name", "error"}`` (one failed model does not stop the others)."""
    try:
        return audit_model(job, x, y)
    except Exception as exc:  # noqa: BLE001 - any failure of one model is that model's result
        message = str(exc) if isinstance(exc, RobustfairError) else f"{type(exc).__name__}: {exc}"
        detail = message if isinstance(exc, RobustfairError) else traceback.format_exc()
        try:
            atomic_write_text(Path(job.folder) / "error.txt", detail.rstrip() + "\n")
        except OSError:
            pass
        return {"name": job.name, "error": " ".join(message.split())}


# ------------------------------------------------------------------------------ the board
def run_leaderboard(spec: LeaderboardSpec, out_dir: str | Path, *, executor: str = "local",
                    address: str | None = None, device: str | None = None,
                    data_dir: str | None = None, threads: int | None = None,
                    shards: int | None = None, progress: bool = True) -> LeaderboardResult:
    """Audit every unfinished model of ``spec`` into ``out_dir``, then write the tables and
    the page (:func:`~robustfair.leaderboard.report.write_outputs`); returns what happened.

    ``shards``: audit each model in this many shards. The models then run one after another
    and ``executor`` is where each model's shards run (one Ray task per shard); without
    ``shards``, ``executor`` is where the models run (one Ray task per model).

    ``progress``: one line per finished model on stderr, and a bar on a terminal.
    """
    from ..data.audit_source import load_audit_data, points_sha256
    from .report import write_outputs

    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise ConfigError("--address is for the ray executor (add --executor ray)")
    if shards is not None:
        positive_int(shards, "--shards")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    t0 = time.perf_counter()
    # the points first: a mistake found here (points_per_class larger than a class) writes nothing
    data = load_audit_data(spec.dataset, split=spec.split, data_dir=data_dir or spec.data_dir,
                           progress=progress and sys.stderr.isatty())
    classes = tuple(str(c) for c in data.dataset.classes)
    labels = data.y.numpy()
    if spec.points_per_class is not None:
        short = class_shortfall(labels, spec.points_per_class, len(classes))
        if short:
            c, n = short[0]
            raise spec.error("points_per_class", f"points_per_class {spec.points_per_class} is more "
                             f"than class {classes[c]!r} has ({n} points in the {spec.split} split "
                             f"of {data.label}{f'; {len(short)} classes fall short' if len(short) > 1 else ''})")
    idx = stratified_indices(labels, spec.points_per_class, spec.seed)
    x, y = data.x[torch.as_tensor(idx)], data.y[torch.as_tensor(idx)]
    record = {"schema": SCHEMA, "settings": spec.settings(),
              "data": {"label": data.label, "classes": list(classes), "n_points": len(idx),
                       "sha256": points_sha256(x, y), "indices": idx.tolist()}}
    with folder_lock(out, "a leaderboard run"):
        _record_settings(out, record, spec)
        result = LeaderboardResult(out_dir=out, models=[m.name for m in spec.models])
        todo = []
        for entry in spec.models:
            if is_done(out, entry.name):
                _check_unchanged(out, entry, spec)
                result.already_done.append(entry.name)
            else:
                todo.append(entry)
        atomic_write_text(out / "leaderboard.yaml", spec.text)
        jobs = [ModelJob(name=e.name, folder=str(model_folder(out, e.name).resolve()), source=e.source,
                         written=e.written, settings=record["settings"], classes=classes,
                         data_label=data.label, data_sha256=record["data"]["sha256"], device=device,
                         threads=threads, shards=shards, executor=executor, address=address)
                for e in todo]
        with _Progress(len(spec.models), len(result.already_done), enabled=progress) as bar:
            if jobs and executor == "ray" and not shards:
                _run_ray(jobs, x, y, spec, address, bar, result)
            else:
                for job in jobs:
                    bar.record(audit_model_safely(job, x, y), result)
        result.outputs = write_outputs(out, spec, record, failed=result.failed)
    result.seconds = time.perf_counter() - t0
    return result


def _record_settings(out: Path, record: dict, spec: LeaderboardSpec) -> None:
    """Write ``settings.json`` once; refuse a folder that holds another evaluation."""
    path = out / SETTINGS
    if not path.exists():
        if (out / "models").exists():
            raise ConfigError(f"{out} has models/ but no {SETTINGS}: not a leaderboard folder this "
                              f"spec can add to; use another --out")
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(old, dict) or old.get("schema") != SCHEMA:
        raise ConfigError(f"{path} is not a robustfair leaderboard record; use another --out")
    before, now = old.get("settings", {}), record["settings"]
    for key in now:
        if before.get(key) != now[key] and key != "eps_text":
            raise spec.error({"attacks": "attack"}.get(key, key),
                             f"{out} holds a leaderboard audited with {key} = {_show(before.get(key))}, "
                             f"this spec gives {_show(now[key])}; use another --out to compare "
                             f"under other settings")
    if old.get("data", {}).get("sha256") != record["data"]["sha256"]:
        raise spec.error("dataset", f"{out} holds a leaderboard audited on other points (their "
                                    f"SHA-256 differs: other data or another data set version); "
                                    f"use another --out")


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _check_unchanged(out: Path, entry: ModelEntry, spec: LeaderboardSpec) -> None:
    """A finished model must be what the spec now names (same entry, same weights file)."""
    from ..models.external import file_sha256

    path = model_folder(out, entry.name) / "report.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("meta", {})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    recorded = (meta.get("leaderboard") or {}).get("entry")
    where = f"{spec.source}:{entry.line}"
    if recorded != entry.written:
        raise ConfigError(f"{where}: model {entry.name!r} was audited as {_show(recorded)} and the spec "
                          f"now says {_show(entry.written)}; give it a new name (or remove "
                          f"{path.parent}) to audit it again")
    weights = entry.source.weights or entry.source.checkpoint
    if weights and Path(weights).is_file() and meta.get("weights_sha256") not in (None, file_sha256(weights)):
        raise ConfigError(f"{where}: the weights of model {entry.name!r} ({weights}) changed since it "
                          f"was audited; give it a new name (or remove {path.parent}) to audit it again")


# ------------------------------------------------------------------------------ executors
def _run_ray(jobs: list[ModelJob], x, y, spec: LeaderboardSpec, address, bar, result) -> None:
    from .._ray import ray_session

    res = spec.resources
    threads = max(1, int(res.num_cpus)) if res.num_cpus >= 1 else 1
    with ray_session(address) as ray:
        task = ray.remote(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=0)(audit_model_safely)
        x_ref, y_ref = ray.put(x), ray.put(y)  # once, shared by every task
        pending = {}
        for job in jobs:
            job = job if job.threads is not None else _with_threads(job, threads)
            pending[task.remote(job, x_ref, y_ref)] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task that died (node lost, OOM)
                    outcome = {"name": job.name,
                               "error": f"ray task failed: {' '.join(str(exc).split())[:300]}"}
                bar.record(outcome, result)


def _with_threads(job: ModelJob, threads: int) -> ModelJob:
    from dataclasses import replace

    return replace(job, threads=threads)


class _Progress:
    """One line per finished model on stderr (always), and a tqdm bar on a terminal."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self.bar = None

    def __enter__(self) -> "_Progress":
        if self.enabled and sys.stderr.isatty() and self.done < self.total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc="leaderboard", unit="model",
                            dynamic_ncols=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def record(self, outcome: dict, result: LeaderboardResult) -> None:
        name = outcome["name"]
        self.done += 1
        if "error" in outcome:
            result.failed[name] = outcome["error"]
            line = f"leaderboard [{self.done}/{self.total}] {name}: FAILED: {outcome['error']}"
        else:
            result.completed.append(name)
            flags = f", flags {','.join(outcome['flags'])}" if outcome["flags"] else ""
            line = (f"leaderboard [{self.done}/{self.total}] {name}: robust "
                    f"{percent(outcome['robust_acc'], unit='%')} (clean "
                    f"{percent(outcome['clean_acc'], unit='%')}){flags}, {outcome['seconds']:.1f} s")
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        else:
            print(line, file=sys.stderr, flush=True)
