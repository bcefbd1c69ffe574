"""Save and load models without pickles: weights in safetensors, the rest as JSON in its header.

A checkpoint is one ``.safetensors`` file. Its header metadata holds one entry,
``"robustfair"``, a JSON object with

- ``config``: ``model.robustfair_config``, enough for :func:`build_model` to rebuild the model;
- ``metadata``: the caller's own JSON dict (e.g. data set name and class names);
- ``weights_sha256``: a digest of the tensors, so a damaged file is refused instead of
  silently giving a wrong model;
- ``format`` and ``robustfair_version``.

Loading rebuilds the architecture from ``config`` and fills in the weights; nothing in the
file is ever executed (safetensors holds raw tensor bytes only).

>>> import tempfile, os, torch
>>> from robustfair.models import build_model
>>> m = build_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden=[16])
>>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
>>> p = save_model(m, path, metadata={"data": "digits"})
>>> read_checkpoint_metadata(p)["metadata"]
{'data': 'digits'}
>>> bool(torch.equal(load_model(p, device="cpu")[1].classifier.weight, m[1].classifier.weight))
True
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .._atomic import atomic_write
from .._checks import is_int, is_real
from .._device import resolve_device
from .._version import __version__
from ..errors import ModelError
from ._base import MODELS, build_model, list_models
from ._size import on_meta

HEADER_KEY = "robustfair"
FORMAT = 1
CONFIG_KEYS = ("name", "num_classes", "in_channels", "image_size", "mean", "std", "kwargs")


# ----------------------------------------------------------------------------- save


def save_model(model: nn.Module, path: str | os.PathLike, *, metadata: dict | None = None,
               config: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (safetensors) with its build config and ``metadata``; return the path.

    ``config`` defaults to ``model.robustfair_config`` (set by :func:`build_model`); pass it
    for a model built some other way from a registered constructor, e.g.
    ``config={"name": "my_net", "num_classes": 10, "in_channels": 3, "image_size": 32}``.
    ``metadata`` (a JSON-able dict) defaults to ``model.robustfair_metadata`` if the model
    was loaded from a checkpoint. The file is written to a temporary name and renamed, so a
    crash never leaves a half-written checkpoint.
    """
    path = Path(path)
    if not isinstance(model, nn.Module):
        raise ModelError(f"save_model needs a torch.nn.Module, got {type(model).__name__}")
    if config is None:
        config = getattr(model, "robustfair_config", None)
        if config is None:
            raise ModelError(
                f"cannot save this {type(model).__name__}: it has no robustfair_config; build it "
                f"with robustfair.build_model(name, ...), or register its constructor with "
                f"register_model(name) and pass config={{'name': name, 'num_classes': ...}}"
            )
    config = _checked_config(config, where="config")
    if metadata is None:
        metadata = getattr(model, "robustfair_metadata", None) or {}
    if not isinstance(metadata, dict):
        raise ModelError(f"metadata must be a dict, got {type(metadata).__name__}")

    tensors = _tensors_to_save(model)
    # rebuild from the config now: a model that was changed after build_model (say, a new
    # head) would otherwise save fine and then fail to load
    expected, filled = _reference(config)
    _check_shapes(expected, {k: tuple(t.shape) for k, t in tensors.items()},
                  name=config["name"], source=f"cannot save this {type(model).__name__}")
    config = _checked_config(filled, where="config")  # defaults filled in
    header = {
        "format": FORMAT,
        "robustfair_version": __version__,
        "config": config,
        "metadata": metadata,
        "weights_sha256": _digest(tensors),
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"metadata must be JSON-serialisable (no NaN, tensors or objects): {exc}"
        ) from None

    if path.is_dir():
        raise ModelError(f"cannot save the model to {path}: it is a directory")
    try:
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={HEADER_KEY: text}))
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"cannot write checkpoint {path}: {_one_line(exc)}") from None
    return path


def _tensors_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as standalone contiguous CPU tensors.

    safetensors refuses tensors that share memory (tied weights) and needs each tensor to be
    contiguous (channels_last weights are not), so those are copied.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise ModelError(f"state dict entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu()
        storage = t.untyped_storage()
        owns_storage = storage.nbytes() == t.numel() * t.element_size()
        if storage.data_ptr() in seen or not owns_storage or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    return tensors


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and raw bytes in name order (independent of file layout)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


# ----------------------------------------------------------------------------- load


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    """The JSON in a checkpoint's header, without reading the weights.

    Keys: ``config`` (how the model was built), ``metadata`` (what the saver added),
    ``weights_sha256``, ``format`` and ``robustfair_version``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ModelError(f"checkpoint {path} is a directory, not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({_one_line(exc)})") from None
    if HEADER_KEY not in stored:
        raise ModelError(
            f"{path} was not saved by robustfair (its safetensors header has no {HEADER_KEY!r} "
            f"entry); for your own network, build it via register_model + build_model (or pass "
            f"config= to save_model) and save it with robustfair's save_model"
        )
    try:
        info = json.loads(stored[HEADER_KEY])
    except ValueError:
        raise ModelError(f"{path}: the robustfair header is not JSON (corrupt file)") from None
    if not isinstance(info, dict) or not isinstance(info.get("format"), int):
        raise ModelError(f"{path}: the robustfair header is malformed (corrupt file)")
    if info["format"] > FORMAT:
        raise ModelError(
            f"{path} uses checkpoint format {info['format']}, newer than this robustfair "
            f"supports ({FORMAT}); upgrade robustfair"
        )
    if not (isinstance(info.get("metadata"), dict) and isinstance(info.get("weights_sha256"), str)):
        raise ModelError(f"{path}: the robustfair header is malformed (corrupt file)")
    info["config"] = _checked_config(info.get("config"), where=f"{path}: config")
    return info


def load_model(path: str | os.PathLike, *, device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` and load its weights (strictly).

    The model is returned in eval mode on ``device`` (default: the fastest available), with
    the saved metadata as ``model.robustfair_metadata``. Raises :class:`ModelError` for a
    missing, damaged or foreign file; never unpickles anything.
    """
    path = Path(path)
    info = read_checkpoint_metadata(path)
    config = info["config"]
    target = resolve_device(device)
    _check_header_fits(path, config)  # before any weights are read or any model is built
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({_one_line(exc)})") from None
    if _digest(state) != info["weights_sha256"]:
        raise ModelError(f"{path}: the weights do not match their checksum (the file is corrupt)")
    try:
        model = _rebuild(config)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    _check_fits(model, {k: tuple(t.shape) for k, t in state.items()}, name=config["name"],
                source=str(path))
    model.load_state_dict(state, strict=True)
    model.robustfair_metadata = info["metadata"]
    return model.to(target).eval()


# ----------------------------------------------------------------------------- config


def _checked_config(config: object, *, where: str) -> dict:
    """Validate a build config and return it as plain JSON data (a deep copy)."""
    if not isinstance(config, dict):
        raise ModelError(f"{where} must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(CONFIG_KEYS)}")
    for key in ("name", "num_classes"):
        if key not in config:
            raise ModelError(f"{where} needs {key!r}")
    if not isinstance(config["name"], str):
        raise ModelError(f"{where}: 'name' must be a string, got {config['name']!r}")
    for key in ("num_classes", "in_channels", "image_size"):
        value = config.get(key, 1)
        if not is_int(value):
            raise ModelError(f"{where}: {key!r} must be an integer, got {value!r}")
    for key in ("mean", "std"):
        value = config.get(key)
        numbers = isinstance(value, (list, tuple)) and all(
            is_real(v) for v in value)
        if value is not None and not numbers:
            raise ModelError(f"{where}: {key!r} must be a list of numbers, got {value!r}")
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ModelError(f"{where}: 'kwargs' must be a dict, got {type(kwargs).__name__}")
    clash = sorted(set(kwargs) & set(CONFIG_KEYS))
    if clash:
        raise ModelError(f"{where}: 'kwargs' may not repeat {', '.join(clash)}")
    try:
        return json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where} must be JSON-serialisable: {exc}") from None


# (config as JSON, its constructor) -> (tensor names and shapes, config with defaults filled in)
_REFERENCES: dict[tuple[str, object], tuple[dict[str, tuple[int, ...]], dict]] = {}


def _reference(config: dict) -> tuple[dict[str, tuple[int, ...]], dict]:
    """The state-dict shapes that ``config`` rebuilds to, and the config with its defaults.

    Only names and shapes are compared, so the rebuild runs on the meta device (no memory, no
    weight initialisation: a real build of the zoo's wide_resnet is half its save), and the
    answer is kept per config and registered constructor: a training run saves the same model
    every epoch, and even a meta build costs as much as a small model's whole save.
    """
    name = config["name"]
    constructor = MODELS.get(name) if name in list_models() else None
    key = (json.dumps(config, sort_keys=True), constructor)
    if constructor is None or key not in _REFERENCES:
        reference = on_meta(lambda: _rebuild(config)) or _rebuild(config)
        answer = ({k: tuple(t.shape) for k, t in reference.state_dict().items()},
                  reference.robustfair_config)
        if constructor is None:
            return answer
        if len(_REFERENCES) >= 64:  # bounded: a process saving many configs rebuilds again
            _REFERENCES.clear()
        _REFERENCES[key] = answer
    shapes, filled = _REFERENCES[key]
    return dict(shapes), json.loads(json.dumps(filled))


def _rebuild(config: dict) -> nn.Module:
    name = config["name"]
    if name not in list_models():
        raise ModelError(
            f"model {name!r} is not registered; import the module that registers it "
            f"(@register_model({name!r})) before saving or loading; known: "
            f"{', '.join(list_models())}"
        )
    args = {k: v for k, v in config.items() if k not in ("name", "kwargs")}
    # weight initialisation draws random numbers; saving or loading must not shift the
    # caller's random stream (a training run would stop being reproducible)
    with torch.random.fork_rng(devices=[]):
        return build_model(name, **args, **config.get("kwargs", {}))


def _check_header_fits(path: Path, config: dict) -> None:
    """Compare the config's model (built on the meta device: no memory) with the tensor shapes
    the file's header lists, so a tiny file describing a huge model is refused for free."""
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({_one_line(exc)})") from None
    preview = on_meta(lambda: _rebuild(config))  # None: the real build reports the problem
    if preview is not None:
        _check_fits(preview, shapes, name=config["name"], source=str(path))


def _check_fits(reference: nn.Module, shapes: dict[str, tuple[int, ...]], *, name: str,
                source: str) -> None:
    """Check that ``reference`` (the model a config rebuilds) has these tensor names and shapes."""
    _check_shapes({k: tuple(t.shape) for k, t in reference.state_dict().items()}, shapes,
                  name=name, source=source)


def _check_shapes(expected: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]], *,
                  name: str, source: str) -> None:
    """Check that ``shapes`` (a file's or a model's tensors) are the ``expected`` ones."""
    problems = state_mismatch(expected, shapes)
    if problems:
        raise ModelError(f"{source}: the weights do not match the {name!r} model its config "
                         f"describes: {problems}")


def state_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """How a file's tensor shapes (``found``) differ from a model's (``expected``), in one line;
    ``""`` when they fit. Names the missing and unexpected keys and the first wrong shape.

    >>> state_mismatch({"w": (3, 2), "b": (3,)}, {"w": (4, 2), "x": (1,)})
    'missing 1 key(s): b; unexpected 1 key(s): x; wrong shape for w ([4, 2] in the weights, [3, 2] in the model)'
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_some(unexpected)}")
    if wrong:
        k = wrong[0]
        problems.append(f"wrong shape for {k} ({list(found[k])} in the weights, "
                        f"{list(expected[k])} in the model)"
                        + (f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""))
    return "; ".join(problems)


def _some(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
