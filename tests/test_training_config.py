"""TrainConfig is described once: its fields make the coercion, the study spec's checks and the
``robustfair train`` flags, so a new field cannot be forgotten in one of them."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from robustfair.cli.train import add_parser, config_from_args
from robustfair.errors import ConfigError
from robustfair.study.spec import parse_spec
from robustfair.training.config import TrainConfig, coerce_setting, setting_choices

FIELDS = dataclasses.fields(TrainConfig)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustfair")
    add_parser(parser.add_subparsers())
    return parser


def flags(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices["train"]._actions for s in a.option_strings}


def test_every_field_is_declared_with_help_and_a_group_and_coerces_its_default():
    for f in FIELDS:
        assert f.metadata.get("help") and f.metadata.get("group"), f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert coerce_setting(f.name, default) == default, f.name  # a new type fails here


def test_every_field_has_a_train_flag():
    have = flags(train_parser())
    for f in FIELDS:
        cli = f.metadata["cli"]
        flag = cli if cli not in (None, "comma") else "--" + f.name.replace("_", "-")
        assert flag in have, f"TrainConfig.{f.name} has no robustfair train flag ({flag})"


def _sample(f: dataclasses.Field) -> tuple[list[str], object]:
    """Command-line words setting ``f`` to a value other than its default, and that value."""
    kind = str(f.type).split("|")[0].strip()
    flag = "--" + f.name.replace("_", "-")
    if kind == "bool":
        value = not f.default if f.default is not None else True
        return [flag if value else "--no-" + f.name.replace("_", "-")], value
    if kind == "int":
        return [flag, "3"], 3
    if kind == "float":
        return [flag, "1/4"], 0.25
    if kind == "list":
        return [flag, "0.25,0.5"], [0.25, 0.5]
    choices = setting_choices(f.name)
    value = next(c for c in choices if c != f.default) if choices else "somewhere"
    return [flag, value], value


@pytest.mark.parametrize("f", [f for f in FIELDS if f.metadata["cli"] in (None, "comma")],
                         ids=lambda f: f.name)
def test_each_generated_flag_sets_its_field(f, tmp_path):
    words, value = _sample(f)
    args = train_parser().parse_args(["train", "--out", str(tmp_path), *words])
    assert getattr(config_from_args(args), f.name) == value


def spec_with(name: str, value: object):
    """A study spec fixing ``name`` to ``value`` (written as JSON, which YAML reads as is)."""
    return parse_spec(f"grid:\n  seed: [0]\nfixed:\n  {name}: {json.dumps(value)}\n",
                      source="s.yaml")


@pytest.mark.parametrize("name, value", [
    ("epochs", "ten"), ("epochs", 2.5), ("epochs", True), ("lr", "fast"), ("lr", [0.1]),
    ("nesterov", "maybe"), ("model_kwargs", [1]), ("milestones", 0.5), ("norm", {"a": 1}),
])
def test_the_study_spec_and_the_config_give_the_same_error(name, value):
    with pytest.raises(ConfigError) as direct:
        TrainConfig.from_dict({name: value})
    with pytest.raises(ConfigError) as spec:
        spec_with(name, value)
    assert str(spec.value) == f"s.yaml:4: {direct.value}"


@pytest.mark.parametrize("name, text, value", [
    ("eps", "8/255", 8 / 255), ("steps", "7", 7), ("augment", "no", False),
    ("amp", False, "off"), ("schedule", "Cosine", "cosine"), ("milestones", ["1/2"], [0.5]),
])
def test_one_coercion_for_yaml_the_study_spec_and_the_cli(name, text, value):
    assert coerce_setting(name, text) == value
    assert getattr(TrainConfig.from_dict({name: text}), name) == value
    spec = spec_with(name, text)
    assert {**spec.fixed, **spec.runtime}[name] == value
