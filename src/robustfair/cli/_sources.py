"""The model and the data of ``robustfair audit`` and ``robustfair card``: their options and
their loading.

A model is a robustfair checkpoint (``--checkpoint``) or any PyTorch classifier
(``--model SPEC [--weights PATH]``, see :mod:`robustfair.models.external`); data is a named
data set, a folder of images (``--dataset image_folder --data-dir FOLDER``) or a test set in
one file (``--dataset npz:PATH``). Input size and class count come from the data; one forward
pass checks that the model fits them before any attack runs.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError, ModelError

MODEL_HELP = (
    "the network: a robustfair model name (e.g. preact_resnet18, needs --weights), timm:NAME "
    "(needs timm: pip install 'robustfair[timm]'; without --weights, timm's pretrained weights; "
    "timm:NAME?img_size=32&patch_size=4 passes options to timm.create_model), "
    "robustbench:NAME (a RobustBench zoo entry for --dataset cifar10/cifar100/imagenet and "
    "--norm; robustbench:DATASET/THREAT/NAME, e.g. robustbench:cifar10/Linf/Standard, with any "
    "data; pip install 'robustfair[robustbench]'), "
    "or path/to/file.py:factory / package.module:factory, a function returning an nn.Module "
    "(it gets num_classes, in_channels, image_size if it names them). Naming a file or module "
    "IMPORTS AND RUNS THAT CODE: only name code you trust"
)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="PATH", help="a .safetensors file saved by robustfair")
    which.add_argument("--model", metavar="SPEC", help=MODEL_HELP)
    p.add_argument("--weights", metavar="PATH",
                   help="weights for --model: .safetensors, or a PyTorch state dict .pt/.pth "
                        "(read with torch.load(weights_only=True), never a full pickle; a "
                        "'state_dict'/'model' key and DDP's 'module.' prefix are unwrapped)")
    p.add_argument("--normalize", metavar="STATS",
                   help="for --model trained on normalised inputs: cifar10, cifar100, imagenet "
                        "or MEAN/STD (e.g. 0.5/0.25, or per channel 0.49,0.48,0.45/0.25,0.24,0.26); "
                        "inputs stay in [0, 1] and the model gets (x - mean) / std")
    p.add_argument("--output-index", metavar="N",
                   help="for --model returning several outputs, e.g. (logits, features): the "
                        "position (or key) of the logits")
    p.add_argument("--model-dir", metavar="DIR",
                   help="for --model robustbench:...: the folder of RobustBench checkpoints, "
                        "DIR/DATASET/THREAT/NAME.pt, e.g. DIR/cifar10/Linf/Standard.pt "
                        "(default: RobustBench's own, ./models)")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help="a data set name (e.g. cifar10 or digits), image_folder (a folder of "
                        "class sub-folders given by --data-dir) or npz:PATH (arrays x, uint8 "
                        "N×C×H×W or N×H×W×C, and y; optional classes)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where data sets are stored; for image_folder, the folder itself")
    p.add_argument("--split", choices=["test", "train"], default="test", help="split to audit (default: test)")
    p.add_argument("--limit", type=int, metavar="N", help="audit only the first N points of the split")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="image_folder: resize every image to N×N (default: all must share one size)")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--grey", dest="channels", action="store_const", const=1,
                        help="image_folder: read images as 1-channel grey")
    colour.add_argument("--rgb", dest="channels", action="store_const", const=3,
                        help="image_folder: read images as 3-channel RGB (default: grey only if all are)")


@dataclass
class Sources:
    """What an audit runs on: the model, the points, and where both came from."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    data_label: str
    model_label: str
    provenance: dict = field(default_factory=dict)
    source: object = None  # the ModelSource: what rebuilds the model in another process


def check_source_options(args: argparse.Namespace) -> None:
    """Option combinations that are wrong before anything is loaded."""
    if args.model is None:
        for flag, value in (("--weights", args.weights), ("--normalize", args.normalize),
                            ("--output-index", args.output_index)):
            if value is not None:
                raise ConfigError(f"{flag} goes with --model SPEC; a --checkpoint carries its own")
    if not (args.model or "").strip().startswith("robustbench:"):
        if args.model_dir is not None:
            raise ConfigError("--model-dir goes with --model robustbench:NAME")
    if args.dataset != "image_folder" and (args.image_size is not None or args.channels is not None):
        raise ConfigError("--image-size, --grey and --rgb apply to --dataset image_folder")
    if args.dataset == "image_folder" and not args.data_dir:
        raise ConfigError("--dataset image_folder needs its folder: --data-dir FOLDER")
    if args.dataset.startswith("npz:") and args.split != "test":
        raise ConfigError("an npz:PATH data set is a test set only; drop --split train")


def model_source(args: argparse.Namespace):
    """The :class:`~robustfair.models.source.ModelSource` the model options name."""
    from ..models.source import ModelSource

    if args.checkpoint is not None:
        return ModelSource(checkpoint=args.checkpoint)
    spec = args.model.strip()
    return ModelSource(spec=spec, weights=args.weights, normalize=args.normalize,
                       output_index=_output_index(args.output_index),
                       options=_robustbench_options(args) if spec.startswith("robustbench:") else ())


def _robustbench_options(args: argparse.Namespace) -> tuple:
    """What ``robustbench:`` takes besides the name: for ``robustbench:NAME``, the data set
    (when --dataset is one of RobustBench's) and the threat model (from --norm)."""
    from ..models.robustbench import DATASETS, DEFAULT_MODEL_DIR, THREATS

    from ..data import downloads_forbidden

    download = not (getattr(args, "no_download", False) or downloads_forbidden())
    options = {"model_dir": args.model_dir or DEFAULT_MODEL_DIR, "download": download}
    if args.dataset in DATASETS:
        options["dataset"] = args.dataset
    if getattr(args, "norm", None) in THREATS:
        options["threat_model"] = THREATS[args.norm]
    return tuple(sorted(options.items()))


def load_sources(args: argparse.Namespace) -> Sources:
    """Load the data, then the model built for it, and check they fit with one forward pass."""
    from .._device import resolve_device
    from .._tensor_checks import as_float_images
    from ..models.source import DataShape

    ds, x, y, label = _load_data(args)
    n = len(y) if args.limit is None else min(args.limit, len(y))
    if n == 0:
        raise ConfigError(f"the {args.split} split of {label} is empty")
    x, y = x[:n], y[:n]
    device = resolve_device(args.device)
    source = model_source(args)
    if source.checkpoint is None and source.spec in _robustfair_models() and source.weights is None:
        raise ModelError(f"--model {source.spec} builds an untrained network: give its --weights "
                         f"(or use --checkpoint for a file saved by robustfair)")
    shape = DataShape(ds.num_classes, ds.channels, ds.image_size,
                      f"dataset {args.dataset!r}" if source.checkpoint is not None else label)
    model, provenance = source.build(shape, device=device, example=as_float_images(x[:2]))
    if source.checkpoint is not None:
        saved = (getattr(model, "robustfair_metadata", None) or {})
        if saved.get("classes") and [str(c) for c in saved["classes"]] != list(ds.classes):
            print(f"robustfair: warning: the checkpoint's class names differ from {args.dataset!r}'s; "
                  f"reporting with the data set's names", file=sys.stderr)
    provenance["data_sha256"] = data_sha256(x, y)
    return Sources(model=model, x=x, y=y, classes=list(ds.classes), data_label=label,
                   model_label=source.label, provenance=provenance, source=source)


def _robustfair_models() -> list[str]:
    from ..models import list_models

    return list_models()


def data_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the audited images and labels (see :func:`robustfair.data.audit_source.points_sha256`)."""
    from ..data.audit_source import points_sha256

    return points_sha256(x, y)


def _load_data(args):
    """The data set, the images and labels to audit (before --limit), and a label for output."""
    from ..data.audit_source import load_audit_data

    data = load_audit_data(args.dataset, split=args.split, data_dir=args.data_dir,
                           image_size=args.image_size, channels=args.channels,
                           progress=sys.stderr.isatty())
    return data.dataset, data.x, data.y, data.label


def _output_index(text: str | None) -> int | str | None:
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        if not text.isidentifier():
            raise ConfigError(f"--output-index must be a position (0, 1, ...) or a key name, got {text!r}") from None
        return text
