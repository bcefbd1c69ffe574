"""The one exception type users see.

Every problem with a user's input (a bad range, an unknown name, a corrupt file, a bad
config) is raised as a :class:`RobustfairError` with a one-line message that names the
problem. The CLI turns it into ``robustfair: error: <message>`` and exit code 2, never a
traceback. Library callers can catch it like a ``ValueError``.
"""
from __future__ import annotations


class RobustfairError(ValueError):
    """A user-facing error: the message is one line and says what is wrong."""


class DataError(RobustfairError):
    """A data set could not be found, read, downloaded or validated."""


class ModelError(RobustfairError):
    """A model name, its arguments, its output or a checkpoint is wrong."""


class AttackError(RobustfairError):
    """An attack name or setting is wrong."""


class ConfigError(RobustfairError):
    """A configuration (CLI option, training config, study spec) is wrong."""


def one_line(text: str) -> str:
    """The first non-empty line of ``text`` (a message printed after ``robustfair: error:``)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def out_of_memory(exc: MemoryError) -> str:
    """One line for a ``MemoryError``: what was too large (numpy says it: "Unable to allocate
    3.27 GiB for an array with shape ..."), and where it was asked for.

    >>> out_of_memory(MemoryError("Unable to allocate 3.27 GiB for an array"))
    'out of memory: Unable to allocate 3.27 GiB for an array'
    """
    tb = exc.__traceback__
    where = ""
    while tb is not None:  # the innermost robustfair frame says which step asked
        name = tb.tb_frame.f_code.co_filename
        if "robustfair" in name:
            where = f" (in {tb.tb_frame.f_code.co_name}, {name.rsplit('robustfair', 1)[-1].lstrip('/')}:{tb.tb_lineno})"
        tb = tb.tb_next
    what = one_line(str(exc)) or "an allocation was larger than the memory available"
    return f"out of memory: {what}{where}"
