"""``robustfair audit``: per-class clean and robust accuracy of a model on a data set.

    robustfair audit --checkpoint model.safetensors --dataset cifar10 --eps 8/255 --out runs/audit
    robustfair audit --model my_net.py:build --weights net.pt --normalize cifar10 \\
        --dataset cifar10 --eps 8/255 --out runs/audit

The default attack is AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square), the
field's reliable evaluation; ``--attack pgd`` and the others are faster and weaker options.

Everything is checked before any work starts (data set, attack names and settings, eps, the
model and whether it fits the data set, with one forward pass for a ``--model``); the output
directory is only created after the audit succeeded, and its files (``report.json``,
``by_class.csv``, ``confusion.csv``, ``report.md``) are written under temporary names and
renamed once all of them are complete.

``--shards N`` splits the points into N shards (``robustfair.sharding``), run one after
another in this process (``--executor local``, the default) or as Ray tasks (``--executor
ray [--address ADDR]``). The shards live in ``DIR/shards/`` (``settings.json`` and one
``shard-IIII.json`` per finished shard), each written as it finishes, so they survive a kill
and a rerun of the same command audits only the missing ones; a rerun with other settings
(seed, attacks, data, N) is refused. The report files in ``DIR`` are still published as one
unit at the end, replacing an older result only when complete; ``DIR/shards/`` is kept (it is
the record of each shard: host, time, versions).
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from .._bounds import MAX_QUERIES, MAX_RESTARTS, MAX_STEPS, check_bounded
from .._parse import check_eps, parse_number
from ..errors import AttackError, ConfigError
from ._checks import check_int
from ._sources import add_data_arguments, add_model_arguments, check_source_options, load_sources

EXECUTORS = ("local", "ray")  # robustfair.sharding.EXECUTORS, without importing it for --help

DEFAULT_EPS = "8/255"  # the field's standard L-inf budget on CIFAR (PAPER.md)
DEFAULT_STEPS = 20  # PGD-20, the usual evaluation attack
# attacks whose steps default to DEFAULT_STEPS without --steps; the others (APGD: 100, as in
# AutoAttack) keep their own default
PGD_FAMILY = ("pgd", "cw")
AUDIT_FILES = ("report.json", "by_class.csv", "confusion.csv", "report.md")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "audit",
        help="per-class clean and robust accuracy of a model",
        description="Attack a model (a robustfair checkpoint, or any PyTorch classifier with "
                    "--model) on a data set and report accuracy per class, with 95% "
                    "confidence intervals and class-discrepancy measures.",
    )
    add_audit_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for report.json, by_class.csv, confusion.csv, report.md")
    shard = p.add_argument_group("sharding (one audit split over processes or a Ray cluster)")
    shard.add_argument("--shards", type=int, metavar="N",
                       help="split the points into N shards, each audited as one task and kept in "
                            "DIR/shards/ as it finishes; the same command again audits only the "
                            "missing shards; the result is the same for any N")
    shard.add_argument("--executor", choices=list(EXECUTORS), default=None,
                       help="where shards run: local (this process, one after another; the "
                            "default) or ray (one Ray task per shard, one GPU each where there are GPUs)")
    shard.add_argument("--address", metavar="ADDR",
                       help="with --executor ray: the cluster to join (default: a local Ray instance)")
    p.set_defaults(run=run)
    return p


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    """The model, data and attack options (shared with ``robustfair card``)."""
    add_model_arguments(p)
    add_data_arguments(p)
    p.add_argument("--attack", action="append", metavar="NAME",
                   help="attack(s) to run in order, repeatable or comma-separated (default: "
                        "autoattack, the reliable evaluation; with --targeted-to/--targeted-all: "
                        "apgd-t); pgd, apgd-ce,apgd-t and the others are faster, weaker options")
    p.add_argument("--aa-version", choices=["standard", "plus", "rand"], default="standard",
                   help="AutoAttack version: standard; plus (more restarts and attacks); rand "
                        "(for randomised models: gradients averaged over 20 passes) "
                        "(default: standard)")
    p.add_argument("--eps", default=DEFAULT_EPS, help=f"perturbation budget, e.g. 8/255 (default: {DEFAULT_EPS})")
    p.add_argument("--steps", type=int, metavar="N", help=f"attack iterations (default: {DEFAULT_STEPS} for pgd and cw, "
                        "each attack's own for the others, e.g. 100 for APGD)")
    p.add_argument("--queries", type=int, metavar="Q", dest="n_queries",
                   help="Square's query budget, alone or in autoattack (default: 5000)")
    p.add_argument("--alpha", metavar="A", help="step size, e.g. 2/255 (default: the attack's own)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat model (default: linf)")
    p.add_argument("--restarts", type=int, metavar="R", help="random restarts (default: the attack's own)")
    p.add_argument("--targeted-to", metavar="CLASS", help="aim every attack at this class (name or index)")
    p.add_argument("--targeted-all", action="store_true",
                   help="aim at every other class in turn; adds a source x target success matrix")
    p.add_argument("--batch-size", type=_batch_size, default=256, metavar="B",
                   help="most points per forward/backward pass, or 'auto' (the largest that fits "
                        "on a GPU, 256 on a CPU) (default: 256)")
    p.add_argument("--amp", action="store_true",
                   help="attacks in mixed precision (successes confirmed in full precision)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; slow start)")
    p.add_argument("--no-optimize", dest="optimize", action="store_false",
                   help="run the model as it is (no attack view: no BatchNorm folding, "
                        "no channels_last)")
    p.add_argument("--layout", choices=("channels_last", "contiguous"),
                   help="the attack view's memory layout (default: the one timed faster on the "
                        "first points; the report's model_optimizations say which: pin it to "
                        "repeat an audit to the last bit)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the fastest available)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's own; 1 is fastest for small models)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _attack_names(values: list[str] | None, targeted: bool = False) -> list[str]:
    from ..attacks import ATTACKS

    default = ["apgd-t"] if targeted else ["autoattack"]  # AutoAttack cannot be targeted
    names = [n.strip() for v in (values or default) for n in v.split(",") if n.strip()]
    if not names:
        raise ConfigError("--attack is empty; give at least one attack name")
    for name in names:
        ATTACKS.get(name)  # an unknown name: one line with a did-you-mean and the choices
    return names


def _accepted(name: str) -> set[str] | None:
    """Keyword arguments the attack's constructor takes (``None``: it takes any)."""
    from ..attacks import ATTACKS

    params = inspect.signature(ATTACKS.get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _build_attacks(args, names: list[str], eps: float, alpha: float | None,
                   targeted: bool) -> tuple[list, list[str]]:
    """The attacks, in order, and notes about options that do not apply to some of them."""
    from ..attacks import build_attack

    attacks, notes = [], []
    for name in names:
        accepted = _accepted(name)
        settings = {"eps": eps, "norm": args.norm, "seed": args.seed}
        if name == "autoattack":
            settings["version"] = args.aa_version
        elif args.aa_version != "standard" and "autoattack" not in names:
            notes.append("--aa-version applies to autoattack only")
        default_steps = DEFAULT_STEPS if name in PGD_FAMILY else None
        wanted = {"steps": args.steps if args.steps is not None else default_steps,
                  "alpha": alpha, "restarts": args.restarts, "n_queries": args.n_queries}
        for key, value in wanted.items():
            if value is None:
                continue
            if accepted is None or key in accepted:
                settings[key] = value
            elif key != "steps" or args.steps is not None:
                flag = "queries" if key == "n_queries" else key
                notes.append(f"{name} has no {key} setting; --{flag} does not apply to it")
        if targeted and accepted is None:
            settings["targeted"] = True
        elif accepted is not None and "targeted" in accepted:
            settings["targeted"] = targeted
        attack = build_attack(name, **settings)
        if bool(getattr(attack, "targeted", False)) != targeted:
            if targeted:
                raise AttackError(f"attack {name!r} cannot be targeted; drop it or drop "
                                  f"--targeted-to/--targeted-all")
            raise AttackError(f"attack {name!r} is targeted: add --targeted-to CLASS or --targeted-all")
        attacks.append(attack)  # the audit names the columns (pgd, pgd_2, ...)
    return attacks, notes


def run(args: argparse.Namespace) -> int:
    report = run_audit(args)
    files = write_audit(Path(args.out), report)
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


def write_audit(out: Path, report) -> list[Path]:
    """Write an audit's files into ``out`` as one unit (``report.json`` names it): a kill
    leaves the old audit whole or the new one whole."""
    from .._atomic import write_text_unit
    from ..card.content import confusion_markdown

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    files = {
        out / "report.json": report.to_json_text(),
        out / "by_class.csv": report.by_class.to_csv(),
        out / "confusion.csv": report.confusion("worst").to_csv(),
        out / "report.md": report.to_markdown() + "\n" + confusion_markdown(report),
    }
    try:
        write_text_unit(out, {p.name: text for p, text in files.items()}, record="report.json",
                        what="an audit writing its report")
    except OSError as exc:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise ConfigError(f"cannot write to {out}: {exc}") from None
    return list(files)


def run_audit(args: argparse.Namespace):
    """Check every option, load the model and data, run the audit and print its summary.

    Returns the :class:`~robustfair.metrics.ClassReport`, with where the model and data came
    from (spec, weights, SHA-256 fingerprints) in ``report.meta``. Writes nothing.
    """
    from ..auditing import audit
    from ..card.content import published_comparison
    from ..data import class_index

    # 1. everything that can be checked without the data or the model
    eps = check_eps(parse_number(args.eps, what="--eps"), args.norm, what="--eps")
    alpha = parse_number(args.alpha, what="--alpha") if args.alpha is not None else None
    for value, flag, minimum in ((args.limit, "--limit", 1), (args.steps, "--steps", 0),
                                 (args.n_queries, "--queries", 1),
                                 (args.restarts, "--restarts", 1),
                                 (None if args.batch_size == "auto" else args.batch_size, "--batch-size", 1)):
        check_int(value, flag, minimum)
    for value, flag, bound in ((args.steps, "--steps", MAX_STEPS),
                               (args.n_queries, "--queries", MAX_QUERIES),
                               (args.restarts, "--restarts", MAX_RESTARTS)):
        check_bounded(value, flag, bound)
    if args.targeted_to is not None and args.targeted_all:
        raise ConfigError("give either --targeted-to or --targeted-all, not both")
    if args.layout is not None and not args.optimize:
        raise ConfigError("--layout is the attack view's layout; --no-optimize runs no view: "
                          "give one of them")
    targeted = args.targeted_to is not None or args.targeted_all
    names = _attack_names(args.attack, targeted)
    attacks, notes = _build_attacks(args, names, eps, alpha, targeted)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    from .._publish import refuse_foreign_directories

    refuse_foreign_directories(out, list(AUDIT_FILES))  # before the audit's time is spent

    check_source_options(args)
    shards = _check_shard_options(args)

    # 2. the data and the model, and whether they fit together
    sources = load_sources(args)
    target = class_index(sources.classes, args.targeted_to) if args.targeted_to is not None else None
    n = len(sources.y)

    # 3. the audit (a long one says first how long it can take)
    _say_work(sources, attacks, args, len(sources.classes))
    options = dict(classes=sources.classes, batch_size=args.batch_size, seed=args.seed, target=target,
                   targeted_all=args.targeted_all, amp=args.amp,
                   optimize=args.optimize and (args.layout or True),
                   compile=args.compile)
    if shards is None:
        report = audit(sources.model, sources.x, sources.y, attacks=attacks,
                       progress=True, **options)  # a bar on a terminal, else lines
    else:
        from ..models.source import DataShape
        from ..sharding import audit_sharded

        report = audit_sharded(sources.source, sources.x, sources.y, attacks=attacks,
                               out_dir=out / "shards", shards=shards,
                               executor=args.executor or "local", address=args.address,
                               device=args.device, model=sources.model,
                               data_shape=DataShape(len(sources.classes), sources.x.shape[1],
                                                    sources.x.shape[-1], sources.data_label),
                               **options)
    report.meta.update(dataset=args.dataset, split=args.split, limit=args.limit,
                       checkpoint=None, eps_text=args.eps)
    report.meta.update(sources.provenance)  # where the model and the data came from

    for note in notes:
        print(f"note: {note}")
    print(f"robustfair {args.command}: {sources.model_label} on {sources.data_label} ({args.split}, {n} points), "
          f"eps {args.eps} = {eps:.6g} ({args.norm})")
    print(report.summary())
    for line in published_comparison(report):  # a RobustBench entry: its published numbers beside ours
        print(line)
    for flag in report.flags:
        print(f"robustfair: warning [{flag['code']}]: {flag['message']}", file=sys.stderr)
    return report


def _say_work(sources, attacks, args, num_classes: int) -> None:
    """Print the audit's worst-case work, timed by a first pass, when it can be long."""
    import torch

    from .._tensor_checks import as_float_images
    from .._work_estimate import SAY_ABOVE_SECONDS, estimate, first_pass_seconds

    n = len(sources.y)
    batch = min(n, 256 if args.batch_size == "auto" else args.batch_size)
    targets = max(1, num_classes - 1) if args.targeted_all else 1
    settings = [a.settings() for a in attacks]
    passes, line = estimate(settings, n=n, batch_size=batch, num_classes=num_classes,
                            targets=targets)
    if passes < 1000:  # a short audit: not worth a timing pass
        return
    device = next(iter(sources.model.parameters()), torch.empty(0)).device
    seconds = first_pass_seconds(sources.model, as_float_images(sources.x[:batch].to(device)))
    if seconds is None or passes * seconds < SAY_ABOVE_SECONDS:
        return
    _, line = estimate(settings, n=n, batch_size=batch, num_classes=num_classes,
                       targets=targets, seconds_per_pass=seconds)
    print(f"robustfair {args.command}: {line}", file=sys.stderr, flush=True)


def _check_shard_options(args: argparse.Namespace) -> int | None:
    """``--shards``, ``--executor`` and ``--address``, before anything is loaded."""
    shards = getattr(args, "shards", None)  # robustfair card shares run_audit, without them
    executor, address = getattr(args, "executor", None), getattr(args, "address", None)
    if shards is None:
        if executor is not None or address is not None:
            raise ConfigError("--executor and --address go with --shards N")
        return None
    check_int(shards, "--shards", 1)
    if address is not None and executor != "ray":
        raise ConfigError("--address names a Ray cluster: it goes with --executor ray")
    return shards


def _batch_size(text: str) -> int | str:
    """``--batch-size``: an integer (checked later, with the other numbers) or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None
