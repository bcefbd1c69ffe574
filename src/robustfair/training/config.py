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
from typing import Any, Mapping

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
    """

    # what is trained
    dataset: str = "digits"
    dataset_options: dict = field(default_factory=dict)  # the loader's options, e.g. {"spread": 0.3}
    model: str = "small_cnn"
    model_kwargs: dict = field(default_factory=dict)
    objective: str = "pgd_at"
    # training attack
    eps: float = 8 / 255
    norm: str = "linf"
    steps: int = 10
    alpha: float | None = None         # None: 2.5·eps/steps (Madry); fgsm_rs: 1.25·eps (Wong)
    beta: float = 6.0                  # TRADES trade-off
    trades_start: float = 0.001        # std of TRADES' Gaussian random start
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    gamma: float = 0.1                 # step schedule's factor at each milestone
    warmup_epochs: float = 0.0         # linear warm-up (step and cosine schedules)
    onecycle_peak: float = 0.4         # fraction of training at which one-cycle peaks
    label_smoothing: float = 0.0
    ema: float | None = None           # decay of an exponential moving average of the weights
    seed: int = 0
    # augmentation (batched, on the device)
    augment: bool = True
    pad: int | None = None             # None: image_size // 8 (4 for 32 px, 1 for 8 px)
    pad_mode: str = "reflect"
    flip: bool | None = None           # None: the data set decides (yes for natural images)
    # per-epoch evaluation and the checkpoint rule
    val_fraction: float = 0.1
    val_max: int = 2000
    val_min_per_class: int = 50        # ... but at least this many per class, where the class
                                       # can spare them (at most a quarter of its points)
    val_seed: int = 0                  # fixed, so runs with different seeds share a val split
    eval_steps: int = 10
    eval_batch_size: int = 512
    keep: str = "last"
    # fgsm_rs's catastrophic-overfitting guard
    co_guard: bool = True
    co_drop: float = 0.2               # stop when val robust acc falls by more than this ...
    co_floor: float = 0.02             # ... or falls to at most this from above twice it
    # mitigations: [{"name": "class_weight", "weights": {"3": 50}}, ...]
    mitigations: list = field(default_factory=list)
    # runtime (not part of the run's identity)
    device: str | None = None
    amp: str = "auto"
    compile: bool = False
    channels_last: bool | None = None  # None: on (every device)
    data_dir: str | None = None

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
        for name in ("eps", "beta", "trades_start", "lr", "momentum", "weight_decay", "gamma",
                     "warmup_epochs", "onecycle_peak", "label_smoothing", "val_fraction",
                     "co_drop", "co_floor"):
            setattr(self, name, parse_number(getattr(self, name), what=name))
        for name in ("alpha", "ema"):
            if getattr(self, name) is not None:
                setattr(self, name, parse_number(getattr(self, name), what=name))
        for name in ("steps", "epochs", "batch_size", "seed", "val_max", "val_min_per_class", "val_seed",
                     "eval_steps", "eval_batch_size"):
            setattr(self, name, _as_int(getattr(self, name), name))
        if self.pad is not None:
            self.pad = _as_int(self.pad, "pad")
        for name in ("nesterov", "augment", "co_guard", "compile"):
            setattr(self, name, as_bool(getattr(self, name), name))
        for name in ("flip", "channels_last"):
            if getattr(self, name) is not None:
                setattr(self, name, as_bool(getattr(self, name), name))
        if not isinstance(self.milestones, (list, tuple)):
            raise ConfigError("milestones must be a list of fractions of training, e.g. [0.5, 0.75]")
        self.milestones = [parse_number(m, what="milestone") for m in self.milestones]
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError("model_kwargs must be a mapping")
        _check_keys(self.model_kwargs, "model_kwargs key")
        if not isinstance(self.dataset_options, dict):
            raise ConfigError("dataset_options must be a mapping of the loader's options, "
                              "e.g. {spread: 0.3}")
        try:
            self.dataset_options = json.loads(json.dumps(self.dataset_options))
        except (TypeError, ValueError):
            raise ConfigError(f"dataset_options must hold plain values, "
                              f"got {self.dataset_options!r}") from None
        self.mitigations = [_mitigation_entry(m) for m in (self.mitigations or [])]
        for name in ("objective", "norm", "optimizer", "schedule", "keep", "pad_mode", "amp"):
            setattr(self, name, str(getattr(self, name)).strip().lower())
        self.dataset, self.model = str(self.dataset), str(self.model)
        if self.device is not None:
            self.device = str(self.device)
        if self.data_dir is not None:
            self.data_dir = str(self.data_dir)

    def _validate(self) -> None:
        from .objectives import OBJECTIVES  # (the objectives need torch; the config does not)

        OBJECTIVES.get(self.objective)  # an unknown name: a one-line error with the choices
        _choice(self.norm, NORMS, "norm")
        _choice(self.optimizer, OPTIMIZERS, "optimizer")
        _choice(self.schedule, SCHEDULES, "schedule")
        _choice(self.keep, KEEP_RULES, "keep")
        _choice(self.pad_mode, PAD_MODES, "pad_mode")
        _choice(self.amp, AMP_MODES, "amp")
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
    number = parse_number(value, what=what)
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
