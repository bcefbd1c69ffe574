"""A :class:`~robustfair.metrics.ClassReport` as JSON (``report.json``), and back.

The format: an object tagged ``"schema": "robustfair.ClassReport"``, ``"schema_version": 1``,
with ``classes``, ``attacks`` (settings in column order), ``meta``, ``predictions`` and
``target_predictions`` (column name -> list of ints, or null) and ``flags``. Reading checks
the tag and version, then builds the report through its constructor, so a file gets exactly
the checks an audit's own predictions get.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .._json import jsonable
from ..errors import RobustfairError

if TYPE_CHECKING:  # pragma: no cover
    from .report import ClassReport

SCHEMA = "robustfair.ClassReport"
SCHEMA_VERSION = 1


def to_dict(report: "ClassReport") -> dict:
    tp = report.target_predictions
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "classes": list(report.classes),
        "attacks": report.attacks,
        "meta": jsonable(report.meta),  # callers may have added to it since
        "predictions": {c: report.predictions[c].tolist() for c in report.predictions.columns},
        "target_predictions": None if tp is None else {c: tp[c].tolist() for c in tp.columns},
        "flags": jsonable(report.flags),
    }


def from_dict(cls: "type[ClassReport]", data: Any, source: str) -> "ClassReport":
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise RobustfairError(f"{source} is not a robustfair ClassReport (no {SCHEMA!r} schema tag)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RobustfairError(
            f"{source} has schema version {version!r}; this robustfair reads version {SCHEMA_VERSION}"
        )
    try:
        def frame(columns: dict) -> pd.DataFrame:
            return pd.DataFrame({k: np.asarray(v) for k, v in columns.items()})

        tp = data.get("target_predictions")
        return cls(
            predictions=frame(data["predictions"]),
            classes=data["classes"],
            attacks=data["attacks"],
            meta=data.get("meta") or {},
            target_predictions=None if tp is None else frame(tp),
            flags=data.get("flags") or [],
        )
    except RobustfairError as exc:
        raise RobustfairError(f"{source} is not a valid ClassReport: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RobustfairError(
            f"{source} is not a valid ClassReport: bad or missing field {exc}") from None


def json_text(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def write_json(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (temp file + rename); the folder must exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise RobustfairError(f"cannot write {path}: directory {path.parent} does not exist")
    return atomic_write_text(path, text)


def read_json(path: Path) -> Any:
    """The parsed JSON of a report file; a one-line error for a missing or unreadable one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RobustfairError(f"report file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RobustfairError(f"cannot read report file {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RobustfairError(
            f"report file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
