"""Grid expansion: a :class:`StudySpec` -> one :class:`Run` per point of the grid.

Each run's *resolved* config (every TrainConfig setting that decides the result, with the
defaults filled in, plus the evaluation with each attack's eps and norm filled in) is hashed
as stable JSON with sorted keys. The hash names the run's directory, so the same run in two
studies, or written two ways in one spec (``lr: 0.1`` vs ``lr: "1e-1"``), is trained once.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import re
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._parse import check_eps
from ..errors import ConfigError, RobustfairError

if TYPE_CHECKING:  # the spec module imports this one (every spec it reads is expanded)
    from .spec import StudySpec

__all__ = ["Run", "config_hash", "expand", "format_value", "CONFIG_COLUMNS"]

SCHEMA = "robustfair.study.run/1"
# more runs than any study on one cluster could train; a bigger grid is a typo (an axis of
# 1000 values) and would only fill memory while it is expanded, so it is refused up front
MAX_RUNS = 10_000
# config columns every results table has (in this order), whatever the spec varies
CONFIG_COLUMNS = ("dataset", "model", "objective", "mitigation", "eps", "optimizer", "lr",
                  "weight_decay", "schedule", "epochs", "batch_size", "seed")


@dataclass(frozen=True)
class Run:
    """One point of the grid.

    ``key``: hash of ``config`` (the run directory's name); ``config``: the resolved config
    (``{"schema", "train", "evaluation"}``); ``axes``: this run's value of every spec axis, for
    display; ``label``: the axes that differ between runs, seed excluded (runs that differ
    only in seed share a label: that is the group over which seeds are averaged).
    """

    key: str
    config: dict
    axes: dict
    label: str


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: dict) -> str:
    """16 hex digits of the SHA-256 of the config's canonical JSON.

    >>> config_hash({"b": 1, "a": [0.1]}) == config_hash({"a": [0.1], "b": 1})
    True
    """
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def format_value(axis: str, value: Any) -> str:
    """A short display form of an axis value (``8/255``, ``small_cnn(width=16)``, ``none``).

    >>> format_value("eps", 8 / 255), format_value("mitigations", [])
    ('8/255', 'none')
    >>> format_value("model", {"name": "mlp", "kwargs": {"hidden": [32]}})
    'mlp(hidden=[32])'
    """
    if axis == "model" and isinstance(value, dict):
        return value["name"] + _options(value.get("kwargs") or {})
    if axis == "mitigations":
        if not value:
            return "none"
        return "+".join(m["name"] + _options({k: v for k, v in m.items() if k != "name"})
                        for m in value)
    if isinstance(value, float):
        if axis in ("eps", "alpha") and 0 < value < 1:
            k = value * 255  # the CIFAR habit: 8/255 (not for 0.2, which is 51/255)
            if abs(k - round(k)) < 1e-6 and round(k) <= 32:
                return f"{round(k)}/255"
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return canonical_json(value).replace('"', "").replace(":", "=").replace(",", ", ")
    return str(value)


def _options(options: dict) -> str:
    if not options:
        return ""
    parts = [f"{k}={format_value(k, v)}" for k, v in sorted(options.items())]
    return "(" + ", ".join(parts) + ")"


def _train_dict(spec: StudySpec, point: dict) -> dict:
    """Fixed settings plus one grid point, with the model/mitigation forms unpacked."""
    merged = {**spec.fixed, **point}
    out = {k: v for k, v in merged.items() if k != "model"}
    if "model" in merged:
        out["model"] = merged["model"]["name"]
        out["model_kwargs"] = {**(merged.get("model_kwargs") or {}), **merged["model"]["kwargs"]}
    return out


def _evaluation(spec: StudySpec, train: dict) -> dict:
    ev = spec.evaluation
    eps = ev.eps if ev.eps is not None else train["eps"]
    if not eps > 0:
        raise ConfigError("the evaluation needs eps > 0: set 'eps' (an axis or fixed) or "
                          "'evaluation: {eps: ...}'")
    check_eps(eps, train["norm"], what="evaluation eps")  # audit's and train's rule
    attacks = []
    for a in ev.attacks:
        settings = {"eps": eps, "norm": train["norm"], **a.settings}
        attacks.append({"column": a.column, "attack": a.name, "settings": settings})
    return {"attacks": attacks, "n": ev.n, "batch_size": ev.batch_size, "seed": ev.seed}


def _resolve(spec: StudySpec, point: dict) -> dict:
    from ..attacks import build_attack
    from ..training.config import TrainConfig

    cfg = TrainConfig.from_dict(_train_dict(spec, point), **spec.runtime)
    train = cfg.identity()
    evaluation = _evaluation(spec, train)
    for a in evaluation["attacks"]:
        try:
            build_attack(a["attack"], **a["settings"])
        except RobustfairError as exc:
            raise ConfigError(f"attack {a['column']!r}: {exc}") from None
    return {"schema": SCHEMA, "train": train, "evaluation": evaluation}


def expand(spec: StudySpec) -> list[Run]:
    """Every run of the study, in the order the spec writes its axes; duplicates once.

    A run whose settings do not fit together raises ``FILE:LINE: run <axes>: <problem>``.
    """
    _check_grid_size(spec)
    points: list[tuple[int, dict]] = []
    for b, block in enumerate(spec.blocks):
        axes = list(block)
        for values in itertools.product(*(block[a] for a in axes)):
            points.append((b, dict(zip(axes, values))))
    if not points:
        raise ConfigError(f"{spec.source}:1: empty grid: no runs")
    all_axes = spec.axes
    varying = [a for a in all_axes if a != "seed" and
               len({format_value(a, p[a]) if a in p else "-" for _, p in points}) > 1]
    runs: dict[str, Run] = {}
    for b, point in points:
        axes = {a: format_value(a, v) for a, v in point.items()}
        label = ", ".join(f"{a}={axes[a]}" for a in varying if a in axes) or spec.name
        try:
            config = _resolve(spec, point)
        except RobustfairError as exc:
            line = _line_of(spec.block_lines[b] if b < len(spec.block_lines) else {}, str(exc))
            where = ", ".join(f"{a}={v}" for a, v in axes.items())
            raise ConfigError(f"{spec.source}:{line}: run {where}: {exc}") from None
        key = config_hash(config)
        if key not in runs:
            runs[key] = Run(key=key, config=config, axes=axes, label=label)
    return list(runs.values())


def _check_grid_size(spec: StudySpec) -> None:
    """Refuse a grid of more than :data:`MAX_RUNS` points, counted without expanding it."""
    total = 0
    for block in spec.blocks:
        total += math.prod(len(values) for values in block.values())
        if total > MAX_RUNS:
            break
    if total > MAX_RUNS:
        sizes = " + ".join("x".join(str(len(v)) for v in block.values()) or "1"
                           for block in spec.blocks)
        raise ConfigError(f"{spec.source}:1: the grid has {sizes} points, more than "
                          f"{MAX_RUNS} runs; split it into several studies")


def _line_of(lines: dict[str, int], message: str) -> int:
    """The line of the setting a message names first (else of the block it came from)."""
    found = [(m.start(), lines[name]) for name in lines if name
             for m in [re.search(rf"\b{re.escape(name)}\b", message)] if m]
    return min(found)[1] if found else lines.get("", 1)
