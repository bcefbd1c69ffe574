"""The results of a study as tidy tables, for pandas, DuckDB or a spreadsheet.

``results``: one row per run × class × measure, with the run's config columns:

    run, label, dataset, model, objective, mitigation, eps, optimizer, lr, weight_decay,
    schedule, epochs, batch_size, seed, <other spec axes>, class, class_index, n,
    measure, value, lo, hi

``measure`` is ``clean_acc``, ``robust_acc`` (the pointwise worst case over the attacks),
``<attack>_acc`` for each evaluation attack (with 95% Wilson intervals ``lo``/``hi``), and
``clean_acc_deviation`` / ``robust_acc_deviation`` (the class's accuracy minus the mean over
classes; no interval). ``label`` names the run by the axes that vary, seed excluded, so the
seeds of one configuration share it.

``runs``: one row per run with its class-gap measures, each with an interval, and the noise
p-value (:func:`runs_table`).

``epochs``: the training logs (``epochs.csv`` of every run: a row per epoch × class on the
validation split, and a row per epoch with ``scope == "epoch"``), with the same config columns
(the learning rate of each epoch is ``lr_epoch``, beside the config's ``lr``).

>>> import pandas as pd  # doctest: +SKIP
>>> results = pd.read_parquet("DIR/results.parquet")  # doctest: +SKIP
>>> results.query("measure == 'robust_acc'").groupby(["label", "class"]).value.mean()  # doctest: +SKIP
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RobustfairError
from .._atomic import atomic_write, atomic_write_text
from .analysis import StudyData
from .grid import CONFIG_COLUMNS, format_value
from .inference import comparisons_table, run_statistics
from .store import StudyStore

__all__ = ["StudyTables", "config_columns", "epochs_table", "load_tables", "results_table",
           "runs_table", "write_tables"]


def config_columns(config: dict, extra_axes: list[str] | tuple[str, ...] = ()) -> dict:
    """A run's config as flat, typed table columns (the standard ones, then ``extra_axes``)."""
    train = config["train"]
    model = {"name": train["model"], "kwargs": train.get("model_kwargs") or {}}
    out: dict = {}
    for col in CONFIG_COLUMNS:
        if col == "model":
            out[col] = format_value("model", model)
        elif col == "mitigation":
            out[col] = format_value("mitigations", train.get("mitigations") or [])
        else:
            out[col] = train.get(col)
    for axis in extra_axes:
        if axis in ("model", "mitigations", "model_kwargs") or axis in out:
            continue
        value = train.get(axis)
        out[axis] = value if isinstance(value, (int, float, str, bool)) or value is None else (
            format_value(axis, value))
    return out


def _extra_axes(index: dict) -> list[str]:
    seen: list[str] = []
    for entry in index["runs"]:
        seen += [a for a in entry.get("axes", {}) if a not in seen]
    return seen


@dataclass
class StudyTables:
    """The two tables, plus which runs of the study are missing from them."""

    results: pd.DataFrame
    epochs: pd.DataFrame
    missing: list[str] = field(default_factory=list)   # keys of runs not finished
    total_runs: int = 0
    # per finished run: its checkpoint rule (keep) and the epoch whose weights were audited
    run_info: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_tables(root: str | os.PathLike) -> StudyTables:
    """Read every finished run of the study in ``root`` into the two tables."""
    from ..metrics import ClassReport

    store = StudyStore(root)
    index = store.read_index()
    extra = _extra_axes(index)
    result_frames, epoch_frames, missing, info = [], [], [], []
    for entry in index["runs"]:
        key = entry["key"]
        if not store.is_done(key):
            missing.append(key)
            continue
        config = store.read_config(key)
        cols = {"run": key, "label": entry.get("label", key), **config_columns(config, extra)}
        report = ClassReport.from_json(store.report_path(key))
        result_frames.append(_report_rows(report, cols))
        info.append({"run": key, "keep": config["train"].get("keep", "last"),
                     "val_min_per_class": config["train"].get("val_min_per_class", 0)})
        log_path = store.epochs_path(key)
        if log_path.is_file():
            # class names are text even when they look like numbers ("0".."9")
            log = pd.read_csv(log_path, dtype={"class": "string", "worst_class": "string",
                                               "note": "string"})
            # a logged value named like a config column (the epoch's lr) gets a suffix
            log = log.rename(columns={c: f"{c}_epoch" for c in log.columns if c in cols})
            epoch_frames.append(log.assign(**{k: v for k, v in cols.items()})[
                list(cols) + list(log.columns)])
    if not result_frames:
        raise RobustfairError(f"no run of the study in {str(root)!r} has finished yet")
    results = pd.concat(result_frames, ignore_index=True)
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    return StudyTables(results=results, epochs=epochs, missing=missing,
                       total_runs=len(index["runs"]), run_info=pd.DataFrame(info))


def results_table(root: str | os.PathLike) -> pd.DataFrame:
    """The tidy run × class × measure table of the study in ``root``."""
    return load_tables(root).results


def epochs_table(root: str | os.PathLike) -> pd.DataFrame:
    """The per-epoch training logs of every finished run, with config columns."""
    return load_tables(root).epochs


def _report_rows(report, cols: dict) -> pd.DataFrame:
    """One run's rows: every class × measure, with the run's config columns in front."""
    by_class = report.by_class
    k = len(by_class)
    nan = np.full(k, np.nan)
    blocks = []  # (measure, value, lo, hi), each per class
    for metric in ["clean_acc"] + [f"{a}_acc" for a in report.attack_names] + ["robust_acc"]:
        blocks.append((metric, by_class[metric].to_numpy(float),
                       by_class[f"{metric}_lo"].to_numpy(float),
                       by_class[f"{metric}_hi"].to_numpy(float)))
    for metric in ("clean_acc", "robust_acc"):
        blocks.append((f"{metric}_deviation", report.deviation(metric).to_numpy(float), nan, nan))
    m = len(blocks)
    data = {name: [value] * (m * k) for name, value in cols.items()}
    data.update({
        "class": np.tile(by_class.index.astype(str).to_numpy(), m),
        "class_index": np.tile(np.arange(k), m),
        "n": np.tile(by_class["n"].to_numpy(), m),
        "measure": np.repeat([b[0] for b in blocks], k),
        "value": np.concatenate([b[1] for b in blocks]),
        "lo": np.concatenate([b[2] for b in blocks]),
        "hi": np.concatenate([b[3] for b in blocks]),
    })
    return pd.DataFrame(data)


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def runs_table(tables: StudyTables, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per finished run: its config, then for clean and robust accuracy the mean over
    classes, the worst class (and its name), the std over classes, the normalised std and the
    mean of the worst 20% of classes, each with a 95% bootstrap interval over test points
    (``_lo``/``_hi``); the noise floor of the std and its p-value (``_p_noise``: could classes
    with one common accuracy show a std this large?); and the checkpoint rule (``keep``).
    See :func:`robustfair.study.inference.run_statistics`."""
    runs = run_statistics(StudyData(tables.results), n_boot=n_boot, seed=seed)
    if not tables.run_info.empty:
        runs = runs.merge(tables.run_info, on="run", how="left")
    return runs


def write_tables(root: str | os.PathLike) -> tuple[dict[str, Path], StudyTables, str | None]:
    """Write ``results``, ``epochs``, ``runs`` (:func:`runs_table`) and ``comparisons``
    (:func:`robustfair.study.inference.comparisons_table`: one row per comparison the report
    prints) as CSV, and results and epochs as Parquet when pyarrow is installed.

    Returns (written paths by name, the tables, a note: why Parquet was not written, or None).
    """
    root = Path(root)
    tables = load_tables(root)
    written: dict[str, Path] = {}
    path = root / "runs.csv"
    atomic_write_text(path, runs_table(tables).to_csv(index=False))
    written["runs.csv"] = path
    if not tables.results.empty:
        # every comparison the HTML report prints, as numbers (the same calls, the same seeds)
        path = root / "comparisons.csv"
        atomic_write_text(path, comparisons_table(StudyData(tables.results)).to_csv(index=False))
        written["comparisons.csv"] = path
    for name, frame in (("results", tables.results), ("epochs", tables.epochs)):
        if frame.empty:
            continue
        path = root / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        written[f"{name}.csv"] = path
    note = None
    if parquet_available():
        for name, frame in (("results", tables.results), ("epochs", tables.epochs)):
            if frame.empty:
                continue
            path = root / f"{name}.parquet"
            atomic_write(path, lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
            written[f"{name}.parquet"] = path
    else:
        note = "Parquet not written: pyarrow is not installed (pip install 'robustfair[parquet]')"
    return written, tables, note
