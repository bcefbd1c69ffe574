"""The audit: run a model and a list of attacks over a test set and build a :class:`ClassReport`.

A short pipeline, each step a function (the sharded audit, :mod:`robustfair.sharding`, runs the
same steps on each shard): :func:`check_arguments` (one-line errors before anything runs) ->
:func:`prepare` (the model's attack view, the attacks as they run, the classes, pass and pool
sizes: an :class:`AuditPlan`) -> :func:`check_model` (sanity checks before the attacks) ->
:func:`audit_pool` for each pool -> :func:`build_report` (the report and the result checks).

Points are streamed: one pool of a few batches (``POOL_BATCHES``, at most ``POOL_BYTES`` of
float images) at a time is moved to the device, and no pass holds more than ``batch_size`` points, so
peak memory does not grow with the number of points. Per pool:

1. the clean logits, once (``inference_mode``), checked for width and NaN; every attack gets
   them (``perturb(..., clean_logits=...)``) instead of running its own clean pass;
2. each attack, in order, on the pool's clean-correct points. With ``independent=True`` (the
   default) every attack runs on *all* clean-correct points, so each attack's own column is its
   honest accuracy; the robust column is the pointwise combination (a point is robust only if no
   attack fooled it; the first attack that did gives ``worst_pred``). With ``independent=False``
   a later attack only runs on points no earlier attack fooled (faster: the AutoAttack way); its
   column holds ``-1`` where it was skipped, and its own accuracy is then reported as unknown
   (NaN). The robust column is the same in both modes up to the attacks' randomness;
3. all per-point bookkeeping stays on the device; one transfer to the host per pool.

The caller's attack objects are never changed: the i-th attack runs as a copy with seed
``seed + i`` (and ``amp`` if asked). Before the attacks, cheap sanity checks look at the model
(randomness, probabilities for logits, zero input gradients, eps 0), and after them at the
results (a black-box attack breaking points every gradient attack left robust); what they find
is ``report.flags`` (see :mod:`robustfair.sanity`).

Targeted audits: ``target=c`` aims every attack at class ``c`` (points of class ``c`` are not
attacked and do not count in target-success rates); ``targeted_all=True`` aims at every other
class in turn and records a source × target success matrix (``report.target_success``); in
the fast mode (``independent=False``) a point leaves the search, for all later attacks and
targets, as soon as one run fools it.
"""
from __future__ import annotations

import contextlib
import inspect
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._batch_size import attack_pass, fit_batch_size
from ._checks import is_int
from ._device import model_device, resolve_device
from ._tensor_checks import as_float_images, check_labels, check_logits, check_model_input
from .attacks import Attack, eval_mode
from .errors import AttackError, ConfigError, ModelError, RobustfairError
from .metrics import RESERVED, ClassReport
from .metrics.pointwise import MISSING, WorstCase
from .models.attack_view import attack_view
from ._model_checks import CheckedModel, checked_model
from ._progress import Progress, listen_for_parts
from ._version import __version__
from ._work_estimate import iterations
from .sanity import CHECK_POINTS, RESULT_CODES, masking_recheck, model_flags, result_flags

__all__ = ["audit", "AuditPlan"]


def _name_attacks(attacks) -> list[tuple[str, object]]:
    """(column name, attack) pairs: dict keys, else each attack's ``name`` made unique."""
    if isinstance(attacks, Mapping):
        pairs = [(str(k), a) for k, a in attacks.items()]
    elif isinstance(attacks, Sequence) and not isinstance(attacks, (str, bytes)):
        pairs, seen = [], {}
        for a in attacks:
            base = str(getattr(a, "name", "attack"))
            seen[base] = seen.get(base, 0) + 1
            pairs.append((base if seen[base] == 1 else f"{base}_{seen[base]}", a))
    else:
        raise AttackError("attacks must be a list of attacks or a dict name -> attack")
    if not pairs:
        raise AttackError("give at least one attack to audit with")
    for name, a in pairs:
        if not isinstance(a, Attack):
            raise AttackError(f"attack {name!r} is not an attack (build one with "
                              f"robustfair.build_attack, or subclass robustfair.attacks.Attack)")
        if not name or name in RESERVED:
            raise AttackError(f"attack name {name!r} is reserved; choose another name")
    if len({n for n, _ in pairs}) != len(pairs):
        raise AttackError("attack names must be distinct")
    return pairs


def _resolve_classes(model: nn.Module, classes: Sequence[str] | None) -> list[str] | None:
    if classes is not None:
        return [str(c) for c in classes]
    meta = getattr(model, "robustfair_metadata", None) or {}
    if meta.get("classes"):
        return [str(c) for c in meta["classes"]]
    config = getattr(model, "robustfair_config", None) or {}
    if config.get("num_classes"):
        return [str(i) for i in range(int(config["num_classes"]))]
    return None  # decided by the width of the model's output


def _resolve_target(target: int | str | None, classes: list[str]) -> int | None:
    if target is None:
        return None
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise RobustfairError(f"unknown target class {target!r}; classes are: {', '.join(classes[:20])}")
    if not 0 <= int(target) < len(classes):
        raise RobustfairError(f"target class {int(target)} out of range 0..{len(classes) - 1}")
    return int(target)


def _audit_attacks(pairs: list[tuple[str, Attack]], seed: int, amp: bool) -> list[tuple[str, Attack]]:
    """Copies of the attacks as the audit runs them: the i-th with seed ``seed + i`` (so the
    same attack listed twice draws different random starts and adds something), and amp if
    asked. The caller's objects stay as they are."""
    run = []
    for i, (name, a) in enumerate(pairs):
        changes = {"seed": seed + i}
        if amp and hasattr(a, "amp"):
            changes["amp"] = True
        run.append((name, a.with_options(**changes)))
    return run


class _Batch:
    """One pool's bookkeeping on the device: predictions per attack and the running worst case."""

    def __init__(self, clean: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
                 index: torch.Tensor, composite: Sequence[int] = ()) -> None:
        self.y = y
        self.clean = clean
        self.logits = logits  # the clean logits, handed to attacks that can reuse them
        self.index = index  # each point's position in the whole test set (seeds its draws)
        self.correct = clean == y
        self.worst = WorstCase(y, clean)  # the running worst case over the attacks so far
        self.columns: list[torch.Tensor] = []
        # per composite attack (by its column): the index of the part that broke each point
        self.broken_by = {j: torch.full_like(clean, -1) for j in composite}
        self.per_target: list[torch.Tensor] = []  # targeted_all: K × B predictions per attack

    @property
    def alive(self) -> torch.Tensor:
        """Clean-correct and not fooled by any attack so far."""
        return self.worst.robust


# Attacks get several batches' worth of points at a time (a pool) and run at most batch_size
# of them per pass: PGD then fills the places of fooled points from the pool instead of running
# ever smaller passes. A pool holds images only (activations scale with batch_size) and is
# capped in bytes of float images. On a GPU the cap is generous: a shrinking batch leaves it
# idle. On a CPU it is small: there the refill matters for small images, where the fixed cost
# of a pass dominates, and a large pool only adds resident memory.
POOL_BATCHES = 8
POOL_BYTES = {"cuda": 256 * 2**20, "other": 4 * 2**20}


def _pool_size(batch_size: int, x: torch.Tensor, device: torch.device | None = None) -> int:
    """Points per pool: up to POOL_BATCHES batches, within POOL_BYTES of float images."""
    batch_bytes = max(1, x[0].numel() * 4 * batch_size)
    cap = POOL_BYTES["cuda" if device is not None and device.type == "cuda" else "other"]
    return batch_size * max(1, min(POOL_BATCHES, cap // batch_bytes))


# what ``optimize`` may pin: the memory layout of the model view's convolutions
LAYOUTS = ("channels_last", "contiguous")


def check_optimize(optimize: object) -> None:
    """``optimize`` is True, False or one of :data:`LAYOUTS`, else a one-line
    :class:`~robustfair.errors.ConfigError` (a :class:`~robustfair.errors.RobustfairError`)."""
    if not isinstance(optimize, bool) and optimize not in LAYOUTS:
        raise ConfigError(f"optimize must be True, False or one of {', '.join(LAYOUTS)}, "
                              f"got {optimize!r}")


def _attack_model(model: nn.Module, example: torch.Tensor, *, optimize: bool | str,
                  compile: bool) -> tuple[nn.Module, list[str]]:
    """The module the audit runs (the model, or a faster view of it) and what was applied.

    ``compile`` compiles the model itself: the view's live-weight checks are Python that
    torch.compile would guard on and recompile for.
    """
    if compile:
        return torch.compile(model, dynamic=True), ["torch.compile"]
    net, applied = model, []
    if optimize:
        try:
            view = attack_view(model, example, channels_last=None if optimize is True
                               else optimize == "channels_last")
        except ModelError:  # the model fails on its own: the audit's checks will say how
            view = None
        if view is not None and view.applied:
            net, applied = view, list(view.applied)
    return net, applied


def timed_layout(model: nn.Module, x: torch.Tensor, device: torch.device) -> str:
    """The layout (one of :data:`LAYOUTS`) an audit with ``optimize=True`` would run ``model``
    in on ``device``, timed on the first 32 points of ``x``: a sharded audit pins it for all
    its shards, so that every shard rounds as the others do."""
    example = as_float_images(x[:32].to(device))
    with on_device(model, device):
        net, applied = _attack_model(model, example, optimize=True, compile=False)
    return "channels_last" if "channels_last" in applied else "contiguous"


def _takes_index(attack: Attack) -> bool:
    """Whether ``attack.perturb`` accepts ``index=`` (an attack written before it may not)."""
    params = inspect.signature(attack.perturb).parameters
    return "index" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# ------------------------------------------------------------------------------ the pipeline
# audit = check_arguments -> prepare -> check_model -> audit_pool per pool -> build_report.
# The sharded audit (robustfair.sharding) runs the same pieces on each shard's points.

@dataclass
class AuditPlan:
    """What :func:`prepare` settles before the first pool: the module the attacks run, the
    attacks as they run, the classes and targets, and the pass and pool sizes."""

    model: nn.Module                     # the caller's model (the sanity checks look at it)
    net: nn.Module                       # what the attacks run: the model or a faster view
    attacks: list[tuple[str, Attack]]    # (column name, the audit's copy of the attack)
    settings: list[dict]
    classes: list[str]
    target: int | None                   # one target class, or None
    targeted_all: bool
    independent: bool
    sanity: bool
    batch_size: int
    pool: int                            # points per pool
    device: torch.device
    seed: int
    amp: bool
    optimizations: list[str] = field(default_factory=list)
    composite: list[int] = field(default_factory=list)  # columns of composite attacks
    takes_index: list[bool] = field(default_factory=list)
    worked_around: list[dict] = field(default_factory=list)  # flags of what the audit worked around

    @property
    def targets(self) -> list[int | None]:
        """The targets each attack runs for, in turn (``[None]``: untargeted)."""
        return list(range(len(self.classes))) if self.targeted_all else [self.target]


def check_arguments(model: nn.Module, x: torch.Tensor, *, attacks, batch_size, target,
                    targeted_all, amp, optimize, compile) -> list[tuple[str, Attack]]:
    """Every check that needs neither the model's output nor the labels; returns the named
    attacks. Bad input is a one-line error here, before anything runs."""
    pairs = _name_attacks(attacks)
    if not isinstance(x, torch.Tensor):
        raise RobustfairError(f"images must be a torch.Tensor, got {type(x).__name__}")
    as_float_images(x[:0])  # type, dimensions and dtype, before touching any data
    check_model_input(model, x)  # the channels the model was built for
    if len(x) == 0:
        raise RobustfairError("no images to audit")
    if batch_size != "auto" and (not is_int(batch_size) or batch_size < 1):
        raise RobustfairError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    for name, flag in (("compile", compile), ("amp", amp)):
        if not isinstance(flag, bool):
            raise RobustfairError(f"{name} must be True or False, got {flag!r}")
    check_optimize(optimize)
    if target is not None and targeted_all:
        raise RobustfairError("give either target or targeted_all, not both")
    wants_targeted = target is not None or targeted_all
    for name, a in pairs:
        if bool(getattr(a, "targeted", False)) != wants_targeted:
            raise AttackError(
                f"attack {name!r} is {'targeted' if getattr(a, 'targeted', False) else 'untargeted'} but the "
                f"audit is {'targeted' if wants_targeted else 'untargeted'}: build attacks with "
                f"targeted={wants_targeted}"
            )
    return pairs


def check_index(index, n: int) -> torch.Tensor:
    """Each point's position in the whole test set (int64; default ``0..n-1``)."""
    if index is None:
        return torch.arange(n)
    index = torch.as_tensor(index)
    if index.shape != (n,) or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise RobustfairError(f"index must hold one integer per point ({n}), got "
                              f"{index.dtype} of shape {tuple(index.shape)}")
    return index.to(torch.int64).cpu()


def prepare(model: nn.Module, x: torch.Tensor, pairs: list[tuple[str, Attack]], *,
            classes: Sequence[str] | None, batch_size: int | str, device: torch.device,
            seed: int, target, targeted_all: bool, independent: bool, sanity: bool, amp: bool,
            optimize: bool | str, compile: bool, n: int | None = None) -> AuditPlan:
    """The model view, the attacks' copies, the classes (from the caller, the model's
    metadata, else the width of its output on a few points) and the pass and pool sizes.

    The model is on ``device`` and in eval mode. ``n``: the points the whole audit covers
    (``batch_size="auto"`` fits it), default ``len(x)``.
    """
    attacks = _audit_attacks(pairs, seed, amp)
    # a few points: the view is checked on 8 of them, and its layout timed on them all
    example = as_float_images(x[:32].to(device))
    net, applied = _attack_model(model, example, optimize=optimize, compile=compile)
    # every call of the model checked (and its input copied if it writes to it)
    net, worked_around = checked_model(net, example[:8])
    # one point's output: its width gives the classes when nothing else does, and is checked
    # against them before the labels (a wrong model is named as such, not as bad labels)
    with torch.inference_mode():
        logits = check_logits(net(example[:1]))
    class_names = _resolve_classes(model, classes)
    if class_names is None:
        class_names = [str(i) for i in range(logits.shape[-1])] if logits.dim() == 2 else None
    check_logits(logits, len(class_names) if class_names else None)
    if batch_size == "auto":
        batch_size = fit_batch_size(attack_pass(net, example), n=n or len(x), device=device)
    return AuditPlan(
        model=model, net=net, attacks=attacks, settings=[dict(a.settings()) for _, a in attacks],
        classes=class_names, target=_resolve_target(target, class_names),
        targeted_all=targeted_all, independent=independent, sanity=sanity,
        batch_size=batch_size, pool=_pool_size(batch_size, x, device), device=device, seed=seed,
        amp=amp, optimizations=applied, worked_around=worked_around,
        composite=[j for j, (_, a) in enumerate(attacks) if a.part_names()],
        takes_index=[_takes_index(a) for _, a in attacks])


def check_model(plan: AuditPlan, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """The sanity checks of the model before any attack (:func:`~robustfair.sanity.model_flags`),
    on the first points of ``x``."""
    count = min(plan.batch_size, CHECK_POINTS, len(x))
    xb = as_float_images(x[:count].to(plan.device))
    yb = y[:count].to(plan.device)
    with torch.inference_mode():
        logits = check_logits(plan.net(xb), len(plan.classes))
    # the caller's model given copies as the attacks' net is (if it writes into its input)
    checked = CheckedModel(plan.model, plan.net.copy_input)
    return model_flags(checked, xb, yb, logits, plan.attacks[0][1])


@dataclass
class PoolResult:
    """One pool's per-point results, on the host: ``rows`` is y_true, clean_pred, one row per
    attack, worst_pred, then the composite attacks' ``_by`` rows; ``per_target`` (targeted_all)
    is attacks × K × points."""

    start: int
    rows: torch.Tensor
    per_target: torch.Tensor | None = None


def audit_pool(plan: AuditPlan, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
               start: int, progress: AuditProgress | None = None) -> PoolResult:
    """The points ``start:start + plan.pool``: the clean pass (once, checked), each attack in
    order, the bookkeeping on the device, and one transfer to the host. ``progress`` hears of
    each finished attack (and composite attack's part)."""
    dev = plan.device
    xb = as_float_images(x[start:start + plan.pool].to(dev, non_blocking=True))
    yb = y[start:start + plan.pool].to(dev, non_blocking=True)
    with torch.inference_mode():
        logits = torch.cat([check_logits(plan.net(piece)) for piece in xb.split(plan.batch_size)])
    check_logits(logits, len(plan.classes))
    b = _Batch(logits.argmax(dim=1), yb, logits, index[start:start + len(yb)].to(dev), plan.composite)
    if progress is not None:
        progress.pool_started(start, b)
    for j, ((_, attack), takes_index) in enumerate(zip(plan.attacks, plan.takes_index)):
        with listen_for_parts(None if progress is None else progress.part_listener(j)):
            _run_attack(plan, attack, takes_index, xb, b)
        if progress is not None:
            progress.attack_done(j, b)
    rows = torch.stack([yb, b.clean, *b.columns, b.worst.pred,
                        *(b.broken_by[j] for j in plan.composite)])
    flat = [rows.flatten()] + ([torch.stack(b.per_target).flatten()] if b.per_target else [])
    host = torch.cat(flat).cpu()  # the one device -> host transfer of the pool
    per_target = None
    if b.per_target:
        per_target = host[rows.numel():].view(len(plan.attacks), len(plan.classes), len(yb))
    return PoolResult(start, host[: rows.numel()].view(rows.shape), per_target)


def _run_attack(plan: AuditPlan, attack: Attack, takes_index: bool, xb: torch.Tensor,
                b: _Batch) -> None:
    """One attack over one pool of points, once per target of the plan; updates ``b`` in place.

    The attack's own column gets, per point, the prediction of the first target (in order)
    that fooled the model, else the clean prediction (``-1`` if skipped in the fast mode).
    """
    independent = plan.independent
    skipped = b.correct & ~b.alive if not independent else torch.zeros_like(b.correct)
    # the worst case over this attack's targets (a skipped point starts, and stays, at -1)
    column = WorstCase(b.y, torch.where(skipped, torch.full_like(b.clean, MISSING), b.clean))
    preds = []
    for t in plan.targets:
        eligible = b.correct if independent else b.alive
        if t is not None:
            eligible = eligible & (b.y != t)  # a point cannot be pushed into its own class
        if independent:
            pred = b.clean.clone()
        else:  # points an earlier run already fooled are skipped
            pred = torch.where(b.correct & ~b.alive, torch.full_like(b.clean, MISSING), b.clean)
        run = eligible.nonzero().squeeze(1)  # host sync: the subset must be known to slice
        if run.numel():
            target = None if t is None else torch.full((run.numel(),), t, dtype=torch.long, device=xb.device)
            extra = {"index": b.index[run]} if takes_index else {}
            res = attack.perturb(plan.net, xb[run], b.y[run], target=target,
                                 clean_logits=b.logits[run], batch_size=plan.batch_size, **extra)
            pred[run] = res.pred.to(pred.dtype)
            if res.broken_by is not None:  # which part of a composite attack broke each point
                by = b.broken_by[len(b.columns)]
                by[run] = res.broken_by.to(by.dtype)
        column.add(pred)
        b.worst.add(pred)
        preds.append(pred)
    b.columns.append(column.pred)
    if plan.targeted_all:
        b.per_target.append(torch.stack(preds))


class AuditProgress(Progress):
    """The audit's progress: a bar over the points on a terminal; otherwise one line per
    finished attack (per part of a composite attack such as AutoAttack) and per pool, with the
    points left and the time left. Work is counted in model passes: each attack's budget per
    point (:func:`~robustfair._work_estimate.iterations`) times the points it runs on, so after
    AutoAttack's first part only the points still robust count for the parts to come."""

    def __init__(self, plan: AuditPlan, n: int, *, enabled: bool) -> None:
        k, targets = len(plan.classes), len(plan.targets)
        self.plan, self.n = plan, n
        self.cost = [iterations(s, k) * targets for s in plan.settings]  # passes per point
        self.part_cost = [[iterations(p, k) for p in s.get("parts") or ()] for s in plan.settings]
        self.pools = -(-n // plan.pool)
        self.lines = len(plan.attacks) > 1 or bool(plan.composite)  # else the pool line says all
        self.finished_points = 0   # points of the finished pools
        self.finished_work = 0.0   # model passes those pools ran
        self.pool_points = 0       # points of the pool running now (0: none)
        super().__init__(n, "audit", unit="point", enabled=enabled, work=n * sum(self.cost))

    def pool_started(self, start: int, b: _Batch) -> None:
        self.pool = f"pool {start // self.plan.pool + 1}/{self.pools}"
        self.pool_points, self.pool_work = len(b.y), 0.0
        self.eligible = int(b.correct.sum())  # points the next attack runs on (host sync)

    def part_listener(self, j: int):
        """The callback that hears attack ``j``'s parts (None: not a composite attack)."""
        if j not in self.plan.composite:
            return None
        finished = []

        def part_done(name: str, points: int, robust: int) -> None:
            i = len(finished)
            finished.append(name)
            work = self.part_cost[j][i] * points
            self.pool_work += work
            self.done(f"{self.pool}, {self.plan.attacks[j][0]} {name}", work=work,
                      left=self._work_left(j, later_parts=sum(self.part_cost[j][i + 1:]) * robust),
                      detail=f" (ran on {points:,} points, {robust:,} still robust)")
        return part_done

    def attack_done(self, j: int, b: _Batch) -> None:
        robust = int(b.alive.sum())  # host sync, once per attack
        work = 0.0
        if j not in self.plan.composite:  # a composite's parts counted their own work
            work = self.cost[j] * self.eligible
            self.pool_work += work
        if not self.plan.independent:
            self.eligible = robust  # the next attack runs on the points still robust
        if j == len(self.plan.attacks) - 1:
            points, self.pool_points = self.pool_points, 0
            self.finished_points += points
            self.finished_work += self.pool_work
            self.done(self.pool, units=points, work=work, left=self._work_left(j),
                      detail=f" ({robust:,} of {points:,} points robust)")
        elif self.lines and j not in self.plan.composite:
            self.done(f"{self.pool}, {self.plan.attacks[j][0]}", work=work, left=self._work_left(j),
                      detail=f" ({robust:,} points still robust)")
        else:
            self.work_done += work

    def _work_left(self, j: int, later_parts: float = 0.0) -> float:
        """The work left: attack ``j``'s later parts (``later_parts``), the pool's later attacks
        on the points they run on, and the later pools at the passes per point seen so far."""
        later = later_parts + (sum(self.cost[j + 1:]) * self.eligible if self.pool_points else 0)
        future = self.n - self.finished_points - self.pool_points
        per_point = (self.finished_work / self.finished_points if self.finished_points
                     else sum(self.cost))
        return later + future * per_point


def build_report(plan: AuditPlan, pools: list[PoolResult], flags: list[dict], *,
                 started: datetime, seconds: float) -> ClassReport:
    """The :class:`ClassReport` of the pools' results, with the result checks
    (:func:`~robustfair.sanity.result_flags`) added to ``flags`` when ``plan.sanity``."""
    table = torch.cat([p.rows for p in pools], dim=1).numpy()
    n = table.shape[1]
    names = [name for name, _ in plan.attacks]
    predictions = {"y_true": table[0], "clean_pred": table[1]}
    predictions.update({f"{name}_pred": table[2 + i] for i, name in enumerate(names)})
    predictions["worst_pred"] = table[2 + len(names)]
    for i, j in enumerate(plan.composite):
        predictions[f"{names[j]}_by"] = table[3 + len(names) + i]
    if plan.target is not None:
        predictions["target"] = np.full(n, plan.target, dtype=np.int64)
    meta = _meta(plan.model, n=n, seed=plan.seed, batch_size=plan.batch_size, device=plan.device,
                 amp=plan.amp, optimizations=plan.optimizations, independent=plan.independent,
                 started=started, seconds=seconds, target=plan.target,
                 targeted_all=plan.targeted_all, sanity=plan.sanity)
    long = [(p.start, p.per_target) for p in pools if p.per_target is not None]
    report = ClassReport(
        predictions=pd.DataFrame(predictions),
        classes=plan.classes,
        attacks=plan.settings,
        meta=meta,
        target_predictions=_long_form(long, table[0], names) if plan.targeted_all else None,
        flags=list(flags),
    )
    if plan.sanity:  # model-free; recheck_masking replaces it when the model is at hand
        report.flags.extend(result_flags(report))
    return report


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The model on ``device`` and in eval mode for the audit, then back where and as it was."""
    home = model_device(model)
    try:
        if device != home:
            model.to(device)
        with eval_mode(model):
            yield
    finally:
        if device != home:
            model.to(home)


def audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks,
    classes: Sequence[str] | None = None,
    batch_size: int | str = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    target: int | str | None = None,
    targeted_all: bool = False,
    independent: bool = True,
    progress: bool = True,
    amp: bool = False,
    optimize: bool | str = True,
    compile: bool = False,
    sanity: bool = True,
    index: Sequence[int] | torch.Tensor | None = None,
) -> ClassReport:
    """Audit ``model`` on images ``x`` (uint8 or float in [0, 1], N×C×H×W) with labels ``y``.

    ``attacks`` is a list of attacks (columns named by ``attack.name``, made unique) or a dict
    name -> attack. ``classes`` defaults to ``model.robustfair_metadata["classes"]``, else
    ``"0".."K-1"``. ``device=None`` runs where the model is. The i-th attack runs with seed
    ``seed + i`` (restored afterwards); ``amp`` turns on the attacks' mixed precision (the clean
    pass stays in full precision). ``target`` (index or class name) aims every attack at one
    class; ``targeted_all`` at every other class in turn (attacks must be built targeted).
    ``independent=False`` is the faster mode that skips points already fooled (see the module
    docstring). Bad input raises a one-line :class:`RobustfairError` before any attack runs.

    ``index``: each point's position in the whole test set (default ``0..N-1``). Every random
    draw of the attacks for a point is keyed by the seed and this index, so a point's result
    does not depend on the other points audited with it (a shard of a larger audit passes its
    points' positions and gets the same per-point results as the whole audit).

    Speed: ``batch_size`` is the most points in one pass (``"auto"``: the largest that fits on
    CUDA, 256 on a CPU; see ``_batch_size``). ``optimize`` runs the model through
    :func:`~robustfair.models.attack_view` (BatchNorm folded into convolutions, in the memory
    layout that runs a forward pass on the first 32 points faster, timed; the same function up
    to float rounding, checked on the first points; what was applied is recorded in
    ``report.meta["model_optimizations"]``); ``optimize="channels_last"`` or ``"contiguous"``
    pins the layout (to repeat an audit to the last bit, pin the one it recorded).
    ``compile`` runs ``torch.compile`` on the model instead (worth it on a GPU for long
    audits; the first batches pay for the compilation; on a CPU it was slower here).

    ``sanity`` (default on) runs the checks of :mod:`robustfair.sanity` and stores what they
    find in ``report.flags`` (one line each: what it means and what to do).

    >>> import robustfair as rf
    >>> ds = rf.load_dataset("digits")
    >>> model = rf.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    >>> report = audit(model, ds.test.x[:20], ds.test.y[:20],
    ...                attacks=[rf.build_attack("fgsm", eps=0.1)], progress=False)
    >>> report.by_class.shape[0]
    10
    """
    pairs = check_arguments(model, x, attacks=attacks, batch_size=batch_size, target=target,
                            targeted_all=targeted_all, amp=amp, optimize=optimize, compile=compile)
    index = check_index(index, len(x))
    dev = model_device(model) if device is None else resolve_device(device)
    report = audit_points(model, x, y, pairs, index=index, device=dev, check_points=(x, y),
                          progress=progress, classes=classes, batch_size=batch_size, seed=seed,
                          target=target, targeted_all=targeted_all, independent=independent,
                          sanity=sanity, amp=amp, optimize=optimize, compile=compile)
    if sanity:
        recheck_masking(model, x, y, report, batch_size=report.meta["batch_size"])
    return report


def audit_points(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 pairs: list[tuple[str, Attack]], *, index: torch.Tensor, device: torch.device,
                 check_points: tuple[torch.Tensor, torch.Tensor] | None, progress: bool = False,
                 seed: int, **options) -> ClassReport:
    """The pipeline after :func:`check_arguments`, on the points ``(x, y)`` at positions
    ``index`` of the whole test set: :func:`prepare` -> :func:`check_model` on
    ``check_points`` (the whole set's first points; None: no model checks) -> :func:`audit_pool`
    per pool -> :func:`build_report`. ``options``: :func:`prepare`'s. :func:`audit` runs it on
    all the points, :func:`robustfair.sharding.run_shard` on a shard's."""
    torch.manual_seed(seed)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    with on_device(model, device):
        plan = prepare(model, x, pairs, device=device, seed=seed, **options)
        y = check_labels(y, len(plan.classes), len(x))  # everything is known now: before the long work
        flags = list(plan.worked_around)
        if plan.sanity and check_points is not None:
            cx, cy = check_points
            flags += check_model(plan, cx, check_labels(cy, len(plan.classes), len(cx)))
        with AuditProgress(plan, len(x), enabled=progress) as said:
            heard = said if progress else None  # silent: no counting (each count syncs the device)
            pools = [audit_pool(plan, x, y, index, start, heard) for start in range(0, len(x), plan.pool)]
    return build_report(plan, pools, flags, started=started, seconds=time.perf_counter() - t0)


def recheck_masking(model: nn.Module, x: torch.Tensor, y: torch.Tensor, report: ClassReport, *,
                    batch_size: int = 256) -> None:
    """AutoAttack's masking check on the whole audit, then the points Square alone broke
    re-attacked with stronger gradient attacks (:func:`robustfair.sanity.masking_recheck`):
    its flag replaces the model-free one and its counts go to ``meta["masking_recheck"]``.
    Run once on the whole test set (a sharded audit runs it after merging its shards)."""
    found, counts = masking_recheck(model, x, y, report, batch_size=batch_size)
    report.flags[:] = [f for f in report.flags if f["code"] not in RESULT_CODES] + found
    if counts:
        report.meta["masking_recheck"] = counts


def _long_form(chunks, y_true: np.ndarray, names: list[str]) -> pd.DataFrame:
    """targeted_all: one row per (point, target class other than its own)."""
    frames = []
    for start, preds in chunks:  # preds: attacks × K × B
        _, k, nb = preds.shape
        target = np.repeat(np.arange(k), nb)
        index = np.tile(np.arange(start, start + nb), k)
        keep = target != y_true[index]
        cols = {"index": index[keep], "target": target[keep]}
        cols.update({f"{name}_pred": preds[i].numpy().reshape(-1)[keep] for i, name in enumerate(names)})
        frames.append(pd.DataFrame(cols))
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["index", "target"], kind="stable", ignore_index=True)


def _meta(model: nn.Module, *, n, seed, batch_size, device, amp, optimizations, independent,
          started, seconds, target, targeted_all, sanity) -> dict:
    metadata = getattr(model, "robustfair_metadata", None) or {}
    return {
        "dataset": metadata.get("dataset"),
        "model": getattr(model, "robustfair_config", None),
        "n": n,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(device),
        "amp": amp,
        "model_optimizations": optimizations,
        "independent": independent,
        "target": target,
        "targeted_all": targeted_all,
        "sanity": sanity,
        "started": started.isoformat(timespec="seconds"),
        "time_seconds": round(seconds, 3),
        "versions": {
            "robustfair": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
    }
