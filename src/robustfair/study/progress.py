"""A progress display over a whole study: runs done / running / left, and each running
run's epoch; off a terminal, one line per finished run (:class:`robustfair._progress.Progress`).

The epoch is read from the run's own ``epochs.csv`` (the trainer appends a row per epoch), so
the display works the same for in-process runs, worker processes and Ray tasks, as long as the
study directory is visible here. A daemon thread refreshes it every ``interval`` seconds.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

from tqdm.auto import tqdm

from .._progress import Progress, on_terminal

__all__ = ["StudyProgress", "epochs_logged"]


def epochs_logged(path: Path) -> int:
    """The last epoch in an ``epochs.csv`` (0 if absent), read without pandas for speed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    last = 0
    for line in lines[1:]:
        head = line.split(",", 1)[0]
        if head.isdigit():
            last = max(last, int(head))
    return last


class StudyProgress:
    """``with StudyProgress(store, runs, enabled=True) as p: p.start(key); p.finish(key)``.

    ``runs`` is a list of :class:`~robustfair.study.grid.Run`; those already done count as
    done from the start.
    """

    def __init__(self, store, runs, *, enabled: bool = True, interval: float | None = None) -> None:
        self.store = store
        self.runs = {r.key: r for r in runs}
        self.done = {r.key for r in runs if store.is_done(r.key)}
        self.failed: set[str] = set()
        self.running: set[str] = set()
        self.watched: set[str] = set()  # runs handed to other processes: running if locked
        self.enabled = enabled
        # a terminal is redrawn every second; a log file (CI) gets a line every half minute
        self.interval = interval if interval is not None else (1.0 if sys.stderr.isatty() else 30.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._lines: Progress | None = None  # off a terminal: a line per finished run
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "StudyProgress":
        if self.enabled and not on_terminal():
            self._lines = Progress(len(self.runs), "study", unit="run", done=len(self.done))
        elif self.enabled:
            self._bar = tqdm(total=len(self.runs), initial=len(self.done), desc="study",
                             unit="run", dynamic_ncols=True)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._bar is not None:
            self._refresh()
            self._bar.close()

    def start(self, key: str) -> None:
        with self._lock:
            self.running.add(key)
        self._refresh()

    def watch(self, keys) -> None:
        """Runs handed to other processes: each counts as running while it holds its lock."""
        with self._lock:
            self.watched.update(keys)
        self._refresh()

    def finish(self, key: str, *, ok: bool = True) -> None:
        with self._lock:
            self.running.discard(key)
            self.watched.discard(key)
            if ok and key not in self.done:
                self.done.add(key)
                if self._bar is not None:
                    self._bar.update(1)
            elif not ok:
                self.failed.add(key)
            if self._lines is not None:
                run = self.runs[key]
                seed = run.axes.get("seed")
                name = run.label + (f" seed={seed}" if seed is not None else "")
                self._lines.done(f"run {name}", units=1, detail="" if ok else " (FAILED)")
        self._refresh()

    def describe(self) -> str:
        """``running 1 · left 4 | objective=pgd_at seed=0: epoch 2/10`` (the bar shows done/total)."""
        with self._lock:
            watched = sorted(self.watched)
            running = set(self.running)
        running = sorted(running | {k for k in watched if self.store.is_running(k)})
        with self._lock:
            left = len(self.runs) - len(self.done) - len(running) - len(self.failed)
            text = f"running {len(running)} · left {left}"
            if self.failed:
                text += f" · failed {len(self.failed)}"
        epochs = []
        for key in running[:2]:  # the line stays short: at most two running runs shown
            run = self.runs[key]
            total = run.config["train"]["epochs"]
            seed = run.axes.get("seed")
            name = run.label + (f" seed={seed}" if seed is not None else "")
            epochs.append(f"{name}: epoch {epochs_logged(self.store.epochs_path(key))}/{total}")
        return text + (" | " + "; ".join(epochs) if epochs else "")

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self.describe(), refresh=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()
