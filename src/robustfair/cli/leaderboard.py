"""``robustfair leaderboard``: audit many models on the same points into one class-wise table.

    robustfair leaderboard SPEC.yaml --out DIR [--executor local|ray] [--address ADDR] [--shards N]
    robustfair leaderboard --preset robustbench-cifar10-linf --out DIR
    robustfair leaderboard --list-presets

Each model is one job with its own folder (DIR/models/NAME: report.json, card); running the
same command again audits only the models that have not finished. Writes DIR/leaderboard.csv
(and .parquet), DIR/classwise.csv and DIR/leaderboard.html.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "leaderboard", help="audit many models on the same points: one class-wise table",
        description="Audit every model of a leaderboard spec (YAML) on the same points with the "
                    "same attacks, one resumable job per model; then leaderboard.csv, "
                    "classwise.csv and leaderboard.html in --out.")
    p.add_argument("spec", nargs="?", metavar="SPEC", help="a leaderboard YAML file")
    p.add_argument("--preset", metavar="NAME", help="a shipped preset instead of SPEC "
                                                    "(see --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="list the shipped presets and stop")
    p.add_argument("--out", metavar="DIR", help="the leaderboard folder")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): the models one after another here; ray: one Ray task "
                        "per model, with the spec's resources")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--shards", type=int, metavar="N",
                   help="audit each model in N shards (kept in DIR/shards/NAME, resumable); the "
                        "models then run one after another and --executor says where the shards "
                        "run (ray: one task per shard)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the fastest available)")
    p.add_argument("--data-dir", metavar="DIR", help="where data sets are stored (overrides the spec's)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per audit")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no per-model lines on stderr and no bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..leaderboard import list_presets, load_preset, load_spec, run_leaderboard

    if args.list_presets:
        for name in list_presets():
            spec = load_preset(name)
            time = f"; {spec.expected_time}" if spec.expected_time else ""
            print(f"{name}: {len(spec.models)} models on {spec.dataset}{time}\n    {spec.description}")
        return 0
    if (args.spec is None) == (args.preset is None):
        raise ConfigError("give a leaderboard SPEC file or --preset NAME (one of them)")
    if not args.out:
        raise ConfigError("--out DIR is required: the leaderboard folder")
    if args.address and args.executor != "ray":
        raise ConfigError("--address is for the ray executor (add --executor ray)")
    spec = load_preset(args.preset) if args.preset else load_spec(args.spec)
    if spec.expected_time:
        print(f"leaderboard {spec.name}: expected time {spec.expected_time}", file=sys.stderr)
    result = run_leaderboard(spec, args.out, executor=args.executor, address=args.address,
                             device=args.device, data_dir=args.data_dir, threads=args.threads,
                             shards=args.shards, progress=args.progress)
    print(f"{len(result.models)} models: {len(result.already_done)} already done, "
          f"{len(result.completed)} audited now, {len(result.failed)} failed "
          f"({result.seconds:.0f} s)")
    for name, message in result.failed.items():
        print(f"failed {name}: {message}  (details: {args.out}/models/{name}/error.txt)", file=sys.stderr)
    for path in result.outputs.values():
        print(f"wrote {path}")
    return 1 if result.failed else 0
