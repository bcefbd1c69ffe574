"""Training checkpoints without pickles, committed atomically once per epoch.

A run directory holds, after each complete epoch:

- ``checkpoint.safetensors``: the trained weights, in the models' format (``load_model`` and
  ``robustfair audit --checkpoint`` read it); ``ema.safetensors`` for the EMA weights when on;
  ``best.safetensors``: the evaluated weights of the best epoch under the ``keep`` rule;
- ``state.safetensors``: every tensor of the optimiser and mitigation states, flattened;
- ``state.json``: the manifest: epoch, global step, config, the data (name and SHA-256),
  the JSON part of those states, the per-epoch history, and the SHA-256 of each file above.

The manifest is the commit point. An epoch first writes every file as ``NAME.partial`` (each
itself via a temporary file and ``os.replace``), then the manifest (the same way), then renames
the partials into place. A run killed before the manifest lands resumes from the previous
epoch, whose files were never touched; one killed after it finishes the renames on resume
(:func:`recover`). :class:`robustfair.training.run_folder.RunFolder` decides what is written
and when; this module is the format. No RNG state is stored: every epoch's generators derive from
``(seed, epoch)``, so a resumed run needs only the epoch number.

>>> tensors, tree = split_tensors({"a": torch.ones(2), "b": [1, {"c": torch.zeros(1)}]}, "s")
>>> sorted(tensors), tree
(['s.a', 's.b.1.c'], {'a': {'__tensor__': 's.a'}, 'b': [1, {'c': {'__tensor__': 's.b.1.c'}}]})
>>> join_tensors(tree, tensors)["b"][1]["c"].tolist()
[0.0]
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._atomic import atomic_write, atomic_write_text
from .._checks import is_int
from ..errors import ConfigError, ModelError

MANIFEST = "state.json"
FORMAT = "robustfair-train-state"
VERSION = 1
PARTIAL = ".partial"
# every file a run writes; --force removes exactly these
RUN_FILES = ("state.json", "state.safetensors", "checkpoint.safetensors", "ema.safetensors",
             "best.safetensors", "model.safetensors", "epochs.csv", "config.json",
             "summary.json")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Tensors (as contiguous CPU copies) to a safetensors file, atomically."""
    plain = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{path} is not a readable safetensors file (corrupt state?): "
                          f"{_one_line(exc)}") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ tensors <-> JSON trees
def split_tensors(tree: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Pull every tensor out of a nest of dicts/lists: ``(tensors by dotted key, JSON skeleton)``."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[key] = node
            return {"__tensor__": key}
        if isinstance(node, dict):
            return {str(k): walk(v, f"{key}.{k}") for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise ConfigError(f"cannot store a {type(node).__name__} in a training checkpoint "
                          f"(at {key}); use tensors and plain values")

    return tensors, walk(tree, prefix)


def join_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise ConfigError(f"training state is missing tensor {key!r} (corrupt state)")
            return tensors[key]
        return {k: join_tensors(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_tensors(v, tensors) for v in skeleton]
    return skeleton


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    return split_tensors(optimizer.state_dict(), "optimizer")


def load_optimizer_state(optimizer: torch.optim.Optimizer, skeleton: Any,
                         tensors: dict[str, torch.Tensor]) -> None:
    state = join_tensors(skeleton, tensors)
    # JSON turned the parameter ids into strings
    state["state"] = {int(k): v for k, v in state.get("state", {}).items()}
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the saved optimiser state does not fit this model: "
                          f"{_one_line(exc)}") from None
    _in_parameter_layout(optimizer)


def _in_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Each state tensor shaped like its parameter (momentum, Adam's moments) laid out like it.

    The state comes back from safetensors contiguous, and a channels_last weight keeps its
    layout. Torch's fused CPU step (2.13) reads a buffer as if it were laid out like its
    parameter, so a mismatch gives a wrong update, silently (the default step only runs
    slower); with the layouts matched, a resumed run steps as the uninterrupted one did."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if (isinstance(value, torch.Tensor) and value.shape == p.shape
                        and value.stride() != p.stride()):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


# ------------------------------------------------------------------ commit and recovery
def commit(run_dir: Path, writers: dict[str, Callable[[Path], None]], manifest: dict) -> None:
    """Write one epoch: each ``writers[name](path)`` to ``name.partial``, the manifest, renames.

    Files of the previous commit that are not rewritten (``best.safetensors`` when the epoch
    is not a new best) stay valid: their digests carry over into the new manifest.
    """
    old = read_manifest(run_dir) or {}
    digests = dict(old.get("files", {}))
    try:
        for name, write in writers.items():
            partial = run_dir / (name + PARTIAL)
            write(partial)
            digests[name] = file_sha256(partial)
        manifest = {**manifest, "format": FORMAT, "version": VERSION, "files": digests}
        atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1, allow_nan=False))
    except (OSError, SafetensorError, ModelError) as exc:
        # the previous epoch's files and manifest are untouched: the run resumes from there
        for name in writers:
            (run_dir / (name + PARTIAL)).unlink(missing_ok=True)
        raise ConfigError(f"cannot write the training state to {run_dir} (disk full?): "
                          f"{_one_line(exc)}; the run resumes from its last complete epoch "
                          f"once there is room") from None
    for name in writers:
        os.replace(run_dir / (name + PARTIAL), run_dir / name)


def read_manifest(run_dir: Path) -> dict | None:
    """The run's manifest, or None when there is none; a ConfigError when it is corrupt."""
    path = run_dir / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is corrupt ({_one_line(exc)}); rerun with --force to "
                          f"start over") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a robustfair training state; rerun with --force "
                          f"to start over")
    if data.get("version", 0) > VERSION:
        raise ConfigError(f"{path} was written by a newer robustfair (state version "
                          f"{data['version']})")
    for key in ("epoch", "global_step", "config", "files"):
        if key not in data:
            raise ConfigError(f"{path} lacks {key!r} (corrupt state); rerun with --force")
    problem = manifest_problem(data)
    if problem:
        raise ConfigError(f"{path} is corrupt ({problem}); rerun with --force to start over")
    return data


def manifest_problem(data: dict) -> str | None:
    """What is wrong with a manifest's fields (types, file names, epoch), or None.

    Nothing in ``state.json`` is trusted: its file names could point outside the run folder
    (resume renames over them), its epoch could claim a million epochs after one.
    """
    for key, ok, kind in (
            ("epoch", lambda v: is_int(v) and v >= 0, "a non-negative integer"),
            ("global_step", lambda v: is_int(v) and v >= 0, "a non-negative integer"),
            ("config", lambda v: isinstance(v, dict), "a mapping"),
            ("files", lambda v: isinstance(v, dict), "a mapping"),
            ("history", lambda v: isinstance(v, list) and all(
                isinstance(h, dict) and is_int(h.get("epoch")) for h in v),
             "a list of epoch rows"),
            ("complete", lambda v: isinstance(v, bool), "true or false"),
            ("best", lambda v: v is None or isinstance(v, dict), "a mapping or null"),
            ("optimizer", lambda v: v is None or isinstance(v, dict), "a mapping or null"),
            ("mitigations", lambda v: v is None or isinstance(v, dict), "a mapping or null"),
            ("scaler", lambda v: v is None or isinstance(v, dict), "a mapping or null"),
            ("ema_updates", lambda v: v is None or is_int(v) and v >= 0, "an integer or null"),
            ("chosen_epoch", lambda v: is_int(v) and v >= 0, "a non-negative integer"),
            ("stopped", lambda v: v is None or isinstance(v, str), "text or null"),
            ("data", lambda v: v is None or isinstance(v, dict) and isinstance(v.get("sha256"), str),
             "a mapping with the data's sha256, or null")):
        if key in data and not ok(data[key]):
            return f"{key!r} must be {kind}, got {str(data[key])[:40]!r}"
    for name, digest in data["files"].items():
        if not _plain_name(name):  # resume renames over these: never a path out of the run
            return f"it names a file {str(name)[:60]!r} that is not a plain file name in the run"
        if not (isinstance(digest, str) and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest)):
            return f"the digest of {name} is not a SHA-256"
    epochs = data["config"].get("epochs")
    if is_int(epochs) and data["epoch"] > epochs:
        return f"epoch {data['epoch']} is beyond the config's {epochs} epochs"
    logged = max((h["epoch"] for h in data.get("history", [])), default=0)
    if "history" in data and logged != data["epoch"]:
        return f"epoch {data['epoch']} does not match the history, whose last epoch is {logged}"
    return None


def _plain_name(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name)


def recover(run_dir: Path, manifest: dict) -> None:
    """Make the files match the manifest: finish an interrupted commit, refuse a corrupt file."""
    for name, digest in manifest["files"].items():
        final, partial = run_dir / name, run_dir / (name + PARTIAL)
        if final.exists() and file_sha256(final) == digest:
            partial.unlink(missing_ok=True)
            continue
        if partial.exists() and file_sha256(partial) == digest:
            os.replace(partial, final)  # the commit stopped between manifest and rename
            continue
        raise ConfigError(f"{final} does not match its digest in {MANIFEST} (corrupt or "
                          f"missing); rerun with --force to start over")
    for leftover in run_dir.glob("*" + PARTIAL):  # from a commit that never reached its manifest
        leftover.unlink(missing_ok=True)
    sweep_temporaries(run_dir)


def sweep_temporaries(run_dir: Path) -> None:
    """Remove the temporary files of writes that were killed (``.NAME.*.tmp``, also of
    partials) and partials no manifest names; only this run's own file names are touched."""
    for name in RUN_FILES:
        for tmp in run_dir.glob(f".{name}.*.tmp"):  # .NAME.x.tmp and .NAME.partial.x.tmp
            tmp.unlink(missing_ok=True)


def clear_run(run_dir: Path) -> None:
    """Remove the files of a run (and only those) so a forced run starts over."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / (name + PARTIAL)).unlink(missing_ok=True)
        for tmp in run_dir.glob(f".{name}*.tmp"):  # temporaries of a killed write
            tmp.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
