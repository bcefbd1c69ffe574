"""The ``robustfair`` command. Thin: each sub-command lives in its own module here with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only dispatches and turns
user errors into one line and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import sys

from .._device import torch_threads
from ..errors import RobustfairError

# sub-command name -> module under robustfair.cli (imported lazily so `--help` stays fast)
SUBCOMMANDS = {
    "demo": "demo",
    "audit": "audit",
    "card": "card",
    "train": "train",
    "explain": "explain",
    "study": "study",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"robustfair: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustfair", description="Class-wise adversarial robustness.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue  # sub-command not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        print(f"robustfair: error: --threads must be at least 1, got {threads}", file=sys.stderr)
        return 2
    try:
        with torch_threads(threads):
            return int(args.run(args) or 0)
    except RobustfairError as exc:
        print(f"robustfair: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustfair: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
