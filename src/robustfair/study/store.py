"""The result store: a study directory on disk.

    DIR/study.yaml              the spec as written
    DIR/study.json              the study's runs (key, label, axes), in grid order
    DIR/runs/<key>/config.json  the run's resolved config (its hash is <key>)
    DIR/runs/<key>/train/       the training run: checkpoints, epochs.csv, model.safetensors
    DIR/runs/<key>/report.json  the audit (a ClassReport)
    DIR/runs/<key>/done         written last: the run is complete
    DIR/runs/<key>/error.txt    the last failure, if the run failed

Every file is written atomically (temporary file + rename), so a study killed at any moment
leaves each file either absent or whole. ``done`` is the commit point: a run without it is
redone, and its training resumes from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

from ..errors import ConfigError, RobustfairError
from .._atomic import atomic_write_text, write_files_atomically
from .grid import Run, canonical_json, config_hash

__all__ = ["StudyStore", "RunBusy"]

INDEX = "study.json"
INDEX_SCHEMA = "robustfair.study/1"


class RunBusy(RobustfairError):
    """Another process holds this run's lock (it is being run elsewhere)."""


class StudyStore:
    """A study directory: where each run lives, what is done, and the index of runs."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------------- layout
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, key: str) -> Path:
        return self.runs_dir / key

    def train_dir(self, key: str) -> Path:
        return self.run_dir(key) / "train"

    def report_path(self, key: str) -> Path:
        return self.run_dir(key) / "report.json"

    def epochs_path(self, key: str) -> Path:
        return self.train_dir(key) / "epochs.csv"

    # ----------------------------------------------------------------------- index
    def prepare(self, spec_text: str, spec_name: str, runs: list[Run], *,
                description: str = "", expected_time: str | None = None) -> None:
        """Create the directory and write the spec and the index of its runs."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"study directory {str(self.root)!r} is a file")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        index = {
            "schema": INDEX_SCHEMA,
            "name": spec_name,
            "description": description,
            "expected_time": expected_time,
            "runs": [{"key": r.key, "label": r.label, "axes": r.axes} for r in runs],
        }
        self._refuse_other_study(spec_name, runs)
        write_files_atomically({self.root / "study.yaml": spec_text,
                                self.root / INDEX: json.dumps(index, indent=1) + "\n"})

    def _refuse_other_study(self, spec_name: str, runs: list[Run]) -> None:
        """Refuse to replace the index of a study whose runs this spec would orphan.

        The same spec (or one that only adds runs) may run again into its folder; a spec
        that drops earlier runs or has another name is another study.
        """
        if not (self.root / INDEX).exists():
            return
        old = self.read_index()
        old_runs = old.get("runs")
        if not isinstance(old_runs, list) or not all(isinstance(r, dict) for r in old_runs):
            raise RobustfairError(f"{self.root / INDEX} is not a robustfair study index")
        dropped = {str(r.get("key")) for r in old_runs} - {r.key for r in runs}
        if old.get("name") != spec_name or dropped:
            why = (f"{len(dropped)} of its {len(old_runs)} runs are not in this spec" if dropped
                   else f"this spec is named {spec_name!r}")
            raise ConfigError(f"{str(self.root)!r} holds study {old.get('name')!r} and {why}; "
                              f"use another --out (its own spec is {self.root / 'study.yaml'})")

    def read_index(self) -> dict:
        """The study's index; a one-line error if ``root`` is not a study directory."""
        path = self.root / INDEX
        if not path.is_file():
            raise RobustfairError(f"{str(self.root)!r} is not a study directory (no {INDEX}); "
                                  "start one with: robustfair study run SPEC --out DIR")
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RobustfairError(f"cannot read {path}: {exc}") from None
        if not isinstance(index, dict) or index.get("schema") != INDEX_SCHEMA:
            raise RobustfairError(f"{path} is not a robustfair study index")
        return index

    # ----------------------------------------------------------------------- runs
    def is_done(self, key: str) -> bool:
        return (self.run_dir(key) / "done").is_file()

    def status(self, key: str) -> str:
        """``"done"``, ``"partial"`` (started, not finished: it will resume) or ``"new"``."""
        if self.is_done(key):
            return "done"
        return "partial" if self.run_dir(key).exists() else "new"

    def write_config(self, key: str, config: dict) -> None:
        """Write ``config.json`` (once); refuse a directory that holds a different config."""
        if config_hash(config) != key:
            raise RobustfairError(f"run {key}: its config does not hash to its key")
        path = self.run_dir(key) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                old = None
            if old is not None and canonical_json(old) == canonical_json(config):
                return
        atomic_write_text(path, json.dumps(config, indent=1, sort_keys=True) + "\n")

    def read_config(self, key: str) -> dict:
        path = self.run_dir(key) / "config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RobustfairError(f"run {key} has no config.json") from None
        except (OSError, ValueError) as exc:
            raise RobustfairError(f"cannot read {path}: {exc}") from None

    def mark_done(self, key: str, info: dict) -> None:
        """The commit point of a run: written last, atomically."""
        info = {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
        (self.run_dir(key) / "error.txt").unlink(missing_ok=True)
        atomic_write_text(self.run_dir(key) / "done", json.dumps(info, indent=1) + "\n")

    def read_done(self, key: str) -> dict:
        try:
            return json.loads((self.run_dir(key) / "done").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_error(self, key: str, message: str) -> None:
        self.run_dir(key).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir(key) / "error.txt", message.rstrip() + "\n")

    def read_error(self, key: str) -> str | None:
        try:
            return (self.run_dir(key) / "error.txt").read_text(encoding="utf-8").strip()
        except OSError:
            return None

    @contextlib.contextmanager
    def lock(self, key: str, *, wait: bool = True) -> Iterator[None]:
        """Hold the run's lock for the duration, so that two processes never run it at once.

        An advisory ``flock``: the kernel drops it when its holder dies, even by SIGKILL, so
        a killed study never leaves a stale lock. ``wait=False`` raises :class:`RunBusy`
        instead of waiting for another holder. (No locking where ``fcntl`` is missing.)
        """
        self.run_dir(key).mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - not POSIX
            yield
            return
        fd = os.open(self.run_dir(key) / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise RunBusy(f"run {key} is being run by another process") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def is_running(self, key: str) -> bool:
        """Whether some process holds the run's lock right now."""
        path = self.run_dir(key) / ".lock"
        if fcntl is None or not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
