"""``robustfair train``: train a model (standard, PGD-AT, TRADES, FGSM-RS) with a class-wise log.

    robustfair train --dataset digits --model small_cnn --objective pgd_at --eps 0.2 \\
        --steps 7 --epochs 15 --optimizer adam --lr 0.005 --out runs/digits_at

Options come from ``--config FILE.yaml`` (any TrainConfig key) with the flags on top. Running
the same command again resumes after the last complete epoch, or reports that the run is
done; a directory holding a run with a different config is refused (``--force`` starts
over). Under ``torchrun`` the same command trains with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from .._parse import parse_number
from ..errors import ConfigError
from ._checks import add_progress_flags, progress_said


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..training.config import DATA, MITIGATE, SPEED

    p = subparsers.add_parser(
        "train", help="train a model, logging per-class clean and robust accuracy each epoch",
        description=textwrap.fill(
            "Train a model with an adversarial objective; every epoch evaluates each class "
            "(clean and PGD) on a validation split carved from train and writes epochs.csv, a "
            "resumable checkpoint and, at the end, model.safetensors. Rerunning the same "
            "command resumes an interrupted run.", width=90),
        epilog=mitigations_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--config", metavar="FILE", help="YAML file of training options (flags override it)")
    a("--out", required=True, metavar="DIR", help="run directory (resumed if it holds this run)")
    a("--force", action="store_true", help="delete the run in --out and start over")
    a("--logger", action="append", metavar="NAME[:URI]",
      help="an experiment tracker, repeatable: tensorboard (event files in DIR/tensorboard/) "
           "or mlflow[:URI] (default URI: $MLFLOW_TRACKING_URI, else file:./mlruns); needs "
           "pip install 'robustfair[tensorboard]' or 'robustfair[mlflow]'")
    add_progress_flags(p)
    groups = add_setting_flags(p)
    # the settings whose flags are written by hand: repeatable K=V pairs, mitigations
    groups[DATA].add_argument(
        "--dataset-option", action="append", metavar="K=V",
        help="a data set loader option, repeatable; a comma makes a list (e.g. spread=0.1,0.3 "
             "for gaussian, image_size=14 for mnist5k)")
    groups[DATA].add_argument("--model-arg", action="append", metavar="K=V",
                              help="extra model argument, repeatable (e.g. width=16)")
    groups[MITIGATE].add_argument(
        "--mitigation", action="append", metavar="NAME[:K=V,...]",
        help="a mitigation with its options, repeatable (e.g. class_weight:weights=3=50)")
    groups[MITIGATE].add_argument("--class-weight", action="append", metavar="CLASS=W",
                                  help="fixed loss weight of a class (name or index), repeatable")
    groups[SPEED].add_argument(
        "--threads", type=int, metavar="N",
        help="torch CPU threads (default: torch's own; 1 is fastest for small models)")
    p.set_defaults(run=run)
    return p


def add_setting_flags(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """One flag per TrainConfig setting, made from its field: ``--name VALUE`` (the config
    coerces the text), ``--name/--no-name`` for a switch, a comma list for a list; help,
    choices and default from the field's :func:`~robustfair.training.config.setting`.
    Returns the argument groups by name, for the hand-written flags (``cli="--flag"``)."""
    from ..training.config import TrainConfig, setting_choices

    groups: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(meta["group"]))
        if meta["cli"] not in (None, "comma"):
            continue  # set by a hand-written flag (see add_parser)
        flag, help_text = "--" + f.name.replace("_", "-"), meta["help"]
        choices = setting_choices(f.name)
        if choices:
            help_text += f", one of: {', '.join(choices)}"
        if str(f.type).startswith("bool"):
            shown = "the data set decides" if f.name == "flip" else (
                "on" if f.default is True else "off" if f.default is False else None)
            if shown and "default" not in help_text:
                help_text += f" (default: {shown})"
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=_escape(help_text))
            continue
        if f.default is not None and f.default is not dataclasses.MISSING \
                and "default" not in help_text:
            shown = f"{f.default:.4g}" if isinstance(f.default, float) else str(f.default)
            help_text += f" (default: {shown})"
        elif f.default_factory is not dataclasses.MISSING and "default" not in help_text:
            help_text += f" (default: {','.join(map(str, f.default_factory()))})"
        extra = {"nargs": "?", "const": meta["const"]} if meta["const"] is not None else {}
        kind = str(f.type).split("|")[0].strip()
        metavar = meta["metavar"] or ("A,B" if meta["cli"] == "comma" else
                                      {"int": "N", "float": "X"}.get(kind, "NAME"))
        group.add_argument(flag, dest=f.name, metavar=metavar,
                           help=_escape(help_text), **extra)
    return groups


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def mitigations_help() -> str:
    """The ``--mitigation`` choices for ``--help``: each with its summary, options and defaults."""
    import inspect

    from ..training.mitigations import list_mitigations, mitigation_options

    lines = ["mitigations (--mitigation NAME:KEY=VALUE,...), each with its options and defaults",
             "(docs/MITIGATIONS.md describes each method and its paper):"]
    for name in list_mitigations():
        summary, options = mitigation_options(name)
        lines.append(f"  {name}: {summary}")
        shown = ["{}={}".format(k, "(required)" if v is inspect.Parameter.empty
                                else "(not set)" if v is None
                                else f"{v:.4g}" if isinstance(v, float) else v)
                 for k, v in options.items()]
        lines.append(textwrap.fill(", ".join(shown) or "(no options)", width=90,
                                   initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def _generated() -> list[str]:
    """The settings whose flags :func:`add_setting_flags` made (value straight to the config)."""
    from ..training.config import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["cli"] is None]


def parse_value(text: str) -> Any:
    """An option value as written on the command line: bool, int, number ("8/255") or text.

    >>> [parse_value(v) for v in ("true", "3", "0.5", "8/255", "cat")][:3]
    [True, 3, 0.5]
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return parse_number(text)
    except ConfigError:
        return text.strip()


def parse_mitigation(text: str) -> dict[str, Any]:
    """``"name:k=v,k2=v2"`` -> ``{"name": "name", "k": v, "k2": v2}``."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ConfigError(f"--mitigation {text!r} needs a name, e.g. class_weight:weights=3=50")
    entry: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--mitigation option {part!r} must look like KEY=VALUE")
        entry[key.strip()] = parse_value(value)
    return entry


def config_from_args(args: argparse.Namespace):
    from ..training.config import TrainConfig

    overrides: dict[str, Any] = {k: getattr(args, k) for k in _generated()
                                 if getattr(args, k, None) is not None}
    for f in dataclasses.fields(TrainConfig):  # comma lists: --milestones 0.5,0.75
        if f.metadata["cli"] == "comma" and getattr(args, f.name, None) is not None:
            overrides[f.name] = [m for m in getattr(args, f.name).split(",") if m.strip()]
    if args.model_arg:
        pairs = [_key_value(item, "--model-arg", "KEY=VALUE") for item in args.model_arg]
        overrides["model_kwargs"] = {key: parse_value(value) for key, value in pairs}
    if getattr(args, "dataset_option", None):
        pairs = [_key_value(item, "--dataset-option", "KEY=VALUE") for item in args.dataset_option]
        overrides["dataset_options"] = {
            key: [parse_value(v) for v in value.split(",")] if "," in value else parse_value(value)
            for key, value in pairs}
    mitigations = [parse_mitigation(m) for m in args.mitigation or []]
    if args.class_weight:
        pairs = [_key_value(item, "--class-weight", "CLASS=WEIGHT") for item in args.class_weight]
        weights = {cls: parse_number(w, what=f"--class-weight {cls}") for cls, w in pairs}
        mitigations.append({"name": "class_weight", "weights": weights})
    if mitigations:
        overrides["mitigations"] = mitigations
    if args.config:
        return TrainConfig.from_yaml(args.config, **overrides)
    return TrainConfig.from_dict(overrides)


def run(args: argparse.Namespace) -> int:
    from ..training import checkpoint as ckpt
    from ..training import train

    cfg = config_from_args(args)
    # check the mitigation names and options before any data is loaded
    from ..training.mitigations import build_mitigation

    for entry in cfg.mitigations:
        build_mitigation(entry["name"], **{k: v for k, v in entry.items() if k != "name"})
    from ..training.loggers import build_logger

    out = Path(args.out)
    loggers = [build_logger(spec, run_name=out.name) for spec in args.logger or []]
    main_rank = os.environ.get("RANK", "0") == "0"
    if not args.force and main_rank and (out / ckpt.MANIFEST).exists():
        manifest = ckpt.read_manifest(out)
        if manifest and not manifest.get("complete") and not cfg.differences(manifest["config"]):
            print(f"resuming {out} after epoch {manifest['epoch']} of {cfg.epochs}",
                  file=sys.stderr)
    result = train(cfg, out, force=args.force, progress=progress_said(args), callbacks=loggers)
    if not main_rank:
        return 0
    if result.already_complete:
        print(f"{out}: this run is already complete ({result.epochs_run} epochs); "
              f"model: {result.paths.get('model.safetensors')}")
        return 0
    epochs = result.epoch_log
    chosen = epochs[epochs["epoch"] == result.chosen_epoch]
    if result.stopped:
        print(f"stopped early: {result.stopped}")
    line = f"trained {result.epochs_run} epoch(s) into {out}; kept epoch {result.chosen_epoch} " \
           f"({result.keep})"
    if len(chosen):
        r = chosen.iloc[0]
        line += (f": validation clean {r['clean_acc']:.1%}, robust {r['robust_acc']:.1%} "
                 f"(PGD-{cfg.eval_steps}, eps {cfg.eps:.4g}), worst class {r['worst_class']} "
                 f"{r['worst_class_robust_acc']:.1%}")
    print(line)
    print(f"model: {result.paths.get('model.safetensors')}   log: {result.paths.get('epochs.csv')}")
    if len(chosen):
        class_log = result.class_log
        kept = class_log[class_log["epoch"] == result.chosen_epoch]
        warning = (chance_level_warning(float(chosen.iloc[0]["clean_acc"]), len(kept))
                   or lost_class_warning(kept.set_index("class")["clean_acc"]))
        if warning:
            print(warning, file=sys.stderr)
    return 0


def chance_level_warning(clean_acc: float, num_classes: int) -> str | None:
    """A one-line warning when ``clean_acc`` is at chance level (1/K plus a small margin).

    >>> chance_level_warning(0.11, 10)[:40]
    'warning: validation clean accuracy 11.0%'
    >>> chance_level_warning(0.9, 10) is None
    True
    """
    if num_classes < 2:
        return None
    chance = 1.0 / num_classes
    if clean_acc > chance + min(0.05, 0.5 * chance):
        return None
    return (f"warning: validation clean accuracy {clean_acc:.1%} is chance level for "
            f"{num_classes} classes ({chance:.1%}): the model learned nothing useful; try another "
            f"--lr, more --epochs, a smaller --eps, or --objective standard to check the data "
            f"and model first")


def lost_class_warning(class_clean_acc) -> str | None:
    """A one-line warning when some classes end at or below chance-level clean accuracy while
    the model as a whole learned (``class_clean_acc``: validation clean accuracy by class).

    A per-class training radius can become the label (docs/MITIGATIONS.md): the enlarged
    classes' clean images stop being recognised, which the average hides.

    >>> import pandas as pd
    >>> lost_class_warning(pd.Series([0.98, 0.97, 0.02], index=["0", "1", "8"]))[:47]
    'warning: validation clean accuracy of class 8: '
    >>> lost_class_warning(pd.Series([0.98, 0.97, 0.9], index=["0", "1", "8"])) is None
    True
    """
    chance = 1.0 / max(len(class_clean_acc), 1)
    lost = class_clean_acc[class_clean_acc.astype(float) <= chance]
    if lost.empty or len(lost) == len(class_clean_acc):
        return None
    which = ", ".join(f"{c}: {float(a):.1%}" for c, a in lost.items())
    return (f"warning: validation clean accuracy of class {which}, at or below chance "
            f"({chance:.1%}) while the other classes learned (the average hides it); per-class "
            f"weights or eps can do this, e.g. a class trained at a larger eps is recognised by "
            f"the perturbation itself (docs/MITIGATIONS.md)")


def _key_value(item: str, flag: str, form: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``; a one-line error naming ``flag`` otherwise."""
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"{flag} {item!r} must look like {form}")
    return key.strip(), value
