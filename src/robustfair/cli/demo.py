"""``robustfair demo``: train a standard and a PGD-AT model on digits, audit both per class."""
from __future__ import annotations

import argparse

from ..demo import PRESET, discrepancy_rows, reliable_note, run_demo, side_by_side
from ._checks import add_progress_flags, progress_said


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train and audit two models on digits (about 20 s on a CPU)",
                       description=__doc__)
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per model (default: the {PRESET} preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: best available)")
    add_progress_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device,
                      progress=progress_said(args))
    attack = result.reports["PGD-AT"].attacks[0]
    print("attack: " + ", ".join(f"{k}={v}" for k, v in attack.items()))
    print("\nper-class accuracy (%), test split:")
    print(side_by_side(result.reports).to_string())
    print("\ndiscrepancy measures:")
    print(discrepancy_rows(result.reports).to_string())
    print(f"\nnote: {reliable_note(attack['eps'], f'{args.out}/pgd_at/model.safetensors')}")
    print(f"\nwrote {result.paths['report']} and {result.paths['plot']} "
          f"({result.seconds:.0f} s)")
    return 0
