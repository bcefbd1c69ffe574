"""The leaderboard presets shipped with the package (``leaderboard/presets/*.yaml``), by name.

>>> "robustbench-cifar10-linf" in list_presets()
True
>>> len(load_preset("robustbench-cifar10-linf").models) >= 11
True
"""
from __future__ import annotations

import difflib
from importlib import resources

from ..errors import ConfigError
from .spec import LeaderboardSpec, parse_spec

__all__ = ["list_presets", "load_preset"]


def _folder():
    return resources.files("robustfair.leaderboard").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _folder().iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> LeaderboardSpec:
    """A shipped preset, validated (errors name ``<preset>.yaml`` and the line)."""
    if name not in list_presets():
        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"no leaderboard preset {name!r}{hint}; presets: {', '.join(list_presets())}")
    text = _folder().joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return parse_spec(text, source=f"{name}.yaml")
