"""One positive-integer check (robustfair._checks.positive_int): every option that must be a
whole number of at least 1 refuses 0, negatives, bools and floats with the same one-line
message, as the error type of the room that asks."""
import numpy as np
import pytest

from robustfair._checks import positive_int
from robustfair.data.gaussian import load_gaussian
from robustfair.errors import ConfigError, DataError, RobustfairError
from robustfair.explain.sinks import confusion_sinks
from robustfair.study.executors import run_study


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "2", None])
def test_positive_int_refuses_what_is_not_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ConfigError, match=rf"^steps must be a positive integer, got {bad!r}$"):
        positive_int(bad, "steps")
    assert positive_int(7, "steps") == 7


def test_the_error_is_the_callers_type_or_its_own_constructor():
    with pytest.raises(DataError):
        positive_int(0, "n", DataError)
    made = []
    with pytest.raises(RobustfairError, match="at spec.yaml:3"):
        positive_int(0, "n", lambda message: made.append(message) or RobustfairError(
            f"{message} at spec.yaml:3"))
    assert made == ["n must be a positive integer, got 0"]


def test_the_callers_use_it():
    with pytest.raises(DataError, match="^gaussian: num_classes must be a positive integer, got True$"):
        load_gaussian(num_classes=True)
    with pytest.raises(RobustfairError, match="^top_k must be a positive integer, got 0$"):
        confusion_sinks(np.eye(3, dtype=int), ["a", "b", "c"], top_k=0)
    with pytest.raises(ConfigError, match="^workers must be a positive integer, got 1.5$"):
        run_study(None, "unused", workers=1.5)
