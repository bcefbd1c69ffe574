"""The audit: run a model and a list of attacks over a test set and build a :class:`ClassReport`.

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

import platform
import time
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ._batch_size import attack_pass, fit_batch_size
from ._checks import is_int
from ._device import model_device, resolve_device
from ._tensor_checks import as_float_images, check_labels, check_logits, check_model_input
from .attacks._base import Attack, eval_mode
from .errors import AttackError, ModelError, RobustfairError
from .metrics import ClassReport
from .metrics._frame import RESERVED as _RESERVED
from .metrics.pointwise import MISSING, WorstCase
from .models.attack_view import attack_view
from .sanity import masking_recheck, model_flags

__all__ = ["audit"]


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
        if not name or name in _RESERVED:
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
    """One batch's bookkeeping on the device: predictions per attack and the running worst case."""

    def __init__(self, clean: torch.Tensor, y: torch.Tensor,
                 logits: torch.Tensor | None = None, composite: Sequence[int] = ()) -> None:
        self.y = y
        self.clean = clean
        self.logits = logits  # the clean logits, handed to attacks that can reuse them
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


def _attack_model(model: nn.Module, example: torch.Tensor, *, optimize: bool,
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
            view = attack_view(model, example)
        except ModelError:  # the model fails on its own: the audit's checks will say how
            view = None
        if view is not None and view.applied:
            net, applied = view, list(view.applied)
    return net, applied


def _run_attack(model, attack, xb, b: _Batch, targets: list[int | None], independent: bool,
                keep_per_target: bool, batch_size: int) -> None:
    """One attack over one pool of points, once per target in ``targets``; updates ``b`` in place.

    The attack's own column gets, per point, the prediction of the first target (in order)
    that fooled the model, else the clean prediction (``-1`` if skipped in the fast mode).
    """
    skipped = b.correct & ~b.alive if not independent else torch.zeros_like(b.correct)
    # the worst case over this attack's targets (a skipped point starts, and stays, at -1)
    column = WorstCase(b.y, torch.where(skipped, torch.full_like(b.clean, MISSING), b.clean))
    preds = []
    for t in targets:
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
            res = attack.perturb(model, xb[run], b.y[run], target=target,
                                 clean_logits=b.logits[run], batch_size=batch_size)
            pred[run] = res.pred.to(pred.dtype)
            if res.broken_by is not None:  # which part of a composite attack broke each point
                by = b.broken_by[len(b.columns)]
                by[run] = res.broken_by.to(by.dtype)
        column.add(pred)
        b.worst.add(pred)
        preds.append(pred)
    b.columns.append(column.pred)
    if keep_per_target:
        b.per_target.append(torch.stack(preds))


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
    optimize: bool = True,
    compile: bool = False,
    sanity: bool = True,
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

    Speed: ``batch_size`` is the most points in one pass (``"auto"``: the largest that fits on
    CUDA, 256 on a CPU; see ``_batch_size``). ``optimize`` runs the model through
    :func:`~robustfair.models.attack_view` (BatchNorm folded into convolutions, channels_last;
    the same function up to float rounding, checked on the first batch; what was applied is
    recorded in ``report.meta["model_optimizations"]``).
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
    pairs = _name_attacks(attacks)
    if not isinstance(x, torch.Tensor):
        raise RobustfairError(f"images must be a torch.Tensor, got {type(x).__name__}")
    as_float_images(x[:0])  # type, dimensions and dtype, before touching any data
    check_model_input(model, x)  # the channels the model was built for
    if len(x) == 0:
        raise RobustfairError("no images to audit")
    if batch_size != "auto" and (not is_int(batch_size) or batch_size < 1):
        raise RobustfairError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    for name, flag in (("optimize", optimize), ("compile", compile), ("amp", amp)):
        if not isinstance(flag, bool):
            raise RobustfairError(f"{name} must be True or False, got {flag!r}")
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

    dev = model_device(model) if device is None else resolve_device(device)
    home = model_device(model)
    class_names = _resolve_classes(model, classes)
    torch.manual_seed(seed)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    n = len(x)
    small, long, flags = [], [], []
    try:
        if dev != home:
            model.to(dev)
        pairs = _audit_attacks(pairs, seed, amp)
        composite = [j for j, (_, a) in enumerate(pairs) if a.part_names()]
        with eval_mode(model):
            settings = [dict(a.settings()) for _, a in pairs]
            example = as_float_images(x[:8].to(dev))
            net, applied = _attack_model(model, example, optimize=optimize, compile=compile)
            if batch_size == "auto":
                batch_size = fit_batch_size(attack_pass(net, example), n=n, device=dev)
            bar = tqdm(total=n, desc="audit", unit="img", disable=not progress, leave=False)
            with bar:
                pool = _pool_size(batch_size, x, dev)
                for start in range(0, n, pool):
                    xb = as_float_images(x[start:start + pool].to(dev, non_blocking=True))
                    with torch.inference_mode():
                        logits = torch.cat([check_logits(net(piece)) for piece in xb.split(batch_size)])
                    if class_names is None:  # nothing told us the classes: the output width does
                        class_names = [str(i) for i in range(logits.shape[-1])] if logits.dim() == 2 else None
                    check_logits(logits, len(class_names) if class_names else None)
                    if start == 0:  # everything is known now: check it before the long work
                        k = len(class_names)
                        y = check_labels(y, k, n)
                        t_index = _resolve_target(target, class_names)
                        targets = list(range(k)) if targeted_all else [t_index]
                    yb = y[start:start + pool].to(dev, non_blocking=True)
                    b = _Batch(logits.argmax(dim=1), yb, logits, composite)
                    if start == 0 and sanity:
                        flags += model_flags(model, xb[:batch_size], yb[:batch_size],
                                             logits[:batch_size], pairs[0][1])
                    for _, attack in pairs:
                        _run_attack(net, attack, xb, b, targets, independent, targeted_all,
                                    batch_size)
                    rows = torch.stack([yb, b.clean, *b.columns, b.worst.pred,
                                        *(b.broken_by[j] for j in composite)])
                    flat = [rows.flatten()] + ([torch.stack(b.per_target).flatten()] if b.per_target else [])
                    host = torch.cat(flat).cpu()  # the one device -> host transfer of the pool
                    small.append(host[: rows.numel()].view(rows.shape))
                    if b.per_target:
                        long.append((start, host[rows.numel():].view(len(pairs), k, len(yb))))
                    bar.update(len(yb))
                    del xb, logits, b, rows, flat
    finally:
        if dev != home:
            model.to(home)
    seconds = time.perf_counter() - t0

    table = torch.cat(small, dim=1).numpy()
    names = [name for name, _ in pairs]
    predictions = {"y_true": table[0], "clean_pred": table[1]}
    predictions.update({f"{name}_pred": table[2 + i] for i, name in enumerate(names)})
    predictions["worst_pred"] = table[2 + len(names)]
    for i, j in enumerate(composite):
        predictions[f"{names[j]}_by"] = table[3 + len(names) + i]
    if target is not None:
        predictions["target"] = np.full(n, t_index, dtype=np.int64)
    meta = _meta(model, n=n, seed=seed, batch_size=batch_size, device=dev, amp=amp,
                 optimizations=applied,
                 independent=independent, started=started, seconds=seconds,
                 target=t_index, targeted_all=targeted_all)
    report = ClassReport(
        predictions=pd.DataFrame(predictions),
        classes=class_names,
        attacks=settings,
        meta=meta,
        target_predictions=_long_form(long, table[0], names) if targeted_all else None,
        flags=flags,
    )
    if sanity:
        # AutoAttack's masking check, then the points Square alone broke re-attacked with
        # stronger gradient attacks (robustfair.sanity.masking_recheck)
        found, counts = masking_recheck(model, x, y, report)
        report.flags.extend(found)
        if counts:
            report.meta["masking_recheck"] = counts
    return report


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
          started, seconds, target, targeted_all) -> dict:
    import robustfair

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
        "started": started.isoformat(timespec="seconds"),
        "time_seconds": round(seconds, 3),
        "versions": {
            "robustfair": robustfair.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
    }
