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
