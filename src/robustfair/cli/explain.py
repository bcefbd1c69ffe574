"""``robustfair explain``: why are some classes less robust? Confusion sinks, class similarity,
margins, corruptions and targeted vulnerability of one checkpoint.

    robustfair explain --checkpoint model.safetensors --dataset digits --eps 0.2 --out runs/explain
    robustfair explain --model robustbench:Standard --dataset cifar10 --out runs/explain

Writes ``explain.md``, ``explain.json`` and four figures into ``--out`` (staged in a temporary
directory and renamed into place) and prints the key findings. ``--feature-datasets`` adds
Ilyas et al.'s robust / non-robust data sets, which trains models (slow on large data).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .._parse import check_eps, parse_number
from ..errors import ConfigError
from ._checks import add_progress_flags, check_int, check_model_fits, progress_said
from ._sources import add_model_arguments, model_source

DEFAULT_EPS = "8/255"  # the field's standard L-inf budget on CIFAR (PAPER.md)
DEFAULT_STEPS = 20     # PGD-20, the usual evaluation attack


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain",
        help="why some classes are less robust (sinks, similarity, margins, corruptions)",
        description="Explain class-wise robustness of a saved model: where adversarial examples "
                    "land, which classes sit close together in feature space, per-class margins, "
                    "common corruptions and targeted vulnerability of one class.",
    )
    add_model_arguments(p)  # --checkpoint, or --model SPEC [--weights ...] as for audit
    p.add_argument("--dataset", metavar="NAME",
                   help="data set name, e.g. digits (default: the one recorded in the checkpoint)")
    p.add_argument("--data-dir", metavar="DIR", help="where data sets are stored")
    p.add_argument("--eps", default=DEFAULT_EPS, help=f"perturbation budget, e.g. 8/255 (default: {DEFAULT_EPS})")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat model (default: linf)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                   help=f"PGD steps of the audit and targeted attacks (default: {DEFAULT_STEPS})")
    p.add_argument("--margin-steps", type=int, default=DEFAULT_STEPS, metavar="N",
                   help=f"PGD steps per bisection step of the margin search (default: {DEFAULT_STEPS})")
    p.add_argument("--eps-max", metavar="E", help="margin search limit (default: 3 x eps, at most 1 for linf)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N test points")
    p.add_argument("--class", dest="target_class", metavar="C",
                   help="class for the targeted measure, name or index (default: the least robust class)")
    p.add_argument("--n-perm", type=int, default=10000, metavar="N",
                   help="permutations for the correlation's p-value (default: 10000)")
    p.add_argument("--feature-datasets", action="store_true",
                   help="also build the robust / non-robust feature data sets and train on them (slow)")
    p.add_argument("--standard-checkpoint", metavar="PATH",
                   help="a normally trained model for the non-robust data set (default: train one)")
    p.add_argument("--feature-images", type=int, default=500, metavar="N",
                   help="training images per feature data set (default: 500)")
    p.add_argument("--feature-steps", type=int, default=200, metavar="N",
                   help="optimisation steps per robust-data-set image (default: 200)")
    p.add_argument("--feature-epochs", type=int, default=10, metavar="N",
                   help="epochs of each model trained on a feature data set (default: 10)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="points per batch (default: 256)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the fastest available)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's own; 1 is fastest for small models)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for explain.md, explain.json and figures (STUDY_DIR/explain/NAME folds it into that study's report)")
    add_progress_flags(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data import class_index, load_dataset
    from ..explain import explain_model
    from ..models import load_model, read_checkpoint_metadata

    # 1. everything that can be checked without the data or the model
    eps = check_eps(parse_number(args.eps, what="--eps"), args.norm, what="--eps")
    if eps <= 0:
        raise ConfigError(f"--eps must be positive, got {args.eps!r}")
    eps_max = parse_number(args.eps_max, what="--eps-max") if args.eps_max is not None else None
    if eps_max is not None and eps_max <= 0:
        raise ConfigError(f"--eps-max must be positive, got {args.eps_max!r}")
    for value, flag, minimum in ((args.limit, "--limit", 1), (args.steps, "--steps", 1),
                                 (args.margin_steps, "--margin-steps", 1), (args.n_perm, "--n-perm", 1),
                                 (args.batch_size, "--batch-size", 1), (args.feature_images, "--feature-images", 2),
                                 (args.feature_steps, "--feature-steps", 1),
                                 (args.feature_epochs, "--feature-epochs", 1)):
        check_int(value, flag, minimum)
    if args.standard_checkpoint and not args.feature_datasets:
        raise ConfigError("--standard-checkpoint is only used with --feature-datasets")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")

    if args.checkpoint is not None:
        for flag, value in (("--weights", args.weights), ("--normalize", args.normalize),
                            ("--output-index", args.output_index), ("--model-dir", args.model_dir)):
            if value is not None:
                raise ConfigError(f"{flag} goes with --model SPEC; a --checkpoint carries its own")

    # 2. the data and the model, and whether they fit together
    dataset_name = args.dataset
    if dataset_name is None and args.checkpoint is None:
        raise ConfigError("--model needs --dataset (only a robustfair checkpoint records its data set)")
    if dataset_name is None:
        dataset_name = (read_checkpoint_metadata(args.checkpoint).get("metadata") or {}).get("dataset")
        if not dataset_name:
            raise ConfigError(f"checkpoint {args.checkpoint} does not record its data set; give --dataset")
    ds = load_dataset(dataset_name, data_dir=args.data_dir)
    target = class_index(ds.classes, args.target_class) if args.target_class is not None else None
    provenance: dict = {}
    if args.checkpoint is not None:
        model, label = load_model(args.checkpoint, device=args.device), str(args.checkpoint)
        check_model_fits(model, ds, args.checkpoint, dataset_name)
    else:
        from .._device import resolve_device
        from .._tensor_checks import as_float_images
        from ..models.source import DataShape

        source = model_source(args)
        model, provenance = source.build(DataShape.of(ds, dataset_name), device=resolve_device(args.device),
                                         example=as_float_images(ds.test.x[:2]))
        label = source.label
    standard = None
    if args.standard_checkpoint:
        standard = load_model(args.standard_checkpoint, device=args.device)
        check_model_fits(standard, ds, args.standard_checkpoint, dataset_name)

    # 3. the measures, then the files
    options = {"n_images": args.feature_images, "robust_steps": args.feature_steps,
               "train_config": {"epochs": args.feature_epochs, "seed": args.seed},
               "out_dir": out / "feature_runs", "train_standard": standard is None}
    explanation = explain_model(
        model, ds, eps=eps, norm=args.norm, limit=args.limit, target_class=target,
        attack_steps=args.steps, margin_steps=args.margin_steps, eps_max=eps_max, n_perm=args.n_perm,
        feature_datasets=args.feature_datasets, standard_model=standard,
        feature_options=options if args.feature_datasets else None,
        seed=args.seed, batch_size=args.batch_size, progress=progress_said(args))
    explanation.meta.update(checkpoint=args.checkpoint and str(args.checkpoint), eps_text=args.eps,
                            **provenance)
    paths = explanation.save(out)

    n = explanation.settings["n"]
    print(f"robustfair explain: {label} on {dataset_name} ({n} test points), "
          f"eps {args.eps} = {eps:.6g} ({args.norm})")
    for finding in explanation.findings():
        print(f"- {finding}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
