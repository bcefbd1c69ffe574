"""Saying how long work is going: a tqdm bar on a terminal, one line per finished piece otherwise.

A log file (CI, a batch job, ``2> audit.log``) gets no bar, whose carriage returns make an
unreadable file, but a line each time a piece of the work finishes: what finished, how many
units (points, runs, models) are left, the time so far and an estimate of the time left. The
estimate is the time so far per unit of work done, times the work still to run; the caller
says how much work each piece is (for an audit, model passes per point times the points an
attack still runs on), so a cheap piece does not make a long remainder look short.

>>> import io
>>> log = io.StringIO()
>>> with Progress(4, "explain", unit="step", enabled=True, stream=log) as p:
...     p.done("margins", units=1)
>>> log.getvalue().startswith("robustfair explain: margins done; 3 steps left; ")
True
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from typing import Callable, Iterator, TextIO

__all__ = ["Progress", "on_terminal", "duration", "listen_for_parts", "part_done"]


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) shows a live bar: a terminal, or a notebook."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or odd stream
        return False
    return stream is sys.stderr and "ipykernel" in sys.modules


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``: short enough for a log line.

    >>> duration(42.4), duration(185), duration(7800)
    ('42s', '3m 05s', '2h 10m')
    """
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class Progress:
    """Progress over ``total`` units (points, runs, models) of one piece of work.

    ``enabled=False``: silent. On a terminal: a tqdm bar over the units. Otherwise: one line
    per :meth:`done` on ``stream`` (stderr). ``work``: the total work in any unit that tracks
    time (default: one per unit); :meth:`done` keeps it current.
    """

    def __init__(self, total: int, what: str, *, unit: str = "point", enabled: bool = True,
                 done: int = 0, work: float | None = None, stream: TextIO | None = None) -> None:
        self.what, self.unit, self.total, self.units = what, unit, total, done
        self.work_total = float(total - done if work is None else work)
        self.work_done = 0.0
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.started = time.perf_counter()
        self.bar = None
        if enabled and on_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=what, unit=unit, leave=False,
                            dynamic_ncols=True, file=self.stream)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def done(self, piece: str, *, units: int = 0, work: float | None = None,
             left: float | None = None, detail: str = "") -> None:
        """``piece`` finished: ``units`` more are done, ``work`` more work (default ``units``);
        ``left``: a new estimate of the work still to run (it shrinks when points fall early)."""
        self.units += units
        self.work_done += units if work is None else work
        if left is not None:
            self.work_total = self.work_done + max(0.0, left)
        if self.bar is not None:
            self.bar.update(units)
        elif self.enabled:
            self.say(f"{piece} done{detail}; {self._left()}")

    def say(self, text: str) -> None:
        """One line (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"robustfair {self.what}: {text}", file=self.stream)
        else:
            print(f"robustfair {self.what}: {text}", file=self.stream, flush=True)

    def _left(self) -> str:
        left = self.total - self.units
        elapsed = time.perf_counter() - self.started
        text = f"{left:,} {self.unit}{'' if left == 1 else 's'} left; {duration(elapsed)} elapsed"
        work_left = self.work_total - self.work_done
        if left <= 0 or work_left <= 0:
            return text
        if self.work_done <= 0:
            return text + ", time left unknown yet"
        return text + f", about {duration(elapsed / self.work_done * work_left)} left"


# A composite attack (AutoAttack) runs its parts inside one ``perturb`` call; it reports each
# finished part here, and whoever listens (the audit's progress) says so. Nobody listening:
# nothing happens.
_listener: contextvars.ContextVar[Callable[[str, int, int], None] | None] = \
    contextvars.ContextVar("robustfair_part_listener", default=None)


def part_done(name: str, points: int, robust: int) -> None:
    """A composite attack's part ``name`` ran on ``points`` points; ``robust`` are still robust."""
    listener = _listener.get()
    if listener is not None:
        listener(name, points, robust)


@contextlib.contextmanager
def listen_for_parts(callback: Callable[[str, int, int], None] | None) -> Iterator[None]:
    """``with listen_for_parts(callback): ...``: ``callback(name, points, robust)`` per part,
    and so does any listener of an enclosing ``with`` (a benchmark timing the parts of an audit
    that says nothing itself)."""
    outer = _listener.get()
    if callback is None or outer is None:
        listener = callback or outer
    else:
        def listener(name: str, points: int, robust: int) -> None:
            callback(name, points, robust)
            outer(name, points, robust)
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
