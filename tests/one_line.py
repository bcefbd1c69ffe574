"""The check every bad-input test makes: the error is one non-empty line of the expected type."""
import pytest

from robustfair.errors import AttackError


def one_line_error(fn, error: type[Exception] = AttackError) -> str:
    """Call ``fn``; it must raise ``error`` with a one-line message, which is returned."""
    with pytest.raises(error) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg
