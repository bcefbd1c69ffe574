"""Study specs: validation errors name the file and line; grid expansion; run hashing; presets."""
import hashlib
import json
import textwrap

import pytest
import torch

from robustfair.cli import main
from robustfair.errors import ConfigError
from robustfair.study.catalog import list_presets, load_preset, resolve_spec
from robustfair.study.grid import canonical_json, config_hash, expand, format_value
from robustfair.study.run import evaluation_indices
from robustfair.study.spec import parse_spec

BASE = """\
name: t
grid:
  objective: [standard, pgd_at]
  seed: [0, 1]
fixed:
  dataset: digits
  model: mlp
  eps: 0.2
evaluation:
  n: 50
  attacks:
    pgd5: {attack: pgd, steps: 5}
"""


def spec_of(text: str):
    return parse_spec(textwrap.dedent(text), source="study.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        spec_of(text)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("text, expected", [
    # unknown axis, with a suggestion, on the key's line
    ("grid:\n  seed: [0]\n  lrr: [0.1]\n", "study.yaml:3: unknown axis 'lrr' (did you mean 'lr'?)"),
    # wrong type, on the value's line
    ("grid:\n  epochs:\n    - 5\n    - ten\n", "study.yaml:4: epochs must be an integer"),
    ("grid:\n  lr: [fast]\n", "study.yaml:2: lr 'fast' is not a number"),
    ("grid:\n  seed: [0]\nfixed:\n  schedule: cosin\n", "study.yaml:4: unknown schedule 'cosin' (did you mean 'cosine'?)"),
    # an alias (optimiser) still finds its line when a cross-setting check fails
    ("grid:\n  optimiser: [adam]\n  nesterov: [true]\n", "study.yaml:3: run optimizer=adam, nesterov=True: nesterov needs"),
    # empty axis, empty grid, no grid
    ("grid:\n  seed: []\n", "study.yaml:2: axis 'seed' has no values"),
    ("grid: {}\n", "study.yaml:1: empty grid"),
    ("fixed: {dataset: digits}\n", "study.yaml:1: the spec has no 'grid:'"),
    # registry names
    ("grid:\n  dataset: [digits, cifar11]\n", "study.yaml:2: unknown dataset 'cifar11' (did you mean 'cifar10'?)"),
    ("grid:\n  architecture:\n    - mlp\n    - resnet19\n", "study.yaml:4: unknown model 'resnet19'"),
    ("grid:\n  seed: [0]\nevaluation:\n  attacks:\n    x: {attack: pgdd}\n",
     "study.yaml:5: unknown attack 'pgdd' (did you mean 'pgd'?)"),
    ("grid:\n  mitigation: [none, class_wieght]\n", "study.yaml:2: unknown mitigation 'class_wieght' (did you mean 'class_weight'?)"),
    # an attack setting the attack does not take
    ("grid:\n  seed: [0]\nevaluation:\n  attacks:\n    p: {attack: pgd, stepz: 3}\n", "study.yaml:5: attack 'pgd' has no option(s) stepz"),
    # unknown keys at every level
    ("grid:\n  seed: [0]\nevalution: {}\n", "study.yaml:3: unknown key 'evalution' (did you mean 'evaluation'?)"),
    ("grid:\n  seed: [0]\nevaluation:\n  m: 5\n", "study.yaml:4: unknown evaluation key 'm'"),
    ("grid:\n  seed: [0]\nresources:\n  num_gpu: 1\n", "study.yaml:4: unknown resource 'num_gpu' (did you mean 'num_gpus'?)"),
    ("grid:\n  seed: [0]\n  seed: [1]\n", "study.yaml:3: duplicate key 'seed'"),
    ("grid:\n  seed: [0]\nfixed:\n  seed: 1\n", "study.yaml:4: 'seed' is both fixed and an axis"),
    ("grid:\n  seed: [0]\n  device: [cpu]\n", "study.yaml:3: 'device' is a runtime setting"),
    # settings that do not fit together: the run and its block's line are named
    ("grid:\n  objective: [pgd_at]\nfixed:\n  eps: 0\n", "study.yaml:2: run objective=pgd_at: objective 'pgd_at' needs eps > 0"),
    # not YAML at all
    ("grid:\n  seed: [0\n", "study.yaml:3: not valid YAML"),
])
def test_errors_name_the_line(text, expected):
    assert error_of(text).startswith(expected)


def test_cli_turns_a_spec_error_into_one_line_and_exit_2(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ngrid:\n  seed: [0]\n  optimiser: [sgd, adamm]\n")
    code = main(["study", "run", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [f"robustfair: error: {spec}:4: unknown optimizer 'adamm' "
                                "(did you mean 'adam'?)"]
    assert not (tmp_path / "out").exists()  # nothing is written for a bad spec


def test_unknown_preset_or_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"neither a spec file nor a preset \(did you mean 'digits-quick'\?\); presets: "):
        resolve_spec("digits-quik")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_spec(str(tmp_path / "nope.yaml"))


# ------------------------------------------------------------------------------ grid
def test_grid_is_the_product_of_axes_times_variants():
    spec = spec_of(BASE + "variants:\n  - {optimizer: sgd, lr: 0.1}\n  - {optimizer: adam, lr: [1e-3, 2e-3]}\n")
    runs = expand(spec)
    assert len(runs) == 2 * 2 * (1 + 2)
    combos = {(r.config["train"]["objective"], r.config["train"]["seed"], r.config["train"]["optimizer"],
               r.config["train"]["lr"]) for r in runs}
    assert len(combos) == len(runs)
    assert ("pgd_at", 1, "adam", 0.002) in combos
    # the label names what varies, seed excepted: seeds of one configuration share it
    labels = {r.label for r in runs}
    assert len(labels) == 2 * 3
    assert "objective=pgd_at, optimizer=adam, lr=0.002" in labels


def test_resolved_config_fills_defaults_and_evaluation():
    run = expand(spec_of(BASE))[0]
    train = run.config["train"]
    assert train["momentum"] == 0.9 and train["epochs"] == 10  # TrainConfig defaults, filled in
    assert "device" not in train and "amp" not in train  # runtime settings are not the run's identity
    (attack,) = run.config["evaluation"]["attacks"]
    assert attack == {"column": "pgd5", "attack": "pgd", "settings": {"eps": 0.2, "norm": "linf", "steps": 5}}


def test_evaluation_without_attacks_is_autoattack():
    run = expand(spec_of("grid:\n  seed: [0]\nfixed: {dataset: digits, eps: 0.2}\nevaluation: {n: 50}\n"))[0]
    (attack,) = run.config["evaluation"]["attacks"]
    assert (attack["column"], attack["attack"]) == ("autoattack", "autoattack")


def test_hash_is_sha256_of_sorted_json_and_ignores_spelling():
    runs = expand(spec_of(BASE))
    for r in runs:  # an independent computation of the documented hash
        text = json.dumps(r.config, sort_keys=True, separators=(",", ":"))
        assert r.key == hashlib.sha256(text.encode()).hexdigest()[:16] == config_hash(r.config)
    same = BASE.replace("eps: 0.2", 'eps: "1/5"').replace("seed: [0, 1]", "seed: [0, 1.0]")
    assert [r.key for r in expand(spec_of(same))] == [r.key for r in runs]
    # a runtime setting does not change a run's key; a real setting does
    runtime = BASE.replace("  eps: 0.2\n", "  eps: 0.2\n  amp: off\n")
    assert [r.key for r in expand(spec_of(runtime))] == [r.key for r in runs]
    other = BASE.replace("eps: 0.2", "eps: 0.25")
    assert not {r.key for r in expand(spec_of(other))} & {r.key for r in runs}
    assert len({r.key for r in runs}) == len(runs)


def test_duplicate_points_are_run_once_and_model_mappings_become_kwargs():
    text = BASE.replace("  model: mlp\n", "") + (
        "variants:\n  - {model: mlp}\n  - {model: [mlp, {name: mlp, hidden: [16]}]}\n")
    runs = expand(spec_of(text))
    assert len(runs) == 4 * 2  # the second "mlp" repeats the first
    kwargs = sorted(json.dumps(r.config["train"]["model_kwargs"]) for r in runs)
    assert kwargs.count('{"hidden": [16]}') == 4
    assert format_value("model", {"name": "mlp", "kwargs": {"hidden": [16]}}) == "mlp(hidden=[16])"


def test_mitigation_axis_forms():
    text = BASE.replace("  seed: [0, 1]\n", "  mitigation: [none, focal, {name: class_weight, weights: {\"3\": 5}}]\n")
    runs = expand(spec_of(text))
    mitigations = {canonical_json(r.config["train"]["mitigations"]) for r in runs}
    assert mitigations == {"[]", '[{"name":"focal"}]', '[{"name":"class_weight","weights":{"3":5}}]'}
    assert {r.axes["mitigations"] for r in runs} == {"none", "focal", "class_weight(weights={3=5})"}
    with pytest.raises(ConfigError, match="class_weight needs weights"):  # it would change nothing
        expand(spec_of(BASE.replace("  seed: [0, 1]\n", "  mitigation: [none, class_weight]\n")))


def test_evaluation_points_are_balanced_and_fixed():
    y = torch.arange(10).repeat_interleave(torch.tensor([30, 5, 20, 20, 20, 20, 20, 20, 20, 20]))
    idx = evaluation_indices(y, 50, seed=3)
    counts = torch.bincount(y[idx], minlength=10)
    assert counts.sum() == 50 and counts.max() - counts.min() <= 1
    assert torch.equal(idx, evaluation_indices(y, 50, seed=3))
    assert torch.equal(idx, torch.sort(idx).values) and len(set(idx.tolist())) == 50
    small = evaluation_indices(y, 95, seed=0)  # class 1 runs out: the others fill the rest
    assert torch.bincount(y[small], minlength=10)[1] == 5 and len(small) == 95
    assert torch.equal(evaluation_indices(y, None, seed=0), torch.arange(len(y)))


# ------------------------------------------------------------------------------ presets
EXPECTED_RUNS = {"digits-quick": 4, "digits-universality": 16, "paper-cifar10": 6,
                 "paper-universality": 44, "paper-hparams": 16, "paper-mitigation": 24,
                 "fair-at-benchmark": 36}


def test_every_preset_validates_and_gpu_presets_state_their_time():
    names = list_presets()
    assert set(EXPECTED_RUNS) <= set(names)
    for name in names:
        spec = load_preset(name)
        runs = expand(spec)
        if name in EXPECTED_RUNS:
            assert len(runs) == EXPECTED_RUNS[name], name
        assert spec.expected_time, name
        if spec.resources.num_gpus:
            assert "GPU-hours" in spec.expected_time
            assert "Expected time" in spec.text  # the comment that explains the estimate


def test_paper_presets_use_the_stated_settings():
    cifar = expand(load_preset("paper-cifar10"))
    at = [r for r in cifar if r.config["train"]["objective"] == "pgd_at"][0]
    train = at.config["train"]
    assert (train["model"], train["dataset"], train["steps"]) == ("resnet18", "cifar10", 10)
    assert train["eps"] == pytest.approx(8 / 255) and train["alpha"] == pytest.approx(2 / 255)
    assert {a["attack"] for a in at.config["evaluation"]["attacks"]} == {"pgd", "apgd-ce"}
    mitigation = expand(load_preset("paper-mitigation"))
    weights = sorted({r.config["train"]["mitigations"][0].get("weights", {}).get("cat", 1)
                      for r in mitigation if r.config["train"]["mitigations"]
                      and r.config["train"]["mitigations"][0]["name"] == "class_weight"})
    assert weights == [10, 20, 50, 100]
    assert any(r.config["train"]["mitigations"] == [{"name": "adaptive_weight", "step": 0.05}]
               for r in mitigation)
    datasets = {r.config["train"]["dataset"] for r in expand(load_preset("paper-universality"))}
    assert datasets == {"mnist", "svhn", "cifar10", "cifar100", "cifar100_coarse"}
