"""Import the optional third-party model libraries (timm, RobustBench), or say in one line which
package fails to load and what to install.

A failing import deep inside timm or RobustBench usually has one cause further down: torchvision
built for another torch (``operator torchvision::nms does not exist``), or a dependency that is
not installed. The checks below name that package instead of the one the user asked for.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import warnings

from ..errors import ModelError

# a torch/torchvision pair known to load together (the [timm] and [robustbench] extras pin it)
TORCH_PAIR = ("2.14.1", "0.29.1")
PAIR_HINT = f"install the matching pair, torch {TORCH_PAIR[0]} with torchvision {TORCH_PAIR[1]}"
TIMM_INSTALL = "pip install 'robustfair[timm]'"
ROBUSTBENCH_INSTALL = "pip install 'robustfair[robustbench]'"


def _named(package: str) -> str:
    """``"timm 1.0.9"``, or the bare name where the package records no version."""
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a half-imported parent, or a module without a spec
        return module in sys.modules


def _quietly(module: str):
    """Import ``module`` without the deprecation chatter of third-party imports."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def import_torchvision(needed_by: str, install: str):
    """torchvision, or a one-line :class:`ModelError` saying why it does not load."""
    if not _installed("torchvision"):
        raise ModelError(f"{needed_by} needs torchvision, which is not installed: {install} "
                         f"(torch {TORCH_PAIR[0]} with torchvision {TORCH_PAIR[1]})")
    try:
        return _quietly("torchvision")
    except Exception as exc:  # typically RuntimeError: operator torchvision::nms does not exist
        import torch

        raise ModelError(f"{_named('torchvision')} does not load beside this torch "
                         f"{torch.__version__} ({_reason(exc)}): {PAIR_HINT} ({install})") from None


def _import_package(module: str, package: str, needed_by: str, install: str):
    try:
        return _quietly(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a module"
        if missing == "pkg_resources":  # removed from setuptools 81
            missing = "pkg_resources (setuptools < 81)"
        raise ModelError(f"{_named(package)} is installed but needs {missing}, which "
                         f"is not installed: {install}") from None
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{_named(package)} is installed but does not import "
                         f"({_reason(exc)}); {needed_by} needs it: {install}") from None


def import_timm(needed_by: str = "timm:NAME"):
    """timm, or a one-line :class:`ModelError` naming the package that fails and why."""
    if sys.modules.get("timm") is not None:  # imported already: it loads
        return sys.modules["timm"]
    if not _installed("timm"):
        raise ModelError(f"{needed_by} needs timm, which is not installed: {TIMM_INSTALL} "
                         f"(it pins torch {TORCH_PAIR[0]} with torchvision {TORCH_PAIR[1]})")
    import_torchvision(_named('timm'), TIMM_INSTALL)
    return _import_package("timm", "timm", needed_by, TIMM_INSTALL)


def alias_autoattack() -> None:
    """Let ``import autoattack`` find ``pyautoattack`` where only the latter is installed."""
    # RobustBench imports the official AutoAttack under its GitHub name, `autoattack` (a git
    # dependency, not on the package index); the same code is on the index as `pyautoattack`,
    # which RobustBench 1.1.1 itself requires: make the old name point at it.
    if sys.modules.get("autoattack") is not None or _installed("autoattack") or not _installed("pyautoattack"):
        return
    sys.modules["autoattack"] = _quietly("pyautoattack")
    sys.modules["autoattack.state"] = _quietly("pyautoattack.state")  # robustbench.eval imports it


def import_robustbench(needed_by: str = "robustbench:NAME"):
    """``robustbench.utils`` (its ``load_model``) with RobustBench's zoo imported, or a one-line
    :class:`ModelError` naming the package that fails and why."""
    if not _installed("robustbench"):
        raise ModelError(f"{needed_by} needs RobustBench, which is not installed: "
                         f"{ROBUSTBENCH_INSTALL} (robustbench 1.1.1, torch {TORCH_PAIR[0]} with "
                         f"torchvision {TORCH_PAIR[1]})")
    import_torchvision(_named('robustbench'), ROBUSTBENCH_INSTALL)
    if _installed("timm"):
        _import_package("timm", "timm", _named('robustbench'), ROBUSTBENCH_INSTALL)
    if not _installed("autoattack") and not _installed("pyautoattack"):
        raise ModelError(f"{_named('robustbench')} needs the official AutoAttack "
                         f"(autoattack, or pyautoattack from the package index), which is not "
                         f"installed: {ROBUSTBENCH_INSTALL}")
    alias_autoattack()
    return _import_package("robustbench.utils", "robustbench", needed_by, ROBUSTBENCH_INSTALL)


def prepare_user_code() -> None:
    """Before importing a user's factory file or module: where RobustBench is installed, make its
    import work there too (the README's factory file calls ``robustbench.utils.load_model``)."""
    if _installed("robustbench"):
        try:
            alias_autoattack()
        except Exception:  # pyautoattack itself broken: robustbench's import will say so
            pass
