"""Bring your own model: build it from a spec, fill in its weights from a file, adapt its ends.

A *model spec* names where the network comes from:

- a robustfair model name (``small_cnn``, ``preact_resnet18``, ...), built for the data set's
  classes, channels and image size;
- ``timm:NAME``, a network from `timm <https://github.com/huggingface/pytorch-image-models>`_
  (the optional extra ``robustfair[timm]``); without weights, timm's own pretrained ones.
  ``timm:NAME?KEY=VALUE&...`` passes options to ``timm.create_model`` (values read as int,
  float, true/false or text, never evaluated), e.g.
  ``timm:vit_tiny_patch16_224?img_size=32&patch_size=4`` for 32x32 images;
- ``robustbench:NAME`` or ``robustbench:DATASET/THREAT/NAME``, an entry of RobustBench's model
  zoo loaded by RobustBench itself (see :mod:`robustfair.models.robustbench`);
- ``path/to/file.py:factory`` or ``package.module:factory``: a callable returning an
  ``nn.Module``. This imports and runs the user's own code: naming it is their explicit choice.
  The factory gets those of ``num_classes``, ``in_channels`` and ``image_size`` it names.

Weights are read without running code: a ``.safetensors`` file, or a PyTorch state dict
(``.pt``/``.pth``/``.bin``/``.ckpt``) read with ``torch.load(weights_only=True)``, which refuses
pickled objects (a whole saved model). Common layouts are unwrapped: the state dict under a
``state_dict`` / ``model`` / ``model_state_dict`` / ``net`` key, and the ``module.`` prefix of
DDP (or ``_orig_mod.`` of ``torch.compile``, ``model.`` of Lightning) when the model's own keys
lack it. Any other difference is a one-line :class:`ModelError` listing missing and unexpected
keys.

>>> import torch
>>> from torch import nn
>>> class TwoHeads(nn.Module):
...     def forward(self, x):
...         return x.flatten(1)[:, :3], x.flatten(1)
>>> SelectOutput(TwoHeads(), 0)(torch.rand(2, 1, 2, 2)).shape
torch.Size([2, 3])
>>> normalization("imagenet", channels=3)[0]
[0.485, 0.456, 0.406]
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._parse import parse_number
from ..errors import ModelError
from ._base import Normalize, NormalizedModel, build_model, list_models
from ._user_code import contained
from ._weight_checks import check_loaded_tensors, meta_tensor, refuse_meta
from .checkpoint import state_mismatch

__all__ = ["NORMALIZATIONS", "SelectOutput", "build_from_spec", "check_forward", "file_sha256",
           "load_weights", "normalization", "read_state_dict", "with_normalization"]

# per-channel mean and std of the data sets most published models were trained on
NORMALIZATIONS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# keys under which training scripts commonly keep the state dict, tried in this order
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
# prefixes that wrappers add to every key: DDP / DataParallel, torch.compile, Lightning
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


class SelectOutput(nn.Module):
    """Keep one output of a model that returns several (``(logits, features)``, a dict, ...).

    ``index`` is a position (``0``) or a key / attribute name (``"logits"``). The wrapped model
    stays reachable as ``.model`` and its weights keep their names under ``model.``.
    """

    def __init__(self, model: nn.Module, index: int | str = 0) -> None:
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(self.index, str) and not isinstance(out, dict):
            return getattr(out, self.index)
        return out[self.index]

    def extra_repr(self) -> str:
        return f"index={self.index!r}"


# ----------------------------------------------------------------------------- building


def build_from_spec(spec: str, *, num_classes: int, in_channels: int, image_size: int,
                    pretrained: bool = False, options: dict | None = None) -> nn.Module:
    """The (untrained unless ``pretrained``) ``nn.Module`` a model spec names.

    ``pretrained`` asks timm for its own weights (only for ``timm:NAME``; a download).
    ``options``: what ``robustbench:`` specs take besides (``dataset``, ``threat_model``,
    ``model_dir``, ``download``); a RobustBench entry comes with its trained weights.
    """
    spec = spec.strip()
    if spec.startswith("timm:"):
        return _timm_model(spec[len("timm:"):], num_classes=num_classes,
                           in_channels=in_channels, pretrained=pretrained)
    if spec.startswith("robustbench:"):
        from .robustbench import load_entry

        return load_entry(spec[len("robustbench:"):], options, num_classes=num_classes,
                          channels=in_channels, image_size=image_size)[0]
    if spec in list_models():
        return build_model(spec, num_classes=num_classes, in_channels=in_channels,
                           image_size=image_size)
    if ":" not in spec:
        raise ModelError(f"unknown model {spec!r}: give a robustfair model name "
                         f"({', '.join(list_models())}), timm:NAME, path/to/file.py:factory or "
                         f"package.module:factory")
    where, _, name = spec.rpartition(":")
    if not name.isidentifier():
        raise ModelError(f"model spec {spec!r}: {name!r} is not a Python name (give FILE.py:factory "
                         f"or package.module:factory)")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    from ._optional import import_robustbench, prepare_user_code

    if not is_file and where.split(".")[0] == "robustbench":
        import_robustbench(spec)  # its dependencies checked, one line if one fails
    else:
        prepare_user_code()
    module = _import_file(Path(where)) if is_file else _import_module(where)
    factory = getattr(module, name, None)
    if factory is None:
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        raise ModelError(f"{where} has no {name!r}; it defines: {', '.join(defined) or 'no public callables'}")
    if not callable(factory):
        raise ModelError(f"{where}:{name} is a {type(factory).__name__}, not a callable that returns a model")
    return _call_factory(factory, f"{where}:{name}", num_classes=num_classes,
                         in_channels=in_channels, image_size=image_size)


TIMM_SET_BY_ROBUSTFAIR = ("num_classes", "in_chans", "pretrained")  # from the data and --weights


def timm_options(text: str) -> dict[str, int | float | bool | str]:
    """``KEY=VALUE&...`` as keyword arguments for ``timm.create_model``: each value an int, a
    float, ``true``/``false`` or else text, never evaluated.

    >>> timm_options("img_size=32&patch_size=4&drop_rate=0.1&class_token=false&global_pool=avg")
    {'img_size': 32, 'patch_size': 4, 'drop_rate': 0.1, 'class_token': False, 'global_pool': 'avg'}
    """
    options: dict[str, int | float | bool | str] = {}
    for item in filter(None, text.split("&")):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier() or not value:
            raise ModelError(f"timm option {item!r}: expected KEY=VALUE, e.g. img_size=32")
        if key in TIMM_SET_BY_ROBUSTFAIR:
            raise ModelError(f"timm option {key!r} is set by robustfair (num_classes and in_chans "
                             f"from the data, pretrained from --weights); drop it")
        if key in options:
            raise ModelError(f"timm option {key!r} is given twice")
        if value.lower() in ("true", "false"):
            options[key] = value.lower() == "true"
            continue
        for kind in (int, float):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                pass
        else:
            options[key] = value
    return options


def _timm_model(name: str, *, num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    from ._optional import import_timm

    name, _, query = name.strip().partition("?")
    options = timm_options(query)
    timm = import_timm(f"timm:{name}")
    # timm's pretrained weights come with their own head: keep it, the forward check compares
    # its width with the data set's classes
    kwargs = {"in_chans": in_channels} if pretrained else {"num_classes": num_classes, "in_chans": in_channels}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs, **options)
    except Exception as exc:  # timm raises RuntimeError for unknown names, others for bad args
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown:
            raise ModelError(f"timm's {name} has no option {unknown.group(1)!r} "
                             f"(timm:{name}?KEY=VALUE passes KEY to timm.create_model)") from None
        if hasattr(timm, "is_model") and not timm.is_model(name):
            from .._registry import did_you_mean

            raise ModelError(f"timm {timm.__version__} has no model {name!r}"
                             f"{did_you_mean(name, timm.list_models())}") from None
        raise ModelError(f"timm cannot build {name!r}: {_one_line(exc)}") from None


def _import_file(path: Path):
    """Import a user's .py file (their explicit choice) under a private module name."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    module_name = "robustfair_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and friends look their module up here
    # the file may import its neighbours, as it would when run as a script
    sys.path.insert(0, str(path.resolve().parent))
    try:
        with contained(f"importing {path}", argv0=str(path)):  # a script's view: no arguments
            spec.loader.exec_module(module)
    except ModelError:
        del sys.modules[module_name]
        raise
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise ModelError(f"{path}, line {exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's code can raise anything; one line, no traceback
        del sys.modules[module_name]
        raise ModelError(f"importing {path} failed: {_one_line(exc)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(name: str):
    try:
        with contained(f"importing module {name!r}", argv0=name):
            return importlib.import_module(name)
    except ModelError:
        raise
    except SyntaxError as exc:
        raise ModelError(f"module {name}: {exc.filename}, line {exc.lineno}: syntax error: {exc.msg}") from None
    except ImportError as exc:
        raise ModelError(f"cannot import module {name!r}: {_one_line(exc)}") from None
    except Exception as exc:
        raise ModelError(f"importing module {name!r} failed: {_one_line(exc)}") from None


def _call_factory(factory: Callable, label: str, **offered: int) -> nn.Module:
    """Call ``factory`` with those of ``offered`` it names in its signature."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = {k: v for k, v in offered.items() if k in params}
    call = f"{label}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    try:
        with contained(call):
            model = factory(**kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{label}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed: "
                         f"{_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{label} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# ----------------------------------------------------------------------------- weights


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors in a weights file, and where in the file they were (``""``: at the top).

    Never unpickles objects: safetensors holds raw bytes, and ``torch.load`` runs with
    ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist" if not path.exists()
                         else f"weights file {path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), ""
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{path} is not a readable safetensors file ({_one_line(exc)})") from None
    if path.suffix not in TORCH_SUFFIXES:
        raise ModelError(f"weights file {path}: expected .safetensors or a PyTorch state dict "
                         f"({', '.join(TORCH_SUFFIXES)})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _unsupported_global(str(exc))
        what = f"it holds a pickled {found}" if found else "it holds pickled objects or is damaged"
        hint = (" (a whole model saved with torch.save(model))"
                if found and not found.startswith(("builtins", "collections", "numpy")) else "")
        raise ModelError(f"{path} is not a plain state dict: torch.load(weights_only=True) refused "
                         f"it, {what}{hint}; save model.state_dict() instead (robustfair never "
                         f"loads a full pickle)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path} is not a readable PyTorch file ({_one_line(exc)})") from None
    return _find_state_dict(data, path)


def _unsupported_global(message: str) -> str | None:
    """The class name torch's weights-only unpickler refused, e.g. ``torch.nn.modules.linear.Linear``."""
    marker = "Unsupported global: GLOBAL "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split()[0]


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _find_state_dict(data: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if _is_state_dict(data):
        return dict(data), ""
    if isinstance(data, dict):
        for key in CONTAINER_KEYS:
            if _is_state_dict(data.get(key)):
                return dict(data[key]), key
        keys = ", ".join(map(str, list(data)[:8])) + (" ..." if len(data) > 8 else "")
        raise ModelError(f"{path} holds a dict without a state dict in it (keys: {keys or 'none'}); "
                         f"expected name -> tensor entries, or one under "
                         f"{' / '.join(CONTAINER_KEYS)}")
    raise ModelError(f"{path} holds a {type(data).__name__}, not a state dict (name -> tensor)")


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> tuple[dict, list[str]]:
    """Drop prefixes that every key has and the model's own keys lack (``module.`` of DDP, ...)."""
    stripped = []
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if (all(k.startswith(prefix) for k in state)
                    and not all(k.startswith(prefix) for k in expected)):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
    return state, stripped


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict:
    """Fill ``model``'s parameters and buffers from a weights file, strictly.

    Returns what was done: ``{"path", "sha256", "container_key", "stripped_prefixes"}``.
    Raises :class:`ModelError` naming the missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    state, container = read_state_dict(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state, stripped = _strip_wrapper_prefixes(state, set(expected))
    problems = state_mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise ModelError(f"the weights in {path} do not fit the model: {problems}")
    check_loaded_tensors(state, model.state_dict(), path)
    # a model built on the meta device (no values yet) takes the file's tensors as they are
    on_meta = meta_tensor(model) is not None
    if on_meta:  # assign keeps the file's dtype: give each tensor the model's own
        own = model.state_dict()
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=on_meta)
    return {"path": str(path), "sha256": file_sha256(path), "container_key": container or None,
            "stripped_prefixes": stripped}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (memory stays bounded)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- inputs and outputs


def normalization(text: str, *, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std from ``cifar10`` / ``cifar100`` / ``imagenet`` or ``MEAN/STD``.

    ``MEAN/STD`` are comma-separated numbers, one per channel or one for all, e.g.
    ``0.5/0.25`` or ``0.49,0.48,0.45/0.25,0.24,0.26``.

    >>> normalization("0.5/0.25", channels=3)
    ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    """
    text = text.strip()
    if text.lower() in NORMALIZATIONS:
        mean, std = NORMALIZATIONS[text.lower()]
        if channels != len(mean):
            raise ModelError(f"--normalize {text} is for {len(mean)}-channel images but the data "
                             f"has {channels} channel(s)")
        return list(mean), list(std)
    if text.count("/") != 1:
        raise ModelError(f"--normalize: expected {', '.join(NORMALIZATIONS)} or MEAN/STD "
                         f"(e.g. 0.5/0.25), got {text!r}")
    parts = []
    for what, chunk in zip(("mean", "std"), text.split("/")):
        values = [parse_number(v, what=f"--normalize {what}") for v in chunk.split(",")]
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ModelError(f"--normalize: {len(values)} {what} values for {channels}-channel images")
        parts.append(values)
    if any(s <= 0 for s in parts[1]):
        raise ModelError(f"--normalize: std must be positive, got {parts[1]}")
    return parts[0], parts[1]


def with_normalization(model: nn.Module, mean: list[float], std: list[float]) -> nn.Module:
    """``model`` behind a :class:`Normalize` layer, so that it takes images in [0, 1]."""
    return NormalizedModel(Normalize(mean, std), model)


def check_forward(model: nn.Module, x: torch.Tensor, num_classes: int, data_name: str) -> None:
    """One forward pass on a few of the data set's images: one logits tensor, one score per class.

    The message for a model that returns several outputs names ``--output-index`` (and
    :class:`SelectOutput`).
    """
    shape = "x".join(str(s) for s in x.shape[1:])
    refuse_meta(model)
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:  # a shape mismatch, a wrong channel count, ... : one line
        raise ModelError(f"the model fails on {shape} images from {data_name}: {_one_line(exc)}") from None
    if isinstance(out, (tuple, list, dict)) or (not isinstance(out, torch.Tensor) and hasattr(out, "logits")):
        count = f"{len(out)} outputs" if hasattr(out, "__len__") else "several outputs"
        raise ModelError(f"the model returns a {type(out).__name__} of {count}, not one logits tensor; "
                         f"pick the logits with --output-index N (in Python: "
                         f"robustfair.models.SelectOutput(model, N))")
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model's output must be N×classes logits, got {got}")
    if out.shape[1] != num_classes:
        raise ModelError(f"the model outputs {out.shape[1]} class scores but {data_name} has "
                         f"{num_classes} classes")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
