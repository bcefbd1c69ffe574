"""The study report: one self-contained HTML file (figures embedded as base64 PNG) plus the
PNGs themselves, in ``DIR/report/``.

The page is the Jinja2 template ``robustfair/templates/study_report.html.j2``: its structure
and prose are read and changed there. A summary on top answers the paper's three questions
with numbers and intervals (:mod:`~robustfair.study.summary`); below it, the table of
configurations and the figures the study's axes allow (:mod:`~robustfair.study.figures`):

- per-class clean vs robust accuracy, standard vs adversarial training;
- each class's deviation from the class mean, per model (heatmap);
- cosine similarity of class profiles across architectures and across hyper-parameters;
- robust accuracy per class against eps (when eps is an axis);
- the worst class through training (from each run's ``epochs.csv``);
- the trade-off between average and worst-class robust accuracy (error bars over seeds);
- the confusion matrix under attack.

A figure the study cannot support (e.g. no architecture axis) is skipped, with the reason.
Explanations saved in the study (``robustfair explain ... --out DIR/explain/NAME``) are folded
in with their findings and figures.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import atomic_write_bytes, atomic_write_text
from .._templates import data_uri, render
from . import summary
from .analysis import StudyData
from .store import StudyStore
from .table import load_tables

__all__ = ["EXPLAIN_DIR", "Report", "SavedExplanation", "build_report", "saved_explanations"]

TEMPLATE = "study_report.html.j2"
# `robustfair explain ... --out STUDY/explain/NAME` puts an explanation where the report finds it
EXPLAIN_DIR = "explain"
EXPLAIN_FIGURES = ("similarity.png", "margins.png", "robust_vs_eps.png", "corruption_vs_attack.png")


@dataclass
class Report:
    """Where the report was written, which figures it has and which it skipped (and why)."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class SavedExplanation:
    """One explanation found under ``STUDY/explain``: where (relative to the study), the
    checkpoint it explains, its findings and figures (name, data URI); ``unreadable`` when its
    ``explain.json`` could not be read (the report says so and goes on)."""

    where: str
    source: str = ""
    findings: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    unreadable: bool = False


def build_report(root: str | os.PathLike, *, out_dir: str | os.PathLike | None = None) -> Report:
    """Write ``report.html`` and the PNGs for the study in ``root``; returns what was written."""
    from .figures import build_figures  # matplotlib: imported only when a report is drawn

    root = Path(root)
    store = StudyStore(root)
    index = store.read_index()
    tables = load_tables(root)
    data = StudyData(tables.results)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)

    figures, skipped = build_figures(data, tables.epochs, store)
    paths = {f.name: atomic_write_bytes(out / f"{f.name}.png", f.png) for f in figures}
    done = tables.total_runs - len(tables.missing)
    status = f"{done} of {tables.total_runs} runs finished"
    if tables.missing:
        status += f" ({len(tables.missing)} not yet: the report covers the finished ones)"
    page = render(
        TEMPLATE, name=str(index.get("name", "study")),
        description=str(index.get("description") or ""), status=status,
        evaluation=summary.evaluation(store, data),
        universality=summary.universality_summary(data),
        confusions=summary.confusions(data, store), mitigation=summary.mitigation(data),
        configurations=summary.configurations(data),
        figures=[{"name": f.name, "title": f.title, "caption": f.caption, "src": data_uri(f.png)}
                 for f in figures],
        explanations=saved_explanations(root), skipped=skipped)
    html_path = atomic_write_text(out / "report.html", page)
    return Report(html=html_path, figures=paths, skipped=skipped)


def saved_explanations(root: Path) -> list[SavedExplanation]:
    """Each explanation saved under ``root/explain`` (any depth), in path order."""
    out = []
    base = root / EXPLAIN_DIR
    for path in sorted(base.glob("**/explain.json")) if base.is_dir() else []:
        where = str(path.parent.relative_to(root))
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            findings = [str(f) for f in info["findings"]]
            source = str((info.get("meta") or {}).get("checkpoint", where))
        except (OSError, ValueError, KeyError, TypeError):
            out.append(SavedExplanation(where, unreadable=True))
            continue
        figures = [(name, data_uri((path.parent / name).read_bytes()))
                   for name in EXPLAIN_FIGURES if (path.parent / name).is_file()]
        out.append(SavedExplanation(where, source, findings, figures))
    return out
