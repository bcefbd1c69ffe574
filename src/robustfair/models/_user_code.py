"""Run a user's own code (importing their model file, calling their factory) contained.

User code may call ``sys.exit`` (directly, or through ``argparse`` parsing ``sys.argv`` at
import time), which would otherwise end robustfair with the user's exit code, or with an
argparse message under robustfair's name that reads as if robustfair rejected its own valid
command. Here the code runs with ``sys.argv`` as a script run on its own would see it (just
the file name), what it prints to stderr is held back until it is known to have worked, and a
``SystemExit`` becomes one :class:`~robustfair.errors.ModelError` line with its code and
message. ``KeyboardInterrupt`` passes through (the CLI reports it as an interruption).

>>> with contained("module demo.py", argv0="demo.py"):
...     import sys; sys.argv
['demo.py']
>>> with contained("module demo.py", argv0="demo.py"):
...     raise SystemExit(3)
Traceback (most recent call last):
...
robustfair.errors.ModelError: module demo.py exited with code 3 instead of returning
"""
from __future__ import annotations

import contextlib
import io
import sys
from typing import Iterator

from ..errors import ModelError


def _exit_text(exc: SystemExit, said: str) -> str:
    code = exc.code
    if code is None or isinstance(code, int):
        text = f"exited with code {0 if code is None else code}"
    else:  # sys.exit("message") prints the message and exits 1
        text = f"exited with code 1 ({str(code).strip().splitlines()[0] if str(code).strip() else ''})"
    last = [line for line in said.strip().splitlines() if line.strip()]
    if last:  # e.g. argparse's "error: unrecognized arguments: ..."
        text += f"; it printed: {last[-1].strip()}"
    return text


class _Held(io.TextIOBase):
    """stderr as user code sees it: held back until :meth:`release`, then passed straight
    through (a logging handler the code set up on it keeps working afterwards)."""

    def __init__(self, target) -> None:
        super().__init__()
        self.target, self.held, self.released = target, [], False

    def write(self, text: str) -> int:
        if self.released:
            return self.target.write(text)
        self.held.append(text)
        return len(text)

    def flush(self) -> None:
        if self.released:
            self.target.flush()

    def getvalue(self) -> str:
        return "".join(self.held)

    def release(self, show: bool) -> None:
        if show and self.held:
            self.target.write(self.getvalue())
        self.held, self.released = [], True


@contextlib.contextmanager
def contained(what: str, *, argv0: str | None = None) -> Iterator[None]:
    """Run the block as user code: ``what`` names it in the error (e.g. ``importing x.py``)."""
    saved_argv, saved_err = sys.argv, sys.stderr
    held = _Held(saved_err)
    if argv0 is not None:
        sys.argv = [argv0]
    sys.stderr = held
    ok = False
    try:
        yield
        ok = True
    except SystemExit as exc:
        said = held.getvalue()  # the exit's own message goes into the one line instead
        raise ModelError(f"{what} {_exit_text(exc, said)} instead of returning") from None
    finally:
        sys.argv = saved_argv
        sys.stderr = saved_err
        held.release(show=ok)  # it worked: what it said is the user's to see
