"""RobustBench's model zoo through RobustBench's own loader: ``robustbench:NAME`` or
``robustbench:DATASET/THREAT/NAME`` (e.g. ``robustbench:cifar10/Linf/Standard``).

``robustbench.utils.load_model`` builds the entry's architecture and fills it from
``MODEL_DIR/DATASET/THREAT/NAME.pt`` (``./models`` by default); a missing file is downloaded
first with RobustBench's own downloader, when downloads are allowed. Before RobustBench reads a
file, robustfair opens it with ``torch.load(weights_only=True)``: a checkpoint that holds
pickled objects is refused, whatever torch version RobustBench would load it with. RobustBench
models take images in [0, 1] (any normalisation is inside them), so nothing is added in front.

The published clean and robust accuracy of an entry come from the Model Zoo tables of
RobustBench's README, which its wheel ships as the package description (the wheel has no
other copy of the leaderboard): :func:`published` reads them.

>>> parse_spec("cifar10/linf/Standard", {})
Entry(name='Standard', dataset='cifar10', threat_model='Linf')
>>> parse_spec("Standard", {"dataset": "cifar10", "threat_model": "L2"}).path("models")
PosixPath('models/cifar10/L2/Standard.pt')
"""
from __future__ import annotations

import functools
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .._registry import did_you_mean
from ..errors import ConfigError, ModelError

__all__ = ["DEFAULT_MODEL_DIR", "Entry", "import_robustbench", "load_entry", "parse_spec",
           "parse_zoo_tables", "published"]

DEFAULT_MODEL_DIR = "./models"  # robustbench.utils.load_model's own default
DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224}  # ImageNet: RobustBench's 256 -> crop 224
# RobustBench's spelling of a threat model, from any case; --norm linf / l2 map here too
THREATS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}


@dataclass(frozen=True)
class Entry:
    """One model of RobustBench's zoo."""

    name: str
    dataset: str
    threat_model: str

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.threat_model}/{self.name}"

    def path(self, model_dir: str | Path) -> Path:
        """Where ``load_model`` looks for the checkpoint (one file; ensembles: see ``paths``)."""
        return Path(model_dir) / self.dataset / self.threat_model / f"{self.name}.pt"


def parse_spec(body: str, options: Mapping[str, Any]) -> Entry:
    """The entry ``robustbench:BODY`` names; ``NAME`` alone takes ``dataset`` and
    ``threat_model`` from ``options``. Checks the spelling only, not the zoo."""
    parts = body.strip().split("/")
    if len(parts) == 3:
        dataset, threat, name = parts
    elif len(parts) == 1:
        name, dataset, threat = parts[0], options.get("dataset"), options.get("threat_model")
        if dataset is None or threat is None:
            raise ConfigError(f"robustbench:{body} takes its data set from --dataset (cifar10, "
                              f"cifar100 or imagenet) and its threat model from --norm; with another "
                              f"data source name them: robustbench:DATASET/THREAT/{body}, e.g. "
                              f"robustbench:cifar10/Linf/{body}")
    else:
        raise ConfigError(f"robustbench:{body}: expected robustbench:NAME or "
                          f"robustbench:DATASET/THREAT/NAME (e.g. robustbench:cifar10/Linf/Standard)")
    dataset, threat = str(dataset).strip().lower(), str(threat).strip()
    if dataset not in DATASETS:
        raise ConfigError(f"RobustBench has no data set {dataset!r}{did_you_mean(dataset, DATASETS)}; "
                          f"it has {', '.join(DATASETS)}")
    if threat.lower() not in THREATS:
        raise ConfigError(f"RobustBench has no threat model {threat!r}"
                          f"{did_you_mean(threat, THREATS.values())}; it has {', '.join(THREATS.values())}")
    if not name.strip():
        raise ConfigError(f"robustbench:{body}: the model name is empty")
    return Entry(name.strip(), dataset, THREATS[threat.lower()])


def import_robustbench():
    """``robustbench.utils``, imported so that it works here: where only ``pyautoattack`` (the
    official AutoAttack on the package index) is installed, RobustBench's ``import autoattack``
    finds it. A missing or broken dependency is one :class:`ModelError` line naming it."""
    from ._optional import import_robustbench as _import

    return _import("import robustbench")


def _zoo(rb_utils) -> dict[str, dict[str, dict]]:
    """RobustBench's zoo as ``{dataset: {threat model: {name: entry}}}`` (plain strings)."""
    return {ds.value: {tm.value: models for tm, models in by_threat.items()}
            for ds, by_threat in rb_utils.all_models.items()}


def _check_in_zoo(entry: Entry, zoo: dict) -> dict:
    """The zoo's record of ``entry``, or a one-line error: a threat model the data set lacks, an
    unknown name (did-you-mean), or a name filed under another data set / threat model."""
    threats = zoo[entry.dataset]
    if entry.threat_model not in threats:
        raise ConfigError(f"RobustBench has no {entry.dataset} {entry.threat_model} models; its "
                          f"{entry.dataset} threat models are {', '.join(threats)}")
    models = threats[entry.threat_model]
    if entry.name in models:
        return models[entry.name]
    elsewhere = [f"{ds}/{tm}" for ds, by_threat in zoo.items() for tm, names in by_threat.items()
                 if entry.name in names]
    where = f"; it is in {', '.join(elsewhere)}" if elsewhere else ""
    raise ConfigError(f"RobustBench has no {entry.dataset} {entry.threat_model} model {entry.name!r}"
                      f"{did_you_mean(entry.name, models) if not elsewhere else ''}{where} "
                      f"({len(models)} {entry.dataset} {entry.threat_model} models in robustbench "
                      f"{_rb_version()})")


def _rb_version() -> str:
    try:
        return importlib.metadata.version("robustbench")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _safe_check(path: Path) -> None:
    """Refuse a checkpoint that holds pickled objects before RobustBench's ``torch.load`` reads it
    (on torch < 2.6 that load would run them). ``mmap`` keeps the check cheap for large files."""
    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # a legacy (pre-zip) file cannot be mapped: read it
                raise
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Unsupported global" in str(exc) or "Weights only load failed" in str(exc):
            raise ModelError(f"{path} is not a plain state dict: torch.load(weights_only=True) "
                             f"refused it (it holds pickled objects); robustfair never loads a "
                             f"full pickle") from None
        raise ModelError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                         f"{reason[:200]})") from None


def _mismatch(message: str) -> str:
    """``load_state_dict``'s many-line error as one line of counts and first keys."""
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)"),
                           ("wrong shape", r"size mismatch for ([^:]+):")):
        found = re.findall(pattern, message)
        keys = [k for chunk in found for k in (re.findall(r'"([^"]+)"', chunk) or [chunk])]
        if keys:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            parts.append(f"{len(keys)} {label} ({shown})")
    return "; ".join(parts) or message.strip().splitlines()[0][:200]


def _architecture(entry: Entry) -> str | None:
    row = published(entry)
    return row["architecture"] if row else None


def load_entry(body: str, options: Mapping[str, Any] | None = None, *,
               num_classes: int | None = None, channels: int | None = None,
               image_size: int | None = None) -> tuple[nn.Module, dict]:
    """The zoo model ``robustbench:BODY`` names, in eval mode, and its provenance.

    ``options``: ``dataset`` and ``threat_model`` (for ``robustbench:NAME``), ``model_dir``
    (default ``./models``), ``download`` (default True: a missing checkpoint is fetched with
    RobustBench's downloader; ``ROBUSTFAIR_NO_DOWNLOAD=1`` forbids it too). ``num_classes``,
    ``channels``, ``image_size``: the data's, checked against the entry before anything loads.
    """
    from . import _optional

    options = dict(options or {})
    entry = parse_spec(body, options)
    rb_utils = _optional.import_robustbench(f"robustbench:{body}")
    record = _check_in_zoo(entry, _zoo(rb_utils))
    if num_classes is not None and num_classes != DATASETS[entry.dataset]:
        raise ModelError(f"RobustBench's {entry.dataset} models output {DATASETS[entry.dataset]} "
                         f"classes but the data has {num_classes}")
    want = IMAGE_SIZE[entry.dataset]
    if (channels is not None and channels != 3) or (image_size is not None and image_size != want):
        raise ModelError(f"RobustBench's {entry.dataset} models take 3-channel {want}x{want} images "
                         f"but the data has {channels}-channel {image_size}x{image_size}"
                         + (" (resize them, e.g. image_folder's --image-size 224)"
                            if entry.dataset == "imagenet" else ""))
    model_dir = Path(str(options.get("model_dir") or DEFAULT_MODEL_DIR)).expanduser()
    from ..data import downloads_forbidden

    download = bool(options.get("download", True)) and not downloads_forbidden()

    timm_name = f"{entry.name.lower().replace('-', '_')}_{entry.dataset}_{entry.threat_model.lower()}"
    ids = record.get("gdrive_id")
    if rb_utils.timm.is_model(timm_name) or not ids:
        # weights that timm or torchvision fetch into their own caches, not into --model-dir
        host = f"timm's {timm_name}" if rb_utils.timm.is_model(timm_name) else "torchvision"
        if not download:
            raise ModelError(f"RobustBench's {entry.label} takes its weights from {host} (its own "
                             f"download cache, not --model-dir); drop --no-download to fetch them")
        paths: list[Path] = []
    else:
        ids = ids if isinstance(ids, list) else [ids]
        single = entry.path(model_dir)
        paths = [single] if len(ids) == 1 else [Path(f"{single}_m{i}.pt") for i in range(len(ids))]
        missing = [(p, i) for p, i in zip(paths, ids) if not p.is_file()]
        if missing and not download:
            path, gid = missing[0]
            raise ModelError(f"RobustBench checkpoint {path} is missing and downloads are off (--no-download): "
                             f"RobustBench downloads it from Google Drive "
                             f"(https://drive.google.com/uc?id={gid}); put it there, or give the "
                             f"--model-dir that holds {entry.dataset}/{entry.threat_model}/{entry.name}.pt")
        if missing:  # fetched first, so that every file is checked before RobustBench reads it
            _fetch(rb_utils, missing, model_dir, entry)
        for path in paths:
            _safe_check(path)

    try:
        model = rb_utils.load_model(entry.name, model_dir=str(model_dir), dataset=entry.dataset,
                                    threat_model=entry.threat_model)
    except RuntimeError as exc:
        if "state_dict" not in str(exc):
            raise ModelError(f"RobustBench could not load {entry.label}: {_first_line(exc)}") from None
        arch = _architecture(entry)
        raise ModelError(f"{paths[0] if paths else entry.label} does not fit RobustBench's "
                         f"{entry.name}{f' ({arch})' if arch else ''}: {_mismatch(str(exc))}") from None
    except Exception as exc:  # timm's or torchvision's download failing, a damaged file, ...
        raise ModelError(f"RobustBench could not load {entry.label}: {_first_line(exc)}") from None

    from .external import file_sha256

    info = {"name": entry.name, "dataset": entry.dataset, "threat_model": entry.threat_model,
            "model_dir": str(model_dir), "robustbench_version": _rb_version(),
            "published": published(entry)}
    provenance = {"weights": str(paths[0]) if len(paths) == 1 else [str(p) for p in paths] or None,
                  "weights_sha256": (file_sha256(paths[0]) if len(paths) == 1
                                     else [file_sha256(p) for p in paths] or None),
                  "robustbench": info}
    return model.eval(), provenance


def _fetch(rb_utils, missing: list[tuple[Path, str]], model_dir: Path, entry: Entry) -> None:
    """Download the missing checkpoints with RobustBench's own downloader (from Google Drive);
    a failure is one line, and leaves no empty folders behind."""
    folders = [model_dir, model_dir / entry.dataset, model_dir / entry.dataset / entry.threat_model]
    created = [f for f in folders if not f.exists()]
    folders[-1].mkdir(parents=True, exist_ok=True)
    for path, gid in missing:
        try:
            rb_utils.download_gdrive_new(gid, str(path))
            if not path.is_file():
                raise OSError("no file arrived")
        except Exception as exc:
            for folder in reversed(created):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise ModelError(f"RobustBench checkpoint {path} is missing and could not be downloaded "
                             f"from Google Drive ({_download_failure(exc)}): put the file there, "
                             f"or give the --model-dir that holds it") from None


def _download_failure(exc: BaseException) -> str:
    """Why a download failed, short: a network error names its host, not its whole retry story."""
    if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "gdown", "socket"):
        host = re.search(r"host='([^']+)'", str(exc))
        return f"{type(exc).__name__}, no connection{f' to {host.group(1)}' if host else ''}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- published numbers

_DATASET_HEADINGS = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "ImageNet": "imagenet"}


def _cells(line: str) -> list[str]:
    """A markdown table row's cells, markup (``<sub>``, ``**``) removed."""
    cells = [re.sub(r"<[^>]+>|\*", "", c).strip() for c in line.strip().strip("|").split("|")]
    return [re.sub(r"\s+", " ", c) for c in cells]


def _percent(text: str) -> float | None:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*%", text)
    return float(match.group(1)) if match else None


@functools.lru_cache(maxsize=1)
def _published_tables() -> dict[tuple[str, str, str], dict]:
    """Every row of the Model Zoo tables in RobustBench's package description."""
    try:
        text = importlib.metadata.metadata("robustbench").get_payload() or ""
    except importlib.metadata.PackageNotFoundError:
        return {}
    return parse_zoo_tables(text, f"the Model Zoo table of RobustBench {_rb_version()}'s README "
                                  f"(its wheel's package description)")


def parse_zoo_tables(text: str, source: str) -> dict[tuple[str, str, str], dict]:
    """``{(dataset, threat model, name): row}`` from the "## Model Zoo" section of RobustBench's
    README: ``### CIFAR-10`` / ``#### Linf, eps=8/255`` headings, then markdown tables.

    >>> text = '''## Model Zoo
    ... ### CIFAR-10
    ... #### Linf, eps=8/255
    ... | <sub>#</sub> | <sub>Model ID</sub> | <sub>Clean accuracy</sub> | <sub>Robust accuracy</sub> | <sub>Architecture</sub> |
    ... |:---:|---|:---:|:---:|:---:|
    ... | <sub>**76**</sub> | <sub><sup>**Standard**</sup></sub> | <sub>94.78%</sub> | <sub>0.00%</sub> | <sub>WideResNet-28-10</sub> |
    ... ## Notebooks'''
    >>> row = parse_zoo_tables(text, "README")[("cifar10", "Linf", "Standard")]
    >>> row["clean_acc"], row["robust_acc"], row["eps"], row["architecture"]
    (94.78, 0.0, '8/255', 'WideResNet-28-10')
    """
    rows: dict[tuple[str, str, str], dict] = {}
    in_zoo, dataset, threat, eps, header = False, None, None, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            in_zoo = line.strip() == "## Model Zoo"
            dataset = threat = header = None
        elif not in_zoo:
            continue
        elif line.startswith("### "):
            dataset, threat, header = _DATASET_HEADINGS.get(line[4:].strip()), None, None
        elif line.startswith("#### "):
            title = line[5:].strip()
            kind = title.split(",")[0].strip().lower()
            threat = "corruptions" if "corruptions" in kind else THREATS.get(kind)
            found = re.search(r"eps\s*=\s*([0-9./]+)", title)
            eps, header = (found.group(1) if found else None), None
        elif line.startswith("|") and dataset and threat:
            cells = _cells(line)
            if header is None:
                header = cells
                continue
            if not all(key in header for key in ("Model ID", "Clean accuracy", "Robust accuracy")):
                continue
            row = dict(zip(header, cells))
            clean, robust = _percent(row.get("Clean accuracy", "")), _percent(row.get("Robust accuracy", ""))
            if clean is None:  # the |:---:| line under the header
                continue
            rows[(dataset, threat, row["Model ID"])] = {
                "clean_acc": clean, "robust_acc": robust,
                "robust_metric": "corruptions" if threat == "corruptions" else "AutoAttack",
                "eps": eps, "architecture": row.get("Architecture") or None, "source": source}
    return rows


def published(entry: Entry) -> dict | None:
    """The entry's published clean and robust accuracy (percent), the eps they hold at, its
    architecture and where these come from; ``None`` if the installed RobustBench lists none."""
    row = _published_tables().get((entry.dataset, entry.threat_model, entry.name))
    return dict(row) if row else None
