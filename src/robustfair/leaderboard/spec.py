"""A leaderboard spec: many models, one data set, one evaluation.

Every mistake is one ``FILE:LINE: what is wrong`` :class:`~robustfair.errors.ConfigError`
(lines from :class:`~robustfair.study.spec_axes.Located`). A spec looks like this (only
``dataset`` and ``models`` are required)::

    name: cifar10-linf          # default: the file's name
    dataset: cifar10            # any data source the audit takes: a name, npz:PATH, image_folder
    eps: 8/255
    norm: linf                  # or l2
    attack: autoattack          # the default; or a list / mapping as in a study's evaluation
    points_per_class: 1000      # a stratified subset, the same points for every model
    seed: 0                     # picks the subset and seeds the attacks
    models:
      - name: standard-wrn
        model: robustbench:Standard
      - name: mine
        model: my_net.py:build  # robustfair name | timm:NAME | file.py:factory | robustbench:NAME
        weights: net.pt
        normalize: cifar10
      - name: trained-here
        checkpoint: runs/a/model.safetensors

Relative paths (``weights``, ``checkpoint``, a factory's file, ``npz:PATH``, ``data_dir``,
``model_dir``) are read relative to the spec's own folder, so a spec travels with its files.

>>> spec = parse_spec("dataset: digits\\neps: 0.1\\nmodels:\\n  - {name: a, model: timm:resnet18}")
>>> spec.models[0].source.spec, spec.eps
('timm:resnet18', 0.1)
>>> parse_spec("dataset: digits\\nmodels:\\n  - {name: a, model: timm:x}\\n  - {name: a, model: timm:y}",
...            source="lb.yaml")
Traceback (most recent call last):
...
robustfair.errors.ConfigError: lb.yaml:4: duplicate model name 'a' (first at line 3)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._checks import is_int
from .._parse import check_eps, parse_number
from ..errors import ConfigError
from ..models.source import ModelSource
from ..study.spec import Attack, Resources, parse_attacks, parse_resources
from ..study.spec_axes import Located, did_you_mean

__all__ = ["LeaderboardSpec", "ModelEntry", "load_spec", "parse_spec"]

TOP_KEYS = ("name", "description", "expected_time", "dataset", "data_dir", "split", "eps", "norm",
            "attack", "points_per_class", "seed", "batch_size", "resources", "models")
MODEL_KEYS = ("name", "model", "checkpoint", "weights", "normalize", "output_index", "model_dir")
NORMS = ("linf", "l2")
# the data sets RobustBench's load_model knows by name, and its names of the threat models
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")
ROBUSTBENCH_THREATS = {"linf": "Linf", "l2": "L2"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")  # a model's name is its folder's name


@dataclass(frozen=True)
class ModelEntry:
    """One model of the leaderboard: its name (its folder under ``models/``), how to build it,
    the entry as written (what a rerun compares) and the line it starts on."""

    name: str
    source: ModelSource
    written: dict
    line: int


@dataclass(frozen=True)
class LeaderboardSpec:
    """A validated leaderboard spec (see the module docstring)."""

    name: str
    dataset: str
    models: tuple[ModelEntry, ...]
    attacks: tuple[Attack, ...]
    eps: float
    eps_text: str
    norm: str = "linf"
    split: str = "test"
    data_dir: str | None = None
    points_per_class: int | None = None
    seed: int = 0
    batch_size: int | str = 256
    resources: Resources = Resources()
    description: str = ""
    expected_time: str | None = None
    source: str = "leaderboard.yaml"
    text: str = ""
    lines: dict = field(default_factory=dict, repr=False, compare=False)  # top key -> line

    def error(self, key: str, message: str) -> ConfigError:
        """A one-line error at the line of top-level ``key`` (for what is found after parsing,
        e.g. a ``points_per_class`` larger than a class)."""
        return ConfigError(f"{self.source}:{self.lines.get(key, 1)}: {message}")

    def settings(self) -> dict:
        """What every model is audited with, as written into the leaderboard folder once."""
        return {"dataset": self.dataset, "split": self.split, "eps": self.eps,
                "eps_text": self.eps_text, "norm": self.norm,
                "attacks": [{"column": a.column, "attack": a.name, "settings": a.settings}
                            for a in self.attacks],
                "points_per_class": self.points_per_class, "seed": self.seed,
                "batch_size": self.batch_size}


def load_spec(path: str | Path) -> LeaderboardSpec:
    """Read and validate a leaderboard spec file (errors name the file and line)."""
    from .._yaml import read_spec_text

    p = Path(path)
    text = read_spec_text(p, "leaderboard spec")
    return parse_spec(text, source=str(path), base=p.resolve().parent)


def parse_spec(text: str, *, source: str = "leaderboard.yaml",
               base: str | Path | None = None) -> LeaderboardSpec:
    """Validate spec ``text``; ``source`` names it in errors, ``base`` is the folder relative
    paths are read from (default: the current one)."""
    doc = Located(text, source)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "a leaderboard spec must be a mapping (dataset:, eps:, models: ...)")
    for key in data:
        if key not in TOP_KEYS:
            raise doc.error((key,), f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}", key=True)
    for key in ("dataset", "models"):
        if key not in data:
            raise doc.error((), f"the spec has no '{key}:'")
    base = Path(base) if base is not None else Path.cwd()

    norm = _choice(doc, data, "norm", NORMS, "linf")
    eps_text = str(data.get("eps", "8/255")).strip()
    try:
        eps = check_eps(parse_number(eps_text, what="eps"), norm, what="eps")
    except ConfigError as exc:
        raise doc.error(("eps",), str(exc)) from None
    if eps == 0:
        raise doc.error(("eps",), "eps must be > 0 (an audit at eps 0 is the clean accuracy)")
    split = _choice(doc, data, "split", ("test", "train"), "test")
    dataset = _dataset(doc, data.get("dataset"), base, split)
    data_dir = data.get("data_dir")
    if data_dir is not None:
        data_dir = str(_path(base, _text(doc, data, "data_dir")))
    if dataset == "image_folder" and data_dir is None:
        raise doc.error(("dataset",), "dataset image_folder needs its folder: data_dir: FOLDER")

    spec = LeaderboardSpec(
        name=_text(doc, data, "name") or Path(source).stem,
        description=_text(doc, data, "description") or "",
        expected_time=_text(doc, data, "expected_time"),
        dataset=dataset,
        data_dir=data_dir,
        split=split,
        eps=eps,
        eps_text=eps_text,
        norm=norm,
        attacks=_attacks(doc, data.get("attack", "autoattack")),
        points_per_class=_count(doc, data, "points_per_class", None),
        seed=_count(doc, data, "seed", 0, minimum=0),
        batch_size=("auto" if data.get("batch_size") == "auto"  # the largest that fits a GPU
                    else _count(doc, data, "batch_size", 256)),
        resources=parse_resources(doc, data.get("resources") or {}),
        models=_models(doc, data["models"], base, dataset, norm),
        source=source,
        text=text,
        lines={key: doc.line((key,), key=True) for key in data},
    )
    return spec


def _attacks(doc: Located, raw: Any) -> tuple[Attack, ...]:
    attacks = parse_attacks(doc, raw, ("attack",))
    for a in attacks:
        for key in ("eps", "norm", "seed"):
            if key in a.settings:  # one evaluation for every model: these are set once, at the top
                raise doc.error(("attack", a.column), f"attack {a.column!r} sets {key}; the leaderboard's "
                                                      f"{key} is set once, at the top ({key}:)")
    return attacks


def _text(doc: Located, data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise doc.error((key,), f"{key} must be a string")
    return str(value)


def _choice(doc: Located, data: dict, key: str, options: tuple[str, ...], default: str) -> str:
    value = str(data.get(key, default)).strip().lower()
    if value not in options:
        raise doc.error((key,), f"{key} must be one of {', '.join(options)}, got {data.get(key)!r}")
    return value


def _count(doc: Located, data: dict, key: str, default: int | None, minimum: int = 1) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if not is_int(value) or value < minimum or value > 10**9:
        raise doc.error((key,), f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _path(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _dataset(doc: Located, value: Any, base: Path, split: str) -> str:
    from ..data import list_datasets

    if not isinstance(value, str) or not value.strip():
        raise doc.error(("dataset",), "dataset must be a data set name, npz:PATH or image_folder")
    value = value.strip()
    if value.startswith("npz:"):
        path = _path(base, value[len("npz:"):])
        if not path.is_file():
            raise doc.error(("dataset",), f"no such file: {path}")
        if split != "test":
            raise doc.error(("split",), "an npz:PATH data set is a test set only")
        return f"npz:{path}"
    if value != "image_folder" and value not in list_datasets():
        raise doc.error(("dataset",), f"unknown data set {value!r}"
                                      f"{did_you_mean(value, list_datasets())}")
    return value


def _models(doc: Located, raw: Any, base: Path, dataset: str, norm: str) -> tuple[ModelEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise doc.error(("models",), "models must be a non-empty list of {name:, model: ...}")
    seen: dict[str, int] = {}
    entries = []
    for i, item in enumerate(raw):
        where = ("models", i)
        line = doc.line(where)
        if not isinstance(item, dict):
            raise doc.error(where, "each model must be a mapping (name:, model: or checkpoint:, ...)")
        for key in item:
            if key not in MODEL_KEYS:
                raise doc.error(where + (key,), f"unknown model key {key!r}"
                                                f"{did_you_mean(key, MODEL_KEYS)}", key=True)
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise doc.error(where + ("name",) if "name" in item else where,
                            f"each model needs a name of letters, digits and _ . + - (at most 100), "
                            f"got {name!r}")
        if name in seen:
            raise doc.error(where + ("name",), f"duplicate model name {name!r} (first at line {seen[name]})")
        seen[name] = doc.line(where + ("name",))
        source = _source(doc, item, where, base, dataset, norm)
        written = {k: v for k, v in item.items() if k != "name"}
        entries.append(ModelEntry(name=name, source=source, written=written, line=line))
    return tuple(entries)


def _source(doc: Located, item: dict, where: tuple, base: Path, dataset: str, norm: str) -> ModelSource:
    """The :class:`ModelSource` of one model entry, with every file checked to exist."""
    from ..models import list_models

    if ("model" in item) == ("checkpoint" in item):
        raise doc.error(where, "give a model exactly one of model: SPEC or checkpoint: FILE")
    for key in ("model", "checkpoint", "weights", "normalize", "model_dir"):
        if key in item and (not isinstance(item[key], str) or not item[key].strip()):
            raise doc.error(where + (key,), f"{key} must be a non-empty string")
    if "checkpoint" in item:
        for key in ("weights", "normalize", "output_index", "model_dir"):
            if key in item:
                raise doc.error(where + (key,), f"{key} goes with model: SPEC; a checkpoint carries its own",
                                key=True)
        path = _path(base, item["checkpoint"])
        if not path.is_file():
            raise doc.error(where + ("checkpoint",), f"checkpoint file not found: {path}")
        return ModelSource(checkpoint=str(path))

    spec = item["model"].strip()
    weights = None
    if "weights" in item:
        weights = _path(base, item["weights"])
        if not weights.is_file():
            raise doc.error(where + ("weights",), f"weights file not found: {weights}")
        weights = str(weights)
    options: dict[str, Any] = {}
    if spec.startswith("robustbench:"):
        if not spec[len("robustbench:"):].strip():
            raise doc.error(where + ("model",), "robustbench:NAME needs a model name after 'robustbench:'")
        if dataset in ROBUSTBENCH_DATASETS:
            options["dataset"] = dataset
        options["threat_model"] = ROBUSTBENCH_THREATS[norm]
        if "model_dir" in item:
            options["model_dir"] = str(_path(base, item["model_dir"]))
    elif "model_dir" in item:
        raise doc.error(where + ("model_dir",), "model_dir goes with a robustbench:NAME model", key=True)
    elif spec.startswith("timm:"):
        if not spec[len("timm:"):].strip():
            raise doc.error(where + ("model",), "timm:NAME needs a model name after 'timm:'")
    elif spec in list_models():
        if weights is None:
            raise doc.error(where + ("model",), f"model {spec} builds an untrained network: "
                                                f"give its weights: (or a checkpoint: saved by robustfair)")
    elif ":" in spec:
        file, _, factory = spec.rpartition(":")
        if not factory.isidentifier():
            raise doc.error(where + ("model",), f"{factory!r} is not a Python name (give FILE.py:factory)")
        if file.endswith(".py") or "/" in file:
            path = _path(base, file)
            if not path.is_file():
                raise doc.error(where + ("model",), f"model file not found: {path}")
            spec = f"{path}:{factory}"
    else:
        raise doc.error(where + ("model",), f"unknown model {spec!r}{did_you_mean(spec, list_models())} "
                                            f"(a robustfair name, timm:NAME, robustbench:NAME or FILE.py:factory)")
    output_index = item.get("output_index")
    if output_index is not None and not (is_int(output_index) and output_index >= 0) and not (
            isinstance(output_index, str) and output_index.isidentifier()):
        raise doc.error(where + ("output_index",), f"output_index must be a position (0, 1, ...) or "
                                                   f"a key name, got {output_index!r}")
    normalize = item.get("normalize")
    if normalize is not None:
        from ..models.external import normalization

        try:  # the channel count is checked when the model is built; here, the syntax
            normalization(normalize, channels=len(normalize.split("/")[0].split(","))
                          if "/" in normalize else 3)
        except Exception as exc:  # noqa: BLE001 - ModelError or a number error: one line
            raise doc.error(where + ("normalize",), str(exc)) from None
    return ModelSource(spec=spec, weights=weights, normalize=normalize, output_index=output_index,
                       options=tuple(sorted(options.items())))
