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
from ._checks import add_progress_flags, progress_wanted


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..data import list_datasets
    from ..models import list_models
    from ..training.objectives import list_objectives

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
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", metavar="NAME",
                   help=f"data set, one of: {', '.join(list_datasets())}")
    g.add_argument("--data-dir", metavar="DIR", help="where data sets are stored")
    g.add_argument("--dataset-option", action="append", metavar="K=V",
                   help="a data set loader option, repeatable; a comma makes a list "
                        "(e.g. spread=0.1,0.3 for gaussian, image_size=14 for mnist5k)")
    g.add_argument("--val-min-per-class",
                   help="validation points per class at least (default 50, at most a quarter "
                        "of the class)")
    g.add_argument("--model", metavar="NAME", help=f"architecture, one of: {', '.join(list_models())}")
    g.add_argument("--model-arg", action="append", metavar="K=V",
                   help="extra model argument, repeatable (e.g. width=16)")
    g = p.add_argument_group("objective and training attack")
    g.add_argument("--objective", metavar="NAME", help=f"one of: {', '.join(list_objectives())}")
    g.add_argument("--eps", help="attack radius, e.g. 8/255 (also used by the per-epoch evaluation)")
    g.add_argument("--norm", help="linf or l2")
    g.add_argument("--steps", help="training attack steps")
    g.add_argument("--alpha", help="training attack step size (default 2.5*eps/steps; fgsm_rs 1.25*eps)")
    g.add_argument("--beta", help="TRADES beta (default 6)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs")
    g.add_argument("--batch-size")
    g.add_argument("--optimizer", help="sgd, adam or adamw")
    g.add_argument("--lr", help="(peak) learning rate, e.g. 0.1 or 2e-3")
    g.add_argument("--momentum")
    g.add_argument("--nesterov", action="store_const", const=True,
                   help="Nesterov momentum (sgd; default: off)")
    g.add_argument("--weight-decay")
    g.add_argument("--schedule", help="constant, step, cosine or onecycle")
    g.add_argument("--milestones", help="step schedule milestones as fractions, e.g. 0.5,0.75")
    g.add_argument("--warmup-epochs")
    g.add_argument("--label-smoothing")
    g.add_argument("--ema", metavar="DECAY", help="keep an EMA of the weights (e.g. 0.999) and evaluate it")
    g.add_argument("--seed")
    g = p.add_argument_group("augmentation")
    g.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   help="no random crops or flips (default: augment)")
    g.add_argument("--pad", help="crop padding (default image_size // 8)")
    g.add_argument("--pad-mode", help="reflect or zeros")
    g.add_argument("--flip", dest="flip", action="store_const", const=True,
                   help="random horizontal flips (default: the data set decides)")
    g.add_argument("--no-flip", dest="flip", action="store_const", const=False)
    g = p.add_argument_group("evaluation, checkpoint rule, fast-AT guard")
    g.add_argument("--val-fraction", help="stratified validation share of train (default 0.1)")
    g.add_argument("--eval-steps", help="PGD steps of the per-epoch evaluation (default 10)")
    g.add_argument("--keep", help="final weights: last, best_avg or best_avg_worst")
    g.add_argument("--no-co-guard", dest="co_guard", action="store_const", const=False,
                   help="fgsm_rs: do not stop on catastrophic overfitting")
    g.add_argument("--co-drop", help="fgsm_rs guard: robust accuracy drop that stops training")
    g = p.add_argument_group("mitigations")
    g.add_argument("--mitigation", action="append", metavar="NAME[:K=V,...]",
                   help="a mitigation with its options, repeatable (e.g. class_weight:weights=3=50)")
    g.add_argument("--class-weight", action="append", metavar="CLASS=W",
                   help="fixed loss weight of a class (name or index), repeatable")
    g = p.add_argument_group("speed")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the fastest available)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's own; 1 is fastest for small models)")
    g.add_argument("--amp", nargs="?", const="on", metavar="MODE",
                   help="mixed precision: on (bf16 where supported, else fp16), bf16, fp16, off "
                        "(default: on for CUDA, off on CPU)")
    g.add_argument("--compile", action="store_const", const=True,
                   help="torch.compile the model (default: off)")
    _show_defaults(p)
    p.set_defaults(run=run)
    return p


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append TrainConfig's default to each value flag's help that does not state one."""
    from ..training.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for action in parser._actions:
        default = defaults.get(action.dest, None)
        if action.nargs == 0 or default is None or default is dataclasses.MISSING:
            continue  # on/off switches say their default in words
        if action.dest not in _DIRECT or "default" in (action.help or ""):
            continue
        shown = f"{default:.4g}" if isinstance(default, float) else str(default)
        text = f"(default: {shown})".replace("%", "%%")
        action.help = f"{action.help} {text}" if action.help else text


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


# flags whose value goes straight to the TrainConfig key of the same name
_DIRECT = ("dataset", "data_dir", "model", "objective", "eps", "norm", "steps", "alpha", "beta",
           "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
           "schedule", "warmup_epochs", "label_smoothing", "ema", "seed", "augment", "pad",
           "pad_mode", "flip", "val_fraction", "val_min_per_class", "eval_steps", "keep",
           "co_guard", "co_drop",
           "device", "amp", "compile")


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
    from ..training import TrainConfig

    overrides: dict[str, Any] = {k: getattr(args, k) for k in _DIRECT
                                 if getattr(args, k, None) is not None}
    if args.milestones is not None:
        overrides["milestones"] = [m for m in args.milestones.split(",") if m.strip()]
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
    result = train(cfg, out, force=args.force, progress=progress_wanted(args), callbacks=loggers)
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
