"""Checking the per-sample tables a :class:`~robustfair.metrics.ClassReport` is built from.

Every column is turned into int64 and range-checked, so a report read from a file and one
built by an audit hold exactly the same frame; anything off is a one-line
:class:`~robustfair.errors.RobustfairError` naming the table and column.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import RobustfairError
from .pointwise import MISSING, worst_case

# column stems an attack may not be named after (they have meanings of their own)
RESERVED = ("y_true", "clean", "worst", "robust", "target", "index")


def int_column(frame: pd.DataFrame, col: str, lo: int, hi: int, where: str) -> np.ndarray:
    """``frame[col]`` as int64 within ``lo..hi`` (whole-number floats are accepted)."""
    values = frame[col].to_numpy()
    if values.dtype.kind not in "iu":
        if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            values = values.astype(np.int64)
        else:
            raise RobustfairError(f"{where}: column {col!r} must hold integers, got {frame[col].dtype}")
    values = values.astype(np.int64, copy=False)
    if values.size and (values.min() < lo or values.max() > hi):
        raise RobustfairError(
            f"{where}: column {col!r} must lie in {lo}..{hi}, got {values.min()}..{values.max()}"
        )
    return values


def check_predictions(predictions: pd.DataFrame, num_classes: int,
                      attacks: Sequence[dict]) -> tuple[pd.DataFrame, list[str]]:
    """The checked ``predictions`` frame and the attack names (from the ``<name>_pred`` columns).

    ``worst_pred`` must be the pointwise worst case of the other columns.
    """
    if not isinstance(predictions, pd.DataFrame):
        raise RobustfairError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    k = num_classes
    names = [c[: -len("_pred")] for c in predictions.columns
             if str(c).endswith("_pred") and c not in ("clean_pred", "worst_pred")]
    missing = [c for c in ("y_true", "clean_pred", "worst_pred") if c not in predictions.columns]
    if missing:
        raise RobustfairError(f"predictions lack column(s): {', '.join(missing)}")
    if len(names) != len(attacks):
        raise RobustfairError(
            f"predictions have {len(names)} attack column(s) but {len(attacks)} attack "
            f"setting(s) were given"
        )
    bad = [n for n in names if n in RESERVED]
    if bad:
        raise RobustfairError(f"attack name(s) {bad} are reserved; choose other names")
    where = "predictions"
    cols: dict[str, np.ndarray] = {"y_true": int_column(predictions, "y_true", 0, k - 1, where),
                                   "clean_pred": int_column(predictions, "clean_pred", 0, k - 1, where)}
    for name in names:
        cols[f"{name}_pred"] = int_column(predictions, f"{name}_pred", MISSING, k - 1, where)
    cols["worst_pred"] = int_column(predictions, "worst_pred", 0, k - 1, where)
    if "target" in predictions.columns:
        cols["target"] = int_column(predictions, "target", 0, k - 1, where)
    for name, settings in zip(names, attacks):
        if f"{name}_by" in predictions.columns:
            parts = settings.get("parts") or []
            cols[f"{name}_by"] = int_column(predictions, f"{name}_by", -1, len(parts) - 1, where)
    expected = worst_case(cols["y_true"], cols["clean_pred"], [cols[f"{n}_pred"] for n in names])
    if not np.array_equal(expected, cols["worst_pred"]):
        raise RobustfairError(
            "predictions: worst_pred disagrees with the clean and per-attack predictions")
    return pd.DataFrame(cols), names


def check_target_predictions(target_predictions: pd.DataFrame, y_true: np.ndarray,
                             num_classes: int, names: Sequence[str]) -> pd.DataFrame:
    """The checked per-(point, target) frame of a ``targeted_all`` audit."""
    where = "target_predictions"
    tcols = {"index": int_column(target_predictions, "index", 0, max(len(y_true) - 1, 0), where),
             "target": int_column(target_predictions, "target", 0, num_classes - 1, where)}
    for name in names:
        if f"{name}_pred" not in target_predictions.columns:
            raise RobustfairError(f"{where} lack column {name}_pred")
        tcols[f"{name}_pred"] = int_column(target_predictions, f"{name}_pred", MISSING,
                                           num_classes - 1, where)
    if np.any(y_true[tcols["index"]] == tcols["target"]):
        raise RobustfairError(f"{where}: a point is targeted at its own class")
    return pd.DataFrame(tcols)


def check_flags(flags: Sequence[dict] | None) -> list[dict]:
    """Sanity flags as stored: dicts with a ``code``, a one-line ``message`` and ``classes``."""
    checked = []
    for flag in flags or []:
        if not (isinstance(flag, dict) and isinstance(flag.get("code"), str)
                and isinstance(flag.get("message"), str)):
            raise RobustfairError("flags must be dicts with a 'code' and a 'message' string")
        classes = flag.get("classes")
        checked.append({"code": flag["code"], "message": flag["message"],
                        "classes": None if classes is None else [str(c) for c in classes]})
    return checked
