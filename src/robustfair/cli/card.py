"""``robustfair card``: audit a model and write a one-page audit card for a model release.

    robustfair card --model my_net.py:build --weights net.pt --dataset npz:test.npz \\
        --eps 8/255 --out release/card

Takes the same options as ``robustfair audit`` and writes ``card.html`` (one self-contained
page: figures inlined), ``card.png`` (the headline numbers and figures as one image) and the
``report.json`` they were made from. Nothing is written unless the audit succeeded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .audit import add_audit_arguments, run_audit


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "card",
        help="audit a model and write a one-page HTML + PNG audit card",
        description="Audit a model like `robustfair audit` and write an audit card: per-class "
                    "clean and robust accuracy with intervals, the worst class, the "
                    "discrepancy measures, the adversarial confusion matrix, which attack broke "
                    "how many points per class, the sanity flags, every attack setting, and "
                    "SHA-256 fingerprints of weights and data with versions, device and time.",
    )
    add_audit_arguments(p)
    p.add_argument("--title", help="the card's title (default: 'Robustness card: MODEL')")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for card.html, card.png, report.json")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..card import build_card

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    from .._publish import refuse_foreign_directories

    refuse_foreign_directories(out, ["card.html", "card.png", "report.json"])  # before the audit
    report = run_audit(args)
    card = build_card(report, out, title=args.title)
    print(f"wrote {card.html}, {card.png}, {card.report}")
    return 0
