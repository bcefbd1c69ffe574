"""The study presets shipped with the package (``study/presets/*.yaml``), by name.

>>> "digits-quick" in list_presets()
True
>>> load_preset("digits-quick").name
'digits-quick'
"""
from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from .spec import StudySpec, load_spec, parse_spec

__all__ = ["list_presets", "load_preset", "preset_text", "resolve_spec"]


def _folder():
    return resources.files("robustfair.study").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _folder().iterdir()
                  if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of a preset; a one-line error naming the presets for an unknown name."""
    if name not in list_presets():
        raise ConfigError(f"no study preset {name!r}; presets: {', '.join(list_presets())}")
    return _folder().joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def load_preset(name: str) -> StudySpec:
    """A shipped preset, validated (errors name ``<preset>.yaml`` and the line)."""
    return parse_spec(preset_text(name), source=f"{name}.yaml")


def resolve_spec(spec_or_preset: str | Path) -> StudySpec:
    """A spec file if the path exists, else a preset of that name."""
    path = Path(spec_or_preset)
    if path.is_file():
        return load_spec(path)
    if str(spec_or_preset) in list_presets():
        return load_preset(str(spec_or_preset))
    if path.suffix in (".yaml", ".yml") or "/" in str(spec_or_preset):
        raise ConfigError(f"study spec {str(spec_or_preset)!r} does not exist")
    close = difflib.get_close_matches(str(spec_or_preset), list_presets(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{str(spec_or_preset)!r} is neither a spec file nor a preset{hint}; "
                      f"presets: {', '.join(list_presets())}")
