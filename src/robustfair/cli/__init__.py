"""The ``robustfair`` command. Thin: each sub-command lives in its own module here with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only dispatches and turns
user errors into one line and exit code 2."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from typing import Iterator

import warnings

from .._bounds import check_seed_option
from .._device import torch_threads
from ..data import NO_DOWNLOAD_ENV
from ..errors import RobustfairError, one_line, out_of_memory

# sub-command name -> module under robustfair.cli (imported lazily so `--help` stays fast)
SUBCOMMANDS = {
    "demo": "demo",
    "audit": "audit",
    "card": "card",
    "train": "train",
    "explain": "explain",
    "study": "study",
    "leaderboard": "leaderboard",
}


# what an interrupted command keeps: rerunning it carries on where it stopped
_RESUME_HINT = {
    "train": "; rerun the same command to resume after the last complete epoch",
    "leaderboard": "; rerun the same command to audit the models that have not finished",
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
    _add_no_download(parser)
    return parser


def _add_no_download(parser: argparse.ArgumentParser) -> None:
    """Give every (sub-)command that reads data sets (it has ``--data-dir``) ``--no-download``."""
    children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in children:
        for child in action.choices.values():
            _add_no_download(child)
    if not children and "--data-dir" in parser._option_string_actions:
        parser.add_argument("--no-download", action="store_true",
                            help=f"never download a data set (or a RobustBench checkpoint): a missing one is an error "
                                 f"(the same as {NO_DOWNLOAD_ENV}=1)")


@contextlib.contextmanager
def _downloads_off(off: bool) -> Iterator[None]:
    """Set ``ROBUSTFAIR_NO_DOWNLOAD`` for the command (worker processes inherit it)."""
    before = os.environ.get(NO_DOWNLOAD_ENV)
    if off:
        os.environ[NO_DOWNLOAD_ENV] = "1"
    try:
        yield
    finally:
        if off and before is None:
            os.environ.pop(NO_DOWNLOAD_ENV, None)
        elif off:
            os.environ[NO_DOWNLOAD_ENV] = before


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
    # Python warnings are held back: an error is then the one line it promises to be; after a
    # run that worked they follow its output, one line each
    with warnings.catch_warnings(record=True) as held:
        try:
            check_seed_option(getattr(args, "seed", None))
            with torch_threads(threads), _downloads_off(getattr(args, "no_download", False)):
                code = int(args.run(args) or 0)
        except RobustfairError as exc:
            return _error(str(exc))
        except OSError as exc:  # the machine, not the input (a full disk, a permission): one line
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            return _error(f"{exc.strerror or exc}{where}")
        except MemoryError as exc:  # an input asked for more memory than there is
            return _error(out_of_memory(exc))
        except RuntimeError as exc:  # the device's memory ("CUDA out of memory"): one line too
            from .._batch_size import is_out_of_memory

            if not is_out_of_memory(exc):
                raise
            return _error(out_of_memory(exc) + "; try a smaller --batch-size")
        except KeyboardInterrupt:
            print(f"robustfair: interrupted{_RESUME_HINT.get(args.command, '')}", file=sys.stderr)
            return 130
    for w in held:
        print(f"robustfair: warning: {w.category.__name__}: {one_line(str(w.message))}",
              file=sys.stderr)
    return code


def _error(message: str) -> int:
    print(f"robustfair: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
