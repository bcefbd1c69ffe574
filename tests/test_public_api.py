"""The public API is explicit: every name in ``__all__`` is a real attribute (no lazy
``__getattr__`` tables for editors and type checkers to miss) and is documented. The one
exception is the root package, which loads its rooms on first use (so that ``import
robustfair.attacks`` does not load the study): its names are imported for type checkers under
``if TYPE_CHECKING:``, and a test checks that block against ``__all__``."""
from __future__ import annotations

import ast
import importlib
import inspect

import pytest

PACKAGES = ["robustfair.data", "robustfair.models", "robustfair.attacks",
            "robustfair.metrics", "robustfair.training", "robustfair.explain", "robustfair.study"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_is_a_plain_documented_attribute(name):
    module = importlib.import_module(name)
    assert "__getattr__" not in vars(module), f"{name} still resolves names lazily"
    assert module.__all__, f"{name} exports nothing"
    for public in module.__all__:
        assert public in vars(module), f"{name}.{public} is listed in __all__ but not defined"
        obj = vars(module)[public]
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{name}.{public} has no docstring"


def test_top_level_names_are_the_subpackages_objects():
    import robustfair as rf
    from robustfair.auditing import audit
    from robustfair.metrics import ClassReport

    assert rf.audit is audit and rf.ClassReport is ClassReport
    with pytest.raises(AttributeError):
        rf.no_such_name  # noqa: B018


def test_the_root_names_every_export_for_type_checkers_and_resolves_it():
    import robustfair as rf

    tree = ast.parse(inspect.getsource(rf))
    checked = [node for node in tree.body if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    assert len(checked) == 1
    seen = {alias.asname or alias.name for node in checked[0].body
            for alias in node.names}
    assert seen | {"__version__"} == set(rf.__all__)
    for public in rf.__all__:
        obj = getattr(rf, public)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"robustfair.{public} has no docstring"
    assert set(rf.__all__) <= set(dir(rf))
