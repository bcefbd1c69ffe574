"""A study spec's YAML, checked where it was written: the document with the line of every key
and value (:class:`Located`), and the grid's axes and fixed settings (names against
:class:`~robustfair.training.TrainConfig` and the registries, values typed and canonical).
Each mistake is one ``FILE:LINE: what is wrong`` :class:`~robustfair.errors.ConfigError`."""
from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from .._registry import did_you_mean as _close_match
from .._yaml import PlainLoader, compose_yaml
from ..errors import ConfigError, RobustfairError

__all__ = ["ALIASES", "Located", "axes_block", "did_you_mean", "runtime_keys", "train_fields"]

ALIASES = {"architecture": "model", "arch": "model", "optimiser": "optimizer",
           "mitigation": "mitigations"}

Path_ = tuple  # a position in the YAML tree: keys and list indices from the root


# ------------------------------------------------------------------------------ YAML + lines
class Located:
    """The parsed YAML plus the line (1-based) of every key and value, found by path."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        # plain tags only, aliases bounded: a foreign tag or an alias bomb is one line
        root = compose_yaml(text, source, merge=False)
        self._loader = PlainLoader("")  # its constructors turn scalar nodes into values
        self.key_lines: dict[Path_, int] = {}
        self.value_lines: dict[Path_, int] = {}
        self.data = {} if root is None else self._walk(root, ())

    def _walk(self, node: yaml.Node, path: Path_) -> Any:
        self.value_lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConfigError(f"{self.source}:{key_node.start_mark.line + 1}: "
                                      "a key must be a plain name")
                key = str(self._loader.construct_object(key_node))
                if key in out:
                    raise ConfigError(f"{self.source}:{key_node.start_mark.line + 1}: "
                                      f"duplicate key {key!r}")
                self.key_lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self._walk(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._walk(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._loader.construct_object(node)

    def line(self, path: Path_, *, key: bool = False) -> int:
        """The line of the value at ``path`` (of its key with ``key=True``), else its parent's."""
        table = self.key_lines if key else self.value_lines
        while path:
            if path in table:
                return table[path]
            path = path[:-1]
        return self.value_lines.get((), 1)

    def error(self, path: Path_, message: str, *, key: bool = False) -> ConfigError:
        return ConfigError(f"{self.source}:{self.line(path, key=key)}: {message}")


def did_you_mean(name: str, options) -> str:
    """`` (did you mean 'x'?)`` for a close match, else ``; choose from: ...``."""
    return _close_match(name, options) or f"; choose from: {', '.join(sorted(options))}"


# ------------------------------------------------------------------------------ axes
def train_fields() -> dict[str, str]:
    """TrainConfig field -> its annotation (``'float'``, ``'int | None'`` ...)."""
    from ..training.config import TrainConfig

    return {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def runtime_keys() -> tuple[str, ...]:
    from ..training.config import RUNTIME_KEYS

    return tuple(RUNTIME_KEYS)


def axes_block(doc: Located, raw: Any, where: Path_, fields: dict[str, str], *,
                as_lists: bool, allow_runtime: bool = False) -> dict[str, Any]:
    """Validate one mapping of axes (``as_lists``: each value a list) -> canonical names."""
    if not isinstance(raw, dict):
        raise doc.error(where, f"{where[0]} must be a mapping of axis: values")
    runtime = set(runtime_keys())
    known = [f for f in fields if allow_runtime or f not in runtime]
    out: dict[str, Any] = {}
    for name, value in raw.items():
        path = where + (name,)
        canonical = ALIASES.get(name, name)
        if canonical not in known:
            what = "setting" if where[0] == "fixed" else "axis"
            if canonical in runtime:
                raise doc.error(path, f"{name!r} is a runtime setting: put it under 'fixed:'", key=True)
            raise doc.error(path, f"unknown {what} {name!r}{did_you_mean(name, list(known) + list(ALIASES))}",
                            key=True)
        if canonical in out:
            raise doc.error(path, f"axis {canonical!r} is given twice (as {name!r} too)", key=True)
        if canonical != name:  # later errors look settings up by their canonical name
            doc.key_lines[where + (canonical,)] = doc.line(path, key=True)
        if as_lists:
            values = value if isinstance(value, list) else [value]  # a list is the axis' values
            if not values:
                raise doc.error(path, f"axis {name!r} has no values: the grid would have no runs")
            out[canonical] = [_check_value(doc, path + ((i,) if isinstance(value, list) else ()),
                                           canonical, v)
                              for i, v in enumerate(values)]
        else:
            out[canonical] = _check_value(doc, path, canonical, value)
    return out


def _check_value(doc: Located, path: Path_, name: str, value: Any) -> Any:
    """Check one value (type and registry names) at its line; return it in canonical form."""
    if name == "model":
        return _model_value(doc, path, value)
    if name == "mitigations":
        return _mitigation_value(doc, path, value)
    if name == "dataset":
        from ..data import list_datasets

        if not isinstance(value, str):
            raise doc.error(path, f"dataset must be a name, got {value!r}")
        if value not in list_datasets():
            raise doc.error(path, f"unknown dataset {value!r}{did_you_mean(value, list_datasets())}")
        return value
    from ..training.config import coerce_setting, setting_choices

    choices = setting_choices(name)
    if choices is not None and isinstance(value, str) and value.strip().lower() not in choices:
        raise doc.error(path, f"unknown {name} {value!r}{did_you_mean(value, choices)}")
    try:  # the config's own coercion, so the spec accepts exactly what TrainConfig does
        return coerce_setting(name, value)
    except ConfigError as exc:
        raise doc.error(path, str(exc)) from None


def _model_value(doc: Located, path: Path_, value: Any) -> dict:
    """``small_cnn`` or ``{name: small_cnn, width: 16}`` -> ``{"name": ..., "kwargs": {...}}``."""
    from ..models import list_models

    if isinstance(value, dict):
        if not isinstance(value.get("name"), str):
            raise doc.error(path, "a model given as a mapping needs a 'name:'")
        kwargs = {k: v for k, v in value.items() if k != "name"}
        name = value["name"]
    elif isinstance(value, str):
        name, kwargs = value, {}
    else:
        raise doc.error(path, f"model must be a name or a mapping with 'name:', got {value!r}")
    if name not in list_models():
        raise doc.error(path, f"unknown model {name!r}{did_you_mean(name, list_models())}")
    return {"name": name, "kwargs": kwargs}


def _mitigation_value(doc: Located, path: Path_, value: Any) -> list[dict]:
    """``none`` / a name / ``{name: ..., options}`` / a list of those -> a list of entries."""
    from ..training.mitigations import build_mitigation, list_mitigations

    if value is None or value == "none" or value == []:
        return []
    items = value if isinstance(value, list) else [value]
    entries = []
    for i, item in enumerate(items):
        here = path + ((i,) if isinstance(value, list) else ())
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise doc.error(here, f"a mitigation must be a name or a mapping with 'name:', got {item!r}")
        if item["name"] not in list_mitigations():
            raise doc.error(here, f"unknown mitigation {item['name']!r}"
                                  f"{did_you_mean(item['name'], list_mitigations())}")
        options = {k: v for k, v in item.items() if k != "name"}
        try:
            build_mitigation(item["name"], **options)
        except RobustfairError as exc:
            raise doc.error(here, str(exc)) from None
        entries.append(dict(item))
    return entries
