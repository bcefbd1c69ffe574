"""Studies: a YAML grid of training runs, executed locally or on Ray, stored one directory per
run, gathered into tidy tables and an HTML report.

>>> from robustfair.study import load_preset, expand
>>> len(expand(load_preset("digits-quick")))
4

The pieces, one module each: ``spec`` (YAML -> :class:`StudySpec`, errors with line numbers),
``grid`` (expansion, run hashing), ``store`` (the study directory), ``run`` (one run: train,
audit, commit), ``executors`` (local, ray), ``progress``, ``table``, ``analysis``, ``plots``,
``report`` and ``catalog`` (the shipped presets).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "StudySpec": "robustfair.study.spec",
    "load_spec": "robustfair.study.spec",
    "parse_spec": "robustfair.study.spec",
    "Run": "robustfair.study.grid",
    "expand": "robustfair.study.grid",
    "config_hash": "robustfair.study.grid",
    "StudyStore": "robustfair.study.store",
    "execute_run": "robustfair.study.run",
    "run_study": "robustfair.study.executors",
    "StudyResult": "robustfair.study.executors",
    "load_tables": "robustfair.study.table",
    "write_tables": "robustfair.study.table",
    "build_report": "robustfair.study.report",
    "list_presets": "robustfair.study.catalog",
    "load_preset": "robustfair.study.catalog",
    "resolve_spec": "robustfair.study.catalog",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robustfair.study' has no attribute {name!r}")
