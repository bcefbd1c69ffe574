"""SIGKILL a publication at each of its file-system steps, for any publication function.

``assert_kill_safe(folder, publish)`` takes a folder holding a good result and a function that
publishes a new one into it. It counts the steps ``publish`` takes (every ``os.rename``,
``os.replace``, ``os.unlink``, ``os.rmdir``, ``os.fsync``, ``os.symlink`` and ``os.link``), then
for k = 1 .. steps + 1 copies the good folder, runs ``publish`` in a forked child that kills
itself with SIGKILL just before its k-th step, and checks that every visible name in the folder
reads the complete old result or the complete new one, byte for byte. Any publication
(audit, card, explanation, study, leaderboard) gets the same test by passing its own function.
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable

STEPS = ("rename", "replace", "unlink", "rmdir", "fsync", "symlink", "link")


def visible(folder: Path) -> dict[str, bytes]:
    """What a reader sees: every non-hidden file (links followed) under ``folder``, by path."""
    seen = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root, name)
            if not name.startswith(".") and path.exists():  # a dangling link reads as absent
                seen[str(path.relative_to(folder))] = path.read_bytes()
    return seen


def _count_or_kill(kill_at: int | None, counter: list[int]) -> None:
    """Wrap the os functions: count each call; at call ``kill_at``, SIGKILL this process."""
    for name in STEPS:
        real = getattr(os, name)

        def wrapped(*args, _real=real, **kwargs):
            counter[0] += 1
            if kill_at is not None and counter[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)

        setattr(os, name, wrapped)


def _in_child(publish: Callable[[], object], kill_at: int | None) -> int:
    """Run ``publish`` in a forked child; return its step count (or -9 when killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            counter = [0]
            _count_or_kill(kill_at, counter)
            publish()
            os.write(write, str(counter[0]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        text = fh.read()
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return -9
    assert os.WEXITSTATUS(status) == 0, "the publication failed without a kill"
    return int(text)


def assert_kill_safe(folder: Path, publish: Callable[[Path], object]) -> int:
    """Check ``publish(folder)`` at every kill point over the good result in ``folder``;
    return the number of steps it takes."""
    folder = Path(folder)
    old = visible(folder)
    assert old, "start from an existing good result"
    scratch = folder.parent / (folder.name + ".kill-test")
    shutil.copytree(folder, scratch, symlinks=True)
    steps = _in_child(lambda: publish(scratch), None)
    new = visible(scratch)
    assert new != old, "the new result must differ from the old one to tell them apart"
    assert steps > 0
    for k in range(1, steps + 2):
        shutil.rmtree(scratch)
        shutil.copytree(folder, scratch, symlinks=True)
        result = _in_child(lambda: publish(scratch), k)
        assert result == (-9 if k <= steps else steps)
        seen = visible(scratch)
        assert seen in (old, new), (
            f"killed before step {k} of {steps}: "
            f"{sorted(n for n in set(seen) | set(old) | set(new) if seen.get(n) not in (old.get(n), new.get(n)))}"
            f" read neither the old nor the new result")
        # and the next publication over what the kill left completes the new result
        if k in (1, steps // 2, steps):
            assert _in_child(lambda: publish(scratch), None) > 0
            assert visible(scratch) == new
    shutil.rmtree(scratch)
    return steps
