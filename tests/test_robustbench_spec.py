"""``robustbench:`` specs before RobustBench is imported: their spelling, the options the CLI
fills in for other processes (a ModelSource), and the options that do not go with them. The
loading itself is tested end to end in test_ecosystem.py."""
from __future__ import annotations

import pickle

import pytest

from robustfair.cli import build_parser, main
from robustfair.cli._sources import model_source
from robustfair.errors import ConfigError
from robustfair.models.robustbench import Entry, parse_spec
from robustfair.models.source import DataShape, ModelSource

from one_line import one_line_error


def test_the_explicit_form_names_everything():
    assert parse_spec("cifar100/linf/Rade2021Helper_R18_ddpm", {"dataset": "cifar10"}) == \
        Entry("Rade2021Helper_R18_ddpm", "cifar100", "Linf")
    assert parse_spec("ImageNet/Corruptions/AlexNet", {}) == Entry("AlexNet", "imagenet", "corruptions")


def test_the_short_form_takes_dataset_and_threat_from_the_options():
    assert parse_spec("Standard", {"dataset": "cifar10", "threat_model": "L2"}) == \
        Entry("Standard", "cifar10", "L2")
    msg = one_line_error(lambda: parse_spec("Standard", {"threat_model": "Linf"}), ConfigError)
    assert "robustbench:cifar10/Linf/Standard" in msg


@pytest.mark.parametrize("body, expected", [
    ("cifar11/Linf/Standard", "no data set 'cifar11' (did you mean 'cifar10'?)"),
    ("cifar10/Lnf/Standard", "no threat model 'Lnf' (did you mean 'Linf'?)"),
    ("cifar10/Linf/", "the model name is empty"),
    ("cifar10/Standard", "expected robustbench:NAME or robustbench:DATASET/THREAT/NAME"),
])
def test_misspelt_specs_are_one_line(body, expected):
    assert expected in one_line_error(lambda: parse_spec(body, {}), ConfigError)


def test_the_cli_fills_the_options_a_worker_needs():
    args = build_parser().parse_args(["audit", "--model", "robustbench:Standard", "--dataset", "cifar10",
                                      "--norm", "l2", "--model-dir", "zoo", "--no-download", "--out", "o"])
    source = model_source(args)
    assert dict(source.options) == {"dataset": "cifar10", "threat_model": "L2", "model_dir": "zoo",
                                    "download": False}
    assert pickle.loads(pickle.dumps(source)) == source  # sent to another process as it is
    args = build_parser().parse_args(["audit", "--model", "robustbench:cifar10/Linf/Standard",
                                      "--dataset", "npz:t.npz", "--out", "o"])
    assert dict(model_source(args).options) == {"threat_model": "Linf", "model_dir": "./models",
                                                "download": True}


@pytest.mark.parametrize("field, flag", [("weights", "--weights"), ("normalize", "--normalize"),
                                         ("output_index", "--output-index")])
def test_adapters_do_not_go_with_a_robustbench_entry(field, flag):
    source = ModelSource(spec="robustbench:cifar10/Linf/Standard", **{field: "0" if field != "weights" else "w.pt"})
    msg = one_line_error(lambda: source.build(DataShape(10, 3, 32)), ConfigError)
    assert msg.startswith(f"{flag} does not go with robustbench:cifar10/Linf/Standard")


def test_model_dir_goes_with_robustbench_only(tmp_path, capsys):
    assert main(["audit", "--model", "small_cnn", "--weights", "w.pt", "--model-dir", "zoo",
                 "--dataset", "digits", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "robustfair: error: --model-dir goes with --model robustbench:NAME\n"
