"""When timm or RobustBench cannot be imported, the one-line error names the package that fails
and why (a torchvision built for another torch, a missing dependency), never "needs timm"
while timm is installed, never a traceback. Stand-in packages on ``sys.path`` play the broken
installs; the real ones are tested end to end in test_ecosystem.py."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from robustfair.cli import main
from robustfair.errors import ModelError
from robustfair.models import _optional

from one_line import one_line_error


def _package(root: Path, name: str, version: str, code: str) -> None:
    """A package ``name`` whose ``__init__`` runs ``code``, with the metadata of ``version``."""
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(code)
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder first on ``sys.path``; modules imported from it are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        del sys.modules[name]
    importlib.invalidate_caches()


def _hide(monkeypatch, *names: str) -> None:
    """Make ``names`` look uninstalled (``import`` raises ModuleNotFoundError)."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


BROKEN_TORCHVISION = 'raise RuntimeError("operator torchvision::nms does not exist")\n'


def test_torchvision_for_another_torch_is_named_not_timm(site, monkeypatch, tmp_path, capsys):
    _package(site, "torchvision", "0.28.0", BROKEN_TORCHVISION)
    _package(site, "timm", "1.0.9", "import torchvision\n")
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    importlib.invalidate_caches()
    assert main(["audit", "--model", "timm:resnet18", "--dataset", "digits", "--limit", "5",
                 "--attack", "pgd", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (f"torchvision 0.28.0 does not load beside this torch {torch.__version__} (RuntimeError: "
            f"operator torchvision::nms does not exist): install the matching pair, torch 2.14.1 "
            f"with torchvision 0.29.1 (pip install 'robustfair[timm]')") in err
    assert "needs timm" not in err and not (tmp_path / "out").exists()


def test_timm_without_torchvision(site, monkeypatch):
    _package(site, "timm", "1.0.9", "import torchvision\n")
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    _hide(monkeypatch, "torchvision")
    msg = one_line_error(_optional.import_timm, ModelError)
    assert msg.startswith("timm 1.0.9 needs torchvision, which is not installed: pip install 'robustfair[timm]'")


def test_timm_not_installed(monkeypatch):
    _hide(monkeypatch, "timm")
    msg = one_line_error(lambda: _optional.import_timm("timm:resnet18"), ModelError)
    assert msg.startswith("timm:resnet18 needs timm, which is not installed: pip install 'robustfair[timm]'")


def test_timm_that_fails_for_another_reason(site, monkeypatch):
    _package(site, "torchvision", "0.29.1", "")
    _package(site, "timm", "1.0.9", "raise ImportError('cannot import name X from huggingface_hub')\n")
    for name in ("timm", "torchvision"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    msg = one_line_error(_optional.import_timm, ModelError)
    assert msg.startswith("timm 1.0.9 is installed but does not import (ImportError: cannot import "
                          "name X from huggingface_hub)")


@pytest.mark.parametrize("missing, shown", [("geotorch", "geotorch"),
                                             ("pkg_resources", "pkg_resources (setuptools < 81)")])
def test_robustbench_missing_dependency(site, monkeypatch, missing, shown):
    _package(site, "torchvision", "0.29.1", "")
    _package(site, "robustbench", "1.1.1", "")
    (site / "robustbench" / "utils.py").write_text(f"import {missing}\n")
    for name in ("robustbench", "robustbench.utils", "torchvision"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    _hide(monkeypatch, "timm", missing)
    msg = one_line_error(_optional.import_robustbench, ModelError)
    assert msg == (f"robustbench 1.1.1 is installed but needs {shown}, which is not installed: "
                   f"pip install 'robustfair[robustbench]'")


def test_robustbench_finds_pyautoattack_as_autoattack(site, monkeypatch):
    pytest.importorskip("pyautoattack")
    _package(site, "torchvision", "0.29.1", "")
    _package(site, "robustbench", "1.1.1", "")
    # what robustbench 1.1.1's eval.py imports
    (site / "robustbench" / "utils.py").write_text(
        "from autoattack import AutoAttack\nfrom autoattack.state import EvaluationState\n")
    for name in ("robustbench", "robustbench.utils", "torchvision", "autoattack", "autoattack.state"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    _hide(monkeypatch, "timm")
    utils = _optional.import_robustbench()
    import pyautoattack
    import pyautoattack.state

    assert utils.AutoAttack is pyautoattack.AutoAttack
    assert utils.EvaluationState is pyautoattack.state.EvaluationState
