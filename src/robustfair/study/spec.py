"""A study spec: a YAML file naming a grid of training runs and how each run is evaluated.

Every mistake is reported as ``FILE:LINE: what is wrong`` (one line, a
:class:`~robustfair.errors.ConfigError`), with a suggestion for a misspelt name. Lines come
from ``yaml.compose``, which keeps each node's position.

A spec looks like this (every key but ``grid`` is optional)::

    name: digits-quick
    description: small_cnn, standard vs PGD-AT on digits
    expected_time: about 2 min on 2 CPU cores
    grid:                       # the Cartesian product of these axes ...
      objective: [standard, pgd_at]
      seed: [0, 1]
    variants:                   # ... times each of these blocks (each itself a product)
      - {model: small_cnn}
      - {model: [mlp, lenet], optimizer: adam}
    fixed:                      # the same for every run
      dataset: digits
      eps: 0.2
    evaluation:
      n: 300                    # test points (a fixed random subset); omit for all of them
      attacks:
        pgd20: {attack: pgd, steps: 20}
        apgd-ce: {steps: 50}    # ``attack`` defaults to the column name
    resources: {num_gpus: 0, num_cpus: 1}

Axes and fixed settings are :class:`~robustfair.training.TrainConfig` fields, plus the
aliases ``architecture`` (= ``model``), ``optimiser`` and ``mitigation`` (one mitigation, a
list of them, or ``none``). A ``model`` value may be a mapping ``{name: wide_resnet,
depth: 16}``, whose other keys become ``model_kwargs``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .._checks import is_int, is_real, positive_int
from .._parse import parse_number
from ..errors import ConfigError, RobustfairError
from .grid import expand
from .spec_axes import Located, axes_block, did_you_mean, runtime_keys, train_fields

__all__ = [
    "Attack",
    "Evaluation",
    "Resources",
    "StudySpec",
    "load_spec",
    "parse_attacks",
    "parse_resources",
    "parse_spec",
]

TOP_KEYS = ("name", "description", "expected_time", "grid", "variants", "fixed",
            "evaluation", "resources")
EVAL_KEYS = ("n", "attacks", "batch_size", "seed", "eps")
RESOURCE_KEYS = ("num_gpus", "num_cpus")
# ------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class Attack:
    """One evaluation attack: its column name in the audit, registry name and settings."""

    column: str
    name: str
    settings: dict


@dataclass(frozen=True)
class Evaluation:
    """How each trained model is audited on the test split."""

    attacks: tuple[Attack, ...]
    n: int | None = None        # None: the whole test split
    batch_size: int = 256
    seed: int = 0
    eps: float | None = None    # None: each run's training eps


@dataclass(frozen=True)
class Resources:
    """What one run asks of the executor (Ray's ``num_gpus`` / ``num_cpus``)."""

    num_gpus: float = 0.0
    num_cpus: float = 1.0
    num_cpus_given: bool = False  # set in the spec: then it also fixes torch's CPU threads


@dataclass(frozen=True)
class StudySpec:
    """A validated study: grid blocks, fixed settings, the evaluation and resources."""

    name: str
    description: str
    expected_time: str | None
    blocks: tuple[dict, ...]    # each: canonical axis -> list of values (a Cartesian product)
    fixed: dict                 # canonical TrainConfig field -> value
    runtime: dict               # TrainConfig runtime settings (amp, compile ...), not hashed
    evaluation: Evaluation
    resources: Resources
    source: str = "study.yaml"
    text: str = ""
    # where each block's axes and values were written, for errors found later (per run)
    block_lines: tuple[dict, ...] = field(default_factory=tuple, repr=False, compare=False)

    @property
    def axes(self) -> list[str]:
        """Every axis that some block varies or sets, in the order first written."""
        seen: list[str] = []
        for block in self.blocks:
            seen += [a for a in block if a not in seen]
        return seen


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec file (errors name the file and line)."""
    from .._yaml import read_spec_text

    p = Path(path)
    text = read_spec_text(p, "study spec")
    return parse_spec(text, source=str(path))


def parse_spec(text: str, *, source: str = "study.yaml") -> StudySpec:
    """Validate spec ``text``; ``source`` names it in error messages.

    >>> spec = parse_spec("grid: {objective: [standard, pgd_at]}\\nfixed: {dataset: digits, eps: 0.2}")
    >>> spec.blocks[0]["objective"], spec.fixed["eps"]
    (['standard', 'pgd_at'], 0.2)
    >>> parse_spec("grid: {lrr: [0.1]}", source="s.yaml")
    Traceback (most recent call last):
    ...
    robustfair.errors.ConfigError: s.yaml:1: unknown axis 'lrr' (did you mean 'lr'?)
    """
    doc = Located(text, source)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "a study spec must be a mapping (name:, grid:, evaluation: ...)")
    for key in data:
        if key not in TOP_KEYS:
            raise doc.error((key,), f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}", key=True)
    if "grid" not in data:
        raise doc.error((), "the spec has no 'grid:' (the axes to vary, e.g. seed: [0, 1])")

    fields = train_fields()
    grid = axes_block(doc, data["grid"], ("grid",), fields, as_lists=True)
    variants_raw = data.get("variants", [{}])
    if not isinstance(variants_raw, list) or not variants_raw:
        raise doc.error(("variants",), "variants must be a non-empty list of mappings of axes")
    blocks, block_lines = [], []
    for i, raw in enumerate(variants_raw):
        variant = axes_block(doc, raw, ("variants", i), fields, as_lists=True) if raw else {}
        for axis in variant:
            if axis in grid:
                raise doc.error(("variants", i), f"axis {axis!r} is both in grid and in a variant")
        blocks.append({**grid, **variant})
        block_lines.append({axis: doc.line(("grid", axis) if axis in grid else ("variants", i, axis),
                                           key=True) for axis in blocks[-1]} |
                           {"": doc.line(("variants", i) if raw else ("grid",), key=True)})
    if not any(blocks):
        raise doc.error(("grid",), "empty grid: give at least one axis with values (e.g. seed: [0])")

    fixed_all = axes_block(doc, data.get("fixed") or {}, ("fixed",), fields, as_lists=False,
                            allow_runtime=True)
    runtime = {k: v for k, v in fixed_all.items() if k in runtime_keys()}
    fixed = {k: v for k, v in fixed_all.items() if k not in runtime}
    for axis in fixed:
        if any(axis in b for b in blocks):
            raise doc.error(("fixed", axis), f"{axis!r} is both fixed and an axis of the grid",
                            key=True)

    fixed_lines = {k: doc.line(("fixed", k), key=True) for k in fixed_all}
    block_lines = [{**fixed_lines, **lines} for lines in block_lines]
    spec = StudySpec(
        name=_string(doc, data, "name", default=Path(source).stem),
        description=_string(doc, data, "description", default=""),
        expected_time=_string(doc, data, "expected_time", default=None),
        blocks=tuple(blocks),
        fixed=fixed,
        runtime=runtime,
        evaluation=_evaluation(doc, data.get("evaluation") or {}),
        resources=parse_resources(doc, data.get("resources") or {}),
        source=source,
        text=text,
        block_lines=tuple(block_lines),
    )
    expand(spec)  # every run must build: catches cross-setting mistakes now
    return spec


def _string(doc: Located, data: dict, key: str, default: str | None) -> str | None:
    if key not in data or data[key] is None:
        return default
    if not isinstance(data[key], (str, int, float)) or isinstance(data[key], bool):
        raise doc.error((key,), f"{key} must be a string")
    return str(data[key])


_COLUMN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------ evaluation
def _evaluation(doc: Located, raw: Any) -> Evaluation:
    where = ("evaluation",)
    if not isinstance(raw, dict):
        raise doc.error(where, "evaluation must be a mapping (attacks:, n:, ...)")
    for key in raw:
        if key not in EVAL_KEYS:
            raise doc.error(where + (key,), f"unknown evaluation key {key!r}{did_you_mean(key, EVAL_KEYS)}",
                            key=True)
    n = raw.get("n")
    if n in (None, "all"):
        n = None
    elif not is_int(n) or n < 1:
        raise doc.error(where + ("n",), f"evaluation n must be a positive integer or 'all', got {n!r}")
    batch_size = raw.get("batch_size", 256)
    positive_int(batch_size, "batch_size", lambda message: doc.error(where + ("batch_size",), message))
    seed = raw.get("seed", 0)
    if not is_int(seed) or seed < 0:
        raise doc.error(where + ("seed",), f"seed must be a non-negative integer, got {seed!r}")
    eps = raw.get("eps")
    if eps is not None:
        try:
            eps = parse_number(eps, what="evaluation eps")
        except ConfigError as exc:
            raise doc.error(where + ("eps",), str(exc)) from None
        if eps <= 0:
            raise doc.error(where + ("eps",), f"evaluation eps must be > 0, got {eps}")

    # no attacks named: the reliable evaluation (AutoAttack, standard version)
    attacks = parse_attacks(doc, raw.get("attacks", {"autoattack": {"attack": "autoattack"}}),
                            where + ("attacks",))
    return Evaluation(attacks=tuple(attacks), n=n, batch_size=batch_size, seed=seed, eps=eps)


def parse_attacks(doc: Located, raw: Any, where: tuple) -> tuple[Attack, ...]:
    """An attack list as a spec writes it, checked at its lines: one name (``autoattack``), a
    list of names or of ``column: {attack: NAME, settings...}``, or such a mapping. Each
    attack is built once with a placeholder eps, so a wrong setting is caught at its line.

    >>> doc = Located("attacks: [pgd, {pgd5: {attack: pgd, steps: 5}}]", "s.yaml")
    >>> [(a.column, a.name, a.settings) for a in parse_attacks(doc, doc.data["attacks"], ("attacks",))]
    [('pgd', 'pgd', {}), ('pgd5', 'pgd', {'steps': 5})]
    """
    from ..attacks import build_attack, list_attacks

    attacks_raw = {raw: {}} if isinstance(raw, str) else raw
    if isinstance(attacks_raw, list):  # [pgd, apgd-ce] or [{pgd20: {...}}, ...]
        merged: dict = {}
        for i, item in enumerate(attacks_raw):
            if isinstance(item, str):
                merged[item] = {}
            elif isinstance(item, dict) and len(item) == 1:
                merged.update(item)
            else:
                raise doc.error(where + (i,),
                                "each attack must be a name or 'column: {attack: NAME, settings...}'")
        attacks_raw = merged
    if not isinstance(attacks_raw, dict) or not attacks_raw:
        raise doc.error(where, f"{where[-1]} must name at least one attack")
    attacks = []
    for column, settings in attacks_raw.items():
        path = where + (column,)
        if settings is not None and not isinstance(settings, dict):
            raise doc.error(path, f"the settings of attack {column!r} must be a mapping")
        settings = dict(settings or {})
        if not isinstance(column, str) or not _COLUMN.match(column) or column in (
                "clean", "worst", "robust", "target", "index", "y_true"):
            raise doc.error(path, f"attack column name {column!r} must be a plain name "
                                  "(letters, digits, _ . -) and not a reserved word", key=True)
        name = settings.pop("attack", column)
        if name not in list_attacks():
            raise doc.error(path, f"unknown attack {name!r}{did_you_mean(name, list_attacks())}",
                            key="attack" not in (attacks_raw[column] or {}))
        settings = {k: _maybe_number(v) for k, v in settings.items()}
        try:  # a trial build with a placeholder eps checks the setting names and values
            build_attack(name, **{"eps": 0.1, **settings})
        except RobustfairError as exc:
            raise doc.error(path, str(exc)) from None
        attacks.append(Attack(column=column, name=name, settings=settings))
    return tuple(attacks)


def _maybe_number(value: Any) -> Any:
    """``"2/255"`` -> 0.00784...; other strings (``"ce"``) and non-strings unchanged."""
    if isinstance(value, str) and re.fullmatch(r"\s*[-+0-9.eE]+(\s*/\s*[0-9.eE]+)?\s*", value):
        try:
            return parse_number(value)
        except ConfigError:
            return value
    return value


def parse_resources(doc: Located, raw: Any) -> Resources:
    """A ``resources:`` mapping (``num_gpus``, ``num_cpus``): what one job asks of Ray."""
    where = ("resources",)
    if not isinstance(raw, dict):
        raise doc.error(where, "resources must be a mapping (num_gpus:, num_cpus:)")
    for key in raw:
        if key not in RESOURCE_KEYS:
            raise doc.error(where + (key,), f"unknown resource {key!r}{did_you_mean(key, RESOURCE_KEYS)}",
                            key=True)
    values = {}
    for key, default in (("num_gpus", 0.0), ("num_cpus", 1.0)):
        v = raw.get(key, default)
        if not is_real(v) or not math.isfinite(v) or v < 0:
            raise doc.error(where + (key,), f"{key} must be a number >= 0, got {v!r}")
        values[key] = float(v)
    if values["num_cpus"] == 0 and values["num_gpus"] == 0:
        raise doc.error(where, "a run must ask for some CPU or GPU (num_cpus or num_gpus > 0)")
    return Resources(**values, num_cpus_given="num_cpus" in raw)
