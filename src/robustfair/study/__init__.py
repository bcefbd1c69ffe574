"""Studies: a YAML grid of training runs, executed locally or on Ray, stored one directory per
run, gathered into tidy tables and an HTML report.

>>> from robustfair.study import load_preset, expand
>>> len(expand(load_preset("digits-quick")))
4

The pieces, one idea per module: ``spec`` and ``spec_axes`` (YAML -> :class:`StudySpec`,
errors with line numbers), ``grid`` (expansion, run hashing), ``store`` (the study
directory), ``run`` (one run: train, audit, commit), ``executors`` (local, ray),
``progress``, ``table`` (tidy results), ``analysis`` (:class:`StudyData` and the descriptive
numbers), ``universality`` (matched-pair similarities), ``inference`` (bootstrap tests),
``summary``, ``figures``, ``plots`` and ``report`` (the HTML report, from the template
``robustfair/templates/study_report.html.j2``) and ``catalog`` (the shipped presets).
"""
from __future__ import annotations

from .analysis import StudyData
from .catalog import list_presets, load_preset, resolve_spec
from .executors import StudyResult, run_study
from .grid import Run, config_hash, expand
from .report import Report, build_report
from .run import execute_run
from .spec import StudySpec, load_spec, parse_spec
from .store import StudyStore
from .table import load_tables, write_tables

__all__ = [
    "Report",
    "Run",
    "StudyData",
    "StudyResult",
    "StudySpec",
    "StudyStore",
    "build_report",
    "config_hash",
    "execute_run",
    "expand",
    "list_presets",
    "load_preset",
    "load_spec",
    "load_tables",
    "parse_spec",
    "resolve_spec",
    "run_study",
    "write_tables",
]
