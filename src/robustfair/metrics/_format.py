"""Text and markdown renderings of a ClassReport (the CLI prints these; ``report.md`` holds one).

Accuracies are shown in percent with their 95% interval, e.g. ``87.3 [82.0, 91.1]``.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import pandas as pd

from .._formatting import (describe_attack, estimate, format_p, interval, markdown_table,
                           markdown_text, number, percent)
from ..errors import RobustfairError
from ._stats import deficit_power
from .measures import MEASURES, UNITLESS

if TYPE_CHECKING:  # pragma: no cover
    from .report import ClassReport

WORST_MARK = "<- worst"


def _broken_by_table(report: "ClassReport") -> tuple[list[str], list[list[str]]]:
    table = report.broken_by()
    header = ["class"] + list(table.columns)
    rows = [[str(c)] + [str(int(v)) for v in table.loc[c]] for c in table.index]
    rows.append(["all"] + [str(int(v)) for v in table.sum()])
    return header, rows


def _columns(report: "ClassReport") -> list[tuple[str, str]]:
    """(header, metric) pairs of the per-class table."""
    cols = [("clean", "clean_acc")]
    cols += [(name, f"{name}_acc") for name in report.attack_names]
    cols.append(("robust", "robust_acc"))
    if report.targeted:
        cols += [(f"{name} hit target", f"{name}_target_success") for name in report.attack_names]
    return cols


def class_table_rows(report: "ClassReport") -> tuple[list[str], list[list[str]]]:
    """Header and rows (classes, then ``overall``) of the per-class table, worst class marked."""
    by_class, overall = report.by_class, report.overall
    cols = _columns(report)
    try:
        worst_name = report.worst_class("robust_acc")[0]
    except RobustfairError:  # no class has a robust value (e.g. every outcome unknown)
        worst_name = None
    header = ["class", "n"] + [h for h, _ in cols] + [""]
    rows = []
    for name, row in by_class.iterrows():
        cells = [str(name), str(int(row["n"]))]
        cells += [estimate(row[m], row[f"{m}_lo"], row[f"{m}_hi"]) for _, m in cols]
        cells.append(WORST_MARK if name == worst_name else "")
        rows.append(cells)
    cells = ["overall", str(int(overall["n"]))]
    cells += [estimate(overall[m], overall[f"{m}_lo"], overall[f"{m}_hi"]) for _, m in cols]
    rows.append(cells + [""])
    return header, rows


def discrepancy_table(report: "ClassReport", *, n_boot: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Measures × (clean_acc, robust_acc, ...) with bootstrap intervals."""
    metrics = ["clean_acc", "robust_acc"]
    if report.targeted:
        metrics += [f"{a}_target_success" for a in report.attack_names]
    frames = {}
    for m in metrics:
        try:
            frames[m] = report.discrepancy(m, n_boot=n_boot, seed=seed)
        except RobustfairError:  # metric without values (unknown outcomes): leave it out
            continue
    if not frames:
        return ["measure"], []
    index = next(iter(frames.values())).index
    header = ["measure"] + list(frames)
    rows = []
    for measure in index:
        cells = [measure]
        for frame in frames.values():
            v, lo, hi, floor, p = frame.loc[measure, ["value", "lo", "hi", "noise_floor", "p_noise"]]
            unitless = MEASURES[measure].unit == UNITLESS
            if unitless:
                cells.append("n/a" if not math.isfinite(v)
                             else f"{number(v)} {interval(lo, hi, scale=1, digits=3)}".rstrip())
            else:
                cells.append(estimate(v, lo, hi))
            if math.isfinite(p) and math.isfinite(v):
                shown = number(floor) if unitless else percent(floor)
                cells[-1] += f" (no gap: {shown}, p {format_p(p)}"
                if measure == "std" and p > 0.05:
                    # "no evidence of a gap" is not "no gap": say what the data could find
                    cells[-1] += f"; {_power_note(report, frame.attrs['metric'])}"
                cells[-1] += ")"
        rows.append(cells)
    return header, rows


def _power_note(report: "ClassReport", metric: str, deficit: float = 0.10) -> str:
    """e.g. ``a 10-point deficit in one class is found in 21% of such test sets``."""
    hits, n, unknown = report._class_counts(metric)
    keep = (n > 0) & ~unknown
    power = deficit_power(hits[keep], n[keep], deficit=deficit,
                          higher_is_better=report.higher_is_better(metric))
    return (f"a {100 * deficit:.0f}-point deficit in one class is found in {percent(power, digits=0)}% "
            f"of such test sets")


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths).rstrip())
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _meta_line(report: "ClassReport") -> str:
    meta = report.meta
    parts = [f"n={len(report.predictions)}", f"classes={report.num_classes}"]
    for key in ("dataset", "split", "seed", "time_seconds"):
        if key in meta and meta[key] is not None:
            value = meta[key]
            parts.append(f"{key}={value:.1f}s" if key == "time_seconds" and isinstance(value, float)
                         else f"{key}={value}")
    if meta.get("batch_size") is not None:
        parts.append(f"batch_size={meta['batch_size']}")
    if meta.get("amp"):
        parts.append("amp")
    if "model_optimizations" in meta:  # how the model was run: the numbers depend on it
        parts.append("model run " + (" + ".join(meta["model_optimizations"]) or "as is"))
    if report.targeted:
        target = int(report.predictions["target"].iloc[0]) if len(report.predictions) else None
        if target is not None:
            parts.append(f"target={report.classes[target]}")
    return ", ".join(parts)


def _target_matrix(report: "ClassReport") -> tuple[list[str], list[list[str]]]:
    matrix: pd.DataFrame = report.target_success
    header = ["source \\ target"] + list(matrix.columns)
    rows = [[str(src)] + ["-" if src == tgt else percent(matrix.loc[src, tgt]) for tgt in matrix.columns]
            for src in matrix.index]
    return header, rows


Section = tuple[str, list[str], "list[list[str]] | str"]  # title, table header, rows (or text)


def _sections(report: "ClassReport", n_boot: int, seed: int) -> list[Section]:
    attacks = "\n".join(describe_attack(name, s) for name, s in zip(report.attack_names, report.attacks))
    sections: list = [("Attacks", [], attacks or "(none)")]
    flags = "\n".join(f"[{f['code']}] {f['message']}" for f in report.flags)
    sections.append(("Sanity flags", [], flags or "none raised"))
    header, rows = class_table_rows(report)
    sections.append(("Per-class accuracy, % [95% Wilson CI]", header, rows))
    if not report.targeted:
        header, rows = _broken_by_table(report)
        sections.append(("Points broken first by each attack (in the order they ran)", header, rows))
    header, rows = discrepancy_table(report, n_boot=n_boot, seed=seed)
    unitless = [m.name for m in MEASURES.values() if m.unit == UNITLESS]
    sections.append((f"Class discrepancy (percentage points; {' and '.join(unitless)} unitless; "
                     f"95% stratified bootstrap CI, {n_boot} resamples, except worst: an "
                     f"interval for the true worst class, simultaneous Wilson bounds over the "
                     f"classes; 'no gap': the value expected if every class had the same true "
                     f"accuracy, from sampling noise alone; p: the chance of a gap this wide "
                     f"from that noise)", header, rows))
    if report.target_predictions is not None:
        header, rows = _target_matrix(report)
        sections.append(("Targeted success, % of source-class points pushed into the target", header, rows))
    return sections


def report_text(report: "ClassReport", *, n_boot: int = 1000, seed: int = 0) -> str:
    out = [f"ClassReport: {_meta_line(report)}"]
    for title, header, body in _sections(report, n_boot, seed):
        out.append("")
        out.append(title)
        out.append(body if isinstance(body, str) else _text_table(header, body))
    return "\n".join(out) + "\n"


def report_markdown(report: "ClassReport", *, n_boot: int = 1000, seed: int = 0) -> str:
    out = ["# Class-wise robustness report", "", markdown_text(_meta_line(report))]
    for title, header, body in _sections(report, n_boot, seed):
        out += ["", f"## {title}", ""]
        if isinstance(body, str):
            out += [f"- {markdown_text(line)}" for line in body.splitlines()]
        else:
            out.append(markdown_table(header, body))
    return "\n".join(out) + "\n"
