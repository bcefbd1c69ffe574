"""``robustfair study``: run a grid of training runs, tabulate and report it.

    robustfair study run SPEC|PRESET --out DIR [--executor local|ray] [--address ADDR] [--workers N]
    robustfair study table DIR        # DIR/results.{csv,parquet}, DIR/epochs.{csv,parquet}
    robustfair study report DIR       # DIR/report/report.html (+ PNGs)
    robustfair study presets          # the shipped presets

Running again on the same DIR skips finished runs and resumes interrupted ones.
"""
from __future__ import annotations

import argparse
import sys

from ._checks import add_progress_flags, progress_said


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study", help="run, tabulate and report a grid of training runs",
        description="A study: a YAML grid of training runs (data set × model × objective × "
                    "mitigation × eps × optimiser × seed ...), each trained, audited per class "
                    "and stored under DIR/runs/<hash>/; then one tidy table and an HTML report.")
    sub = p.add_subparsers(dest="study_command", metavar="ACTION")
    sub.required = True

    r = sub.add_parser("run", help="run every unfinished run of a study",
                       description="Run a study spec (a YAML file) or a shipped preset. "
                                   "Finished runs are skipped, interrupted ones resume.")
    r.add_argument("spec", metavar="SPEC|PRESET", help="a study YAML file or a preset name "
                                                       "(see: robustfair study presets)")
    r.add_argument("--out", required=True, metavar="DIR", help="the study directory")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): this machine; ray: one Ray task per run")
    r.add_argument("--address", metavar="ADDR",
                   help="Ray cluster address (default: start a local Ray instance)")
    r.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local executor: N worker processes, one per device (default: 1, "
                        "in this process)")
    r.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the fastest available)")
    r.add_argument("--data-dir", metavar="DIR", help="where data sets are stored")
    r.add_argument("--logger", metavar="NAME[:URI]",
                   help="track every run's training: tensorboard (event files in each run's "
                        "train/tensorboard/) or mlflow[:URI] (one MLflow run per grid point, "
                        "tagged with its axes, in an experiment named after the study)")
    r.add_argument("--dry-run", action="store_true",
                   help="list the runs and whether each is done, then stop")
    add_progress_flags(r)
    r.set_defaults(run=_run)

    t = sub.add_parser("table", help="write the results as tidy CSV and Parquet tables")
    t.add_argument("dir", metavar="DIR", help="the study directory")
    t.set_defaults(run=_table)

    rep = sub.add_parser("report", help="write an HTML report with figures")
    rep.add_argument("dir", metavar="DIR", help="the study directory")
    rep.set_defaults(run=_report)

    pre = sub.add_parser("presets", help="list the shipped study presets")
    pre.set_defaults(run=_presets)
    return p


def _run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..study.catalog import resolve_spec
    from ..study.executors import run_study
    from ..study.grid import expand
    from ..study.store import StudyStore

    if args.address and args.executor != "ray":
        raise ConfigError("--address is for the ray executor (add --executor ray)")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    spec = resolve_spec(args.spec)
    if args.dry_run:
        store = StudyStore(args.out)
        runs = expand(spec)
        for run in runs:
            seed = run.axes.get("seed")
            print(f"{run.key}  {store.status(run.key):8s} {run.label}"
                  + (f", seed={seed}" if seed is not None else ""))
        print(f"{len(runs)} runs" + (f"; expected time: {spec.expected_time}"
                                     if spec.expected_time else ""))
        return 0
    if spec.expected_time:
        print(f"study {spec.name}: expected time {spec.expected_time}", file=sys.stderr)
    result = run_study(spec, args.out, executor=args.executor, workers=args.workers,
                       address=args.address, device=args.device, data_dir=args.data_dir,
                       progress=progress_said(args), logger=args.logger)
    n = len(result.runs)
    print(f"{n} runs: {len(result.already_done)} already done, {len(result.completed)} run now, "
          f"{len(result.failed)} failed ({result.seconds:.0f} s)")
    for key, message in result.failed.items():
        print(f"failed {key}: {message}  (details: {args.out}/runs/{key}/error.txt)",
              file=sys.stderr)
    if result.failed:
        return 1
    print(f"next: robustfair study table {args.out}; robustfair study report {args.out}")
    return 0


def _table(args: argparse.Namespace) -> int:
    from ..study.table import write_tables

    written, tables, note = write_tables(args.dir)
    done = tables.total_runs - len(tables.missing)
    print(f"{len(tables.results)} rows from {done} of {tables.total_runs} runs")
    for path in written.values():
        print(path)
    if note:
        print(note, file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..study.report import build_report

    report = build_report(args.dir)
    print(report.html)
    for name, reason in report.skipped.items():
        print(f"not drawn: {name}: {reason}", file=sys.stderr)
    return 0


def _presets(args: argparse.Namespace) -> int:
    from ..study.catalog import list_presets, load_preset
    from ..study.grid import expand

    for name in list_presets():
        spec = load_preset(name)
        runs = len(expand(spec))
        time = f"; {spec.expected_time}" if spec.expected_time else ""
        print(f"{name}: {runs} runs{time}\n    {spec.description}")
    return 0
