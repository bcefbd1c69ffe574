"""``TrainConfig``: every setting of a training run, validated, from a dict or YAML plus overrides.

The config is the identity of a run directory: a run is resumed only by the same config.
A few settings change how fast a run goes but not what it computes, and may differ on resume
(:data:`RUNTIME_KEYS`: device, AMP, compile, channels-last, data directory).

>>> cfg = TrainConfig.from_dict({"objective": "pgd_at", "eps": "8/255", "lr": "0.1"})
>>> round(cfg.eps * 255, 3), cfg.attack_alpha() * 255
(8.0, 2.0)
>>> cfg.differences(cfg.replace(epochs=3))
['epochs']
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from .._checks import as_bool
from .._parse import check_eps, parse_number
from ..errors import ConfigError

NORMS = ("linf", "l2")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
KEEP_RULES = ("last", "best_avg", "best_avg_worst")
PAD_MODES = ("reflect", "zeros")
AMP_MODES = ("auto", "off", "on", "bf16", "fp16")

# settings that decide speed, not results: they may change between a run and its resumption
RUNTIME_KEYS = ("device", "amp", "compile", "channels_last", "data_dir")
# settings added after runs were stored without them: the value such a stored run ran with
LEGACY_VALUES = {"dataset_options": {}, "val_min_per_class": 0}


# the groups of settings, in the order ``robustfair train --help`` shows them
DATA, ATTACK, OPTIM = "data and model", "objective and training attack", "optimisation"
AUGMENT, EVAL = "augmentation", "evaluation, checkpoint rule, fast-AT guard"
MITIGATE, SPEED = "mitigations", "speed (runtime: may change when a run resumes)"


def _objectives() -> tuple[str, ...]:
    from .objectives import list_objectives  # (needs torch: only when asked)

    return tuple(list_objectives())


def _datasets() -> tuple[str, ...]:
    from ..data import list_datasets

    return tuple(list_datasets())


def _models() -> tuple[str, ...]:
    from ..models import list_models

    return tuple(list_models())


def setting(default: Any = None, help: str = "", *, group: str, factory: Any = None,
            choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
            cli: str | None = None, metavar: str | None = None, const: Any = None,
            bool_words: tuple[str, str] | None = None,
            item: Callable[[Any], Any] | None = None) -> Any:
    """A TrainConfig field and what the CLI, the study spec and the coercion read from it.

    ``help`` and ``group`` make its ``robustfair train`` flag; ``choices`` (names, or a function
    giving a registry's names) are checked and listed; ``cli``: ``None`` for a generated
    ``--name`` flag, ``"comma"`` for a comma-separated list, or the hand-written flag that sets
    it (e.g. ``"--model-arg"``); ``const``: the value of the bare flag (``--amp``);
    ``bool_words``: the names YAML's false/true stand for (``amp: off``); ``item``: coerces
    each element of a list field.
    """
    meta = {"help": help, "group": group, "choices": choices, "cli": cli, "metavar": metavar,
            "const": const, "bool_words": bool_words, "item": item}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _milestone(value: Any) -> float:
    return parse_number(value, what="milestone")


@dataclass
class TrainConfig:
    """A training run. Numbers may be given as strings such as ``"8/255"``.

    Attack settings (``eps``, ``norm``, ``steps``, ``alpha``) are those of the training attack;
    the per-epoch evaluation uses PGD-``eval_steps`` at the same ``eps`` on a stratified
    validation split carved from train (``val_fraction``, at most ``val_max`` points, but at
    least ``val_min_per_class`` per class where a quarter of the class covers it), so the test
    split stays untouched. Adaptive mitigations and the ``best_*`` checkpoint rules steer on
    that split: with 12 points a class accuracy moves in steps of 8 points, so the default
    asks for 50 (about 7 points of binomial noise at 50%), and training warns below 30.
    ``dataset_options`` go to the data set's loader (``load_dataset(dataset, **options)``).

    Each field is declared once, with :func:`setting`: its type (the annotation) decides how a
    value from YAML, a study spec or the command line is coerced (:func:`coerce_setting`), and
    its help, group and choices make its ``robustfair train`` flag.
    """

    # what is trained
    dataset: str = setting("digits", "data set", group=DATA, choices=_datasets, metavar="NAME")
    dataset_options: dict = setting(
        factory=dict, group=DATA, cli="--dataset-option",
        help="the data set loader's options, e.g. {spread: 0.3}")
    model: str = setting("small_cnn", "architecture", group=DATA, choices=_models, metavar="NAME")
    model_kwargs: dict = setting(factory=dict, group=DATA, cli="--model-arg",
                                 help="extra model arguments, e.g. {width: 16}")
    objective: str = setting("pgd_at", "training objective", group=ATTACK, choices=_objectives,
                             metavar="NAME")
    # training attack
    eps: float = setting(8 / 255, "attack radius, e.g. 8/255 (also used by the per-epoch "
                         "evaluation)", group=ATTACK)
    norm: str = setting("linf", "attack norm", group=ATTACK, choices=NORMS)
    steps: int = setting(10, "training attack steps", group=ATTACK)
    alpha: float | None = setting(None, "training attack step size (default 2.5*eps/steps, "
                                  "Madry; fgsm_rs 1.25*eps, Wong)", group=ATTACK)
    beta: float = setting(6.0, "TRADES trade-off", group=ATTACK)
    trades_start: float = setting(0.001, "std of TRADES' Gaussian random start", group=ATTACK)
    # optimisation
    epochs: int = setting(10, "training epochs", group=OPTIM)
    batch_size: int = setting(128, "training batch size", group=OPTIM)
    optimizer: str = setting("sgd", "optimiser", group=OPTIM, choices=OPTIMIZERS)
    lr: float = setting(0.1, "(peak) learning rate, e.g. 0.1 or 2e-3", group=OPTIM)
    momentum: float = setting(0.9, "momentum (sgd) or beta1 (adam)", group=OPTIM)
    nesterov: bool = setting(False, "Nesterov momentum (sgd)", group=OPTIM)
    weight_decay: float = setting(5e-4, "weight decay", group=OPTIM)
    schedule: str = setting("cosine", "learning-rate schedule", group=OPTIM, choices=SCHEDULES)
    milestones: list = setting(factory=lambda: [0.5, 0.75], group=OPTIM, cli="comma",
                               item=_milestone,
                               help="step schedule milestones as fractions of training, "
                                    "e.g. 0.5,0.75")
    gamma: float = setting(0.1, "step schedule's factor at each milestone", group=OPTIM)
    warmup_epochs: float = setting(0.0, "linear warm-up epochs (step and cosine schedules)",
                                   group=OPTIM)
    onecycle_peak: float = setting(0.4, "fraction of training at which one-cycle peaks",
                                   group=OPTIM)
    label_smoothing: float = setting(0.0, "label smoothing", group=OPTIM)
    ema: float | None = setting(None, "keep an exponential moving average of the weights with "
                                "this decay (e.g. 0.999) and evaluate it", group=OPTIM,
                                metavar="DECAY")
    seed: int = setting(0, "seed of everything random in training", group=OPTIM)
    # augmentation (batched, on the device)
    augment: bool = setting(True, "random crops and flips", group=AUGMENT)
    pad: int | None = setting(None, "crop padding (default image_size // 8: 4 for 32 px, 1 "
                              "for 8 px)", group=AUGMENT)
    pad_mode: str = setting("reflect", "crop padding mode", group=AUGMENT, choices=PAD_MODES)
    flip: bool | None = setting(None, "random horizontal flips (default: the data set decides, "
                                "yes for natural images)", group=AUGMENT)
    # per-epoch evaluation and the checkpoint rule
    val_fraction: float = setting(0.1, "stratified validation share of train", group=EVAL)
    val_max: int = setting(2000, "validation points at most", group=EVAL)
    val_min_per_class: int = setting(50, "validation points per class at least, where the "
                                     "class can spare them (at most a quarter of its points)",
                                     group=EVAL)
    val_seed: int = setting(0, "seed of the validation split (fixed, so runs with different "
                            "seeds share it)", group=EVAL)
    eval_steps: int = setting(10, "PGD steps of the per-epoch evaluation", group=EVAL)
    eval_batch_size: int = setting(512, "batch size of the per-epoch evaluation", group=EVAL)
    keep: str = setting("last", "final weights: the last epoch's or the best validation "
                        "epoch's", group=EVAL, choices=KEEP_RULES)
    # fgsm_rs's catastrophic-overfitting guard
    co_guard: bool = setting(True, "fgsm_rs: stop on catastrophic overfitting", group=EVAL)
    co_drop: float = setting(0.2, "fgsm_rs guard: stop when validation robust accuracy falls "
                             "by more than this ...", group=EVAL)
    co_floor: float = setting(0.02, "... or falls to at most this from above twice it",
                              group=EVAL)
    # mitigations: [{"name": "class_weight", "weights": {"3": 50}}, ...]
    mitigations: list = setting(factory=list, group=MITIGATE, cli="--mitigation",
                                item=lambda m: _mitigation_entry(m),
                                help="mitigations, each a name or {name: ..., options}")
    # runtime (not part of the run's identity)
    device: str | None = setting(None, "cpu, cuda, cuda:1, mps (default: the fastest "
                                 "available)", group=SPEED)
    amp: str = setting("auto", "mixed precision: on (bf16 where supported, else fp16), bf16, "
                       "fp16, off; auto: on for CUDA, off on CPU", group=SPEED,
                       choices=AMP_MODES, const="on", bool_words=("off", "on"), metavar="MODE")
    compile: bool = setting(False, "torch.compile the model", group=SPEED)
    channels_last: bool | None = setting(None, "channels-last memory format (default: on)",
                                         group=SPEED)
    data_dir: str | None = setting(None, "where data sets are stored", group=SPEED,
                                   metavar="DIR")

    def __post_init__(self) -> None:
        self._coerce()
        self._validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, **overrides: Any) -> "TrainConfig":
        """Build from a mapping (e.g. parsed YAML) with ``overrides`` on top; unknown keys fail."""
        merged = dict(data or {})
        merged.update({k: v for k, v in overrides.items()})
        _check_keys(merged, "training option")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in merged if k not in known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a YAML (or JSON) mapping of options, then apply ``overrides``."""
        from .._yaml import load_yaml

        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {str(p)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config {str(p)!r} is not UTF-8 text") from None
        data = load_yaml(text, str(p))  # plain values only; alias bombs refused
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config {str(p)!r} must hold a mapping of options")
        return cls.from_dict(data, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """The settings that decide a run's result (everything except :data:`RUNTIME_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}

    def differences(self, other: "TrainConfig | Mapping[str, Any]") -> list[str]:
        """Names of the identity settings in which ``other`` differs from this config."""
        mine = self.identity()
        theirs = other.identity() if isinstance(other, TrainConfig) else {
            k: v for k, v in {**LEGACY_VALUES, **dict(other)}.items() if k not in RUNTIME_KEYS}
        keys = sorted(set(mine) | set(theirs))
        return [k for k in keys if mine.get(k) != theirs.get(k)]

    # ------------------------------------------------------------------ derived values
    def attack_alpha(self) -> float:
        """The training attack's step size (its default depends on the objective)."""
        if self.alpha is not None:
            return self.alpha
        if self.objective == "fgsm_rs":
            return 1.25 * self.eps
        return 2.5 * self.eps / self.steps

    def eval_alpha(self) -> float:
        """Step size of the per-epoch evaluation PGD: 2.5·eps/steps."""
        return 2.5 * self.eps / self.eval_steps

    # ------------------------------------------------------------------ checks
    def _coerce(self) -> None:
        for f in fields(self):
            setattr(self, f.name, coerce_setting(f.name, getattr(self, f.name)))

    def _validate(self) -> None:
        from .objectives import OBJECTIVES  # (the objectives need torch; the config does not)

        OBJECTIVES.get(self.objective)  # an unknown name: a one-line error with the choices
        for f in fields(self):  # the settings that take one of a few fixed names
            if isinstance(f.metadata.get("choices"), tuple):
                _choice(getattr(self, f.name), f.metadata["choices"], f.name)
        check_eps(self.eps, self.norm)  # the same rule as audit's and explain's --eps
        if self.objective != "standard" and self.eps == 0:
            raise ConfigError(f"objective {self.objective!r} needs eps > 0")
        if self.objective == "standard" and any(m["name"] == "class_eps" for m in self.mitigations):
            raise ConfigError("class_eps sets the training attack's radius per class, but "
                              "objective 'standard' has no training attack; use pgd_at, "
                              "trades or fgsm_rs")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        _positive(self, "steps", "epochs", "batch_size", "eval_steps", "eval_batch_size",
                  "val_max", "lr")
        for name in ("beta", "trades_start", "momentum", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov needs the sgd optimizer with momentum > 0")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must lie in (0, 1], got {self.gamma}")
        if any(not 0 < m < 1 for m in self.milestones) or self.milestones != sorted(self.milestones):
            raise ConfigError("milestones must be increasing fractions of training in (0, 1)")
        if not 0 < self.onecycle_peak < 1:
            raise ConfigError(f"onecycle_peak must lie in (0, 1), got {self.onecycle_peak}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError("warmup_epochs must be shorter than the run")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"ema decay must lie in (0, 1), got {self.ema}")
        if self.pad is not None and self.pad < 0:
            raise ConfigError(f"pad must be >= 0, got {self.pad}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not 0 < self.co_drop <= 1 or not 0 <= self.co_floor < 1:
            raise ConfigError("co_drop must lie in (0, 1] and co_floor in [0, 1)")
        if self.val_min_per_class < 0:
            raise ConfigError(f"val_min_per_class must be >= 0, got {self.val_min_per_class}")
        if self.seed < 0 or self.val_seed < 0:
            raise ConfigError("seeds must be >= 0")


# ------------------------------------------------------------------ coercion, from the fields
def setting_fields() -> dict[str, dataclasses.Field]:
    """TrainConfig's fields by name (each with its :func:`setting` metadata)."""
    return {f.name: f for f in fields(TrainConfig)}


def setting_choices(name: str) -> tuple[str, ...] | None:
    """The names a setting takes (a registry's, asked now), or None for a free value.

    >>> setting_choices("norm"), setting_choices("lr")
    (('linf', 'l2'), None)
    """
    choices = setting_fields()[name].metadata.get("choices")
    return choices() if callable(choices) else choices


def coerce_setting(name: str, value: Any) -> Any:
    """A value of TrainConfig's setting ``name`` in canonical form, by the field's annotation.

    The one coercion of the config loader, the study spec and the CLI: numbers may be text
    (``"8/255"``), integers must be whole, switches take true/false/yes/no/on/off, names are
    trimmed (and lower-cased where there are fixed choices), mappings and lists hold plain
    values. A bad value is a one-line ConfigError naming the setting.

    >>> coerce_setting("eps", "8/255") * 255, coerce_setting("steps", "10"), coerce_setting("amp", False)
    (8.0, 10, 'off')
    >>> coerce_setting("epochs", "ten")
    Traceback (most recent call last):
    ...
    robustfair.errors.ConfigError: epochs must be an integer, got 'ten'
    """
    f = setting_fields()[name]
    kind, _, optional = str(f.type).partition("|")
    kind, meta = kind.strip(), f.metadata
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} needs a value ({kind}), got nothing")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return parse_number(value, what=name)
    if kind == "int":
        return _as_int(value, name)
    if kind == "bool":
        return as_bool(value, name)
    if kind == "str":
        if isinstance(value, bool) and meta.get("bool_words"):  # YAML reads `amp: off` as false
            return meta["bool_words"][value]
        if isinstance(value, (bool, dict, list, tuple)):
            raise ConfigError(f"{name} must be a name, got {value!r}")
        text = str(value).strip()
        # fixed names and objectives are matched lower-case; data set and model names as given
        return text.lower() if meta.get("choices") is not None and name not in (
            "dataset", "model") else text
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, e.g. {{key: value}}, got {value!r}")
        _check_keys(value, f"{name} key")
        return _plain(dict(value), name)
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        item = meta.get("item")
        return [item(v) for v in value] if item else _plain(list(value), name)
    raise AssertionError(f"TrainConfig.{name}: no coercion for the annotation {f.type!r}")


def _plain(value: Any, name: str) -> Any:
    """``value`` as plain JSON values (what a run folder can record and compare)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must hold plain values, got {value!r}") from None


def _check_keys(mapping: Mapping, what: str) -> None:
    """Option names are strings (YAML reads ``1: 2`` as an integer key)."""
    for key in mapping:
        if not isinstance(key, str):
            raise ConfigError(f"{what} names must be text, got {key!r}")


def _choice(value: str, options: tuple[str, ...], what: str) -> None:
    if value not in options:
        raise ConfigError(f"unknown {what} {value!r}; choose from: {', '.join(options)}")


def _positive(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(cfg, name)}")


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if not isinstance(value, (float, str)):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    try:
        number = parse_number(value, what=what)
    except ConfigError:
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    return int(number)


def _mitigation_entry(entry: Any) -> dict[str, Any]:
    """``"name"`` or ``{"name": ..., **options}`` -> ``{"name": ..., **options}`` (JSON-able)."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"a mitigation must be a name or a mapping with a 'name', got {entry!r}")
    try:
        return json.loads(json.dumps(dict(entry)))
    except (TypeError, ValueError):
        raise ConfigError(f"mitigation options must be plain values, got {entry!r}") from None
