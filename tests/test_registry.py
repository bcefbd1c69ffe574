"""The one Registry behind data sets, models, attacks, objectives and mitigations: a warning on
overwrite, a sorted listing, one-line errors with a did-you-mean and the choices for an unknown
name, and the valid options for an unknown option, found before the constructor runs."""
import warnings

import pytest

from robustfair._registry import Registry
from robustfair.attacks import ATTACKS, build_attack, list_attacks
from robustfair.data import DATASETS, list_datasets, load_dataset
from robustfair.errors import AttackError, ConfigError, DataError, ModelError
from robustfair.models import MODELS, build_model, list_models
from robustfair.training.mitigations import MITIGATIONS, build_mitigation, list_mitigations
from robustfair.training.objectives import OBJECTIVES, build_objective, list_objectives


@pytest.fixture
def shapes():
    calls = []
    shapes = Registry("shape", ConfigError)

    @shapes.register("square")
    def square(side: float = 1.0, *, scale: float = 1.0) -> float:
        calls.append(side)
        return side * side * scale

    @shapes.register("circle")
    def circle(radius: float) -> float:
        calls.append(radius)
        return 3.0 * radius * radius

    shapes.calls = calls
    return shapes


def test_listing_is_sorted_and_leaves_out_private_names(shapes):
    shapes.register("_hidden")(lambda: 0.0)
    assert shapes.names() == ["circle", "square"]
    assert "square" in shapes and "_hidden" in shapes and "triangle" not in shapes
    assert shapes.build("_hidden") == 0.0  # unlisted, still buildable


def test_overwriting_a_name_warns_and_the_new_one_wins(shapes):
    with pytest.warns(UserWarning, match="shape 'square' was registered already"):
        shapes.register("square")(lambda side=1.0: -1.0)
    assert shapes.build("square") == -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same constructor again is no overwrite
        constructor = shapes.get("circle")
        shapes.register("circle")(constructor)


def test_unknown_name_is_one_line_with_did_you_mean_and_the_choices(shapes):
    with pytest.raises(ConfigError) as err:
        shapes.get("sqare")
    assert str(err.value) == ("unknown shape 'sqare' (did you mean 'square'?); "
                              "choose from: circle, square")
    with pytest.raises(ConfigError) as err:
        shapes.build("hexagon")
    assert str(err.value) == "unknown shape 'hexagon'; choose from: circle, square"


def test_bad_options_are_found_before_the_constructor_runs(shapes):
    with pytest.raises(ConfigError) as err:
        shapes.build("square", sides=2.0, colour="red")
    assert str(err.value) == ("shape 'square' has no option(s) sides, colour; "
                              "its options are: side, scale")
    with pytest.raises(ConfigError) as err:
        shapes.build("circle")
    assert str(err.value) == "shape 'circle' needs option(s) radius"
    assert shapes.calls == []  # refused from the signature, not from a TypeError afterwards
    assert shapes.build("square", 2.0, scale=0.5) == 2.0
    assert shapes.options("square") == {"side": 1.0, "scale": 1.0}


def test_a_catch_all_constructor_takes_any_option():
    r = Registry("thing", ConfigError)
    r.register("any")(lambda **options: sorted(options))
    assert r.build("any", a=1, b=2) == ["a", "b"]


def test_unregister_gives_back_the_constructor(shapes):
    circle = shapes.get("circle")
    assert shapes.unregister("circle") is circle and "circle" not in shapes
    assert shapes.unregister("circle") is None


@pytest.mark.parametrize("registry,listing,error,kind", [
    (DATASETS, list_datasets, DataError, "dataset"),
    (MODELS, list_models, ModelError, "model"),
    (ATTACKS, list_attacks, AttackError, "attack"),
    (OBJECTIVES, list_objectives, ConfigError, "objective"),
    (MITIGATIONS, list_mitigations, ConfigError, "mitigation"),
])
def test_each_kind_uses_the_registry(registry, listing, error, kind):
    assert isinstance(registry, Registry) and registry.kind == kind and registry.error is error
    assert listing() == registry.names() and len(listing()) >= 4


@pytest.mark.parametrize("build,error,message", [
    (lambda: load_dataset("digitz"), DataError,
     "unknown dataset 'digitz' (did you mean 'digits'?); choose from: cifar10,"),
    (lambda: build_model("small_cn", num_classes=10), ModelError,
     "unknown model 'small_cn' (did you mean 'small_cnn'?); choose from: densenet121,"),
    (lambda: build_attack("pgdd", eps=0.1), AttackError,
     "unknown attack 'pgdd' (did you mean 'pgd'?); choose from: apgd,"),
    (lambda: build_objective("trade"), ConfigError,
     "unknown objective 'trade' (did you mean 'trades'?); choose from: fgsm_rs, pgd_at, "
     "standard, trades"),
    (lambda: build_mitigation("focall"), ConfigError,
     "unknown mitigation 'focall' (did you mean 'focal'?); choose from: adaptive_weight,"),
    (lambda: load_dataset("gaussian", spred=0.1), DataError,
     "dataset 'gaussian' has no option(s) spred; its options are: "),
    (lambda: build_model("mlp", num_classes=10, width=3), ModelError,
     "model 'mlp' has no option(s) width; its options are: hidden"),
    (lambda: build_attack("fgsm", eps=0.1, steps=3), AttackError,
     "attack 'fgsm' has no option(s) steps; its options are: eps, norm, targeted, loss, amp, seed"),
    (lambda: build_objective("trades", bta=6.0), ConfigError,
     "objective 'trades' has no option(s) bta; its options are: steps, norm, beta, trades_start"),
    (lambda: build_mitigation("focal", gama=2.0), ConfigError,
     "mitigation 'focal' has no option(s) gama; its options are: gamma, prior"),
])
def test_each_kind_gives_the_registry_messages(build, error, message):
    with pytest.raises(error) as err:
        build()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
