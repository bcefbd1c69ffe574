"""``robustfair demo``: the whole story on real data in about 20 seconds on a CPU.

On scikit-learn's bundled digits it trains a standard and a PGD-AT ``small_cnn``, audits both
per class with PGD-20 at the training eps, and shows the two per-class tables side by side
with the discrepancy measures. Written to ``runs/demo/``: ``report.md``, ``classwise.png``,
each model's run directory (resumable: run the demo again and finished work is reused) and
its ``report.json``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ._device import resolve_device, torch_threads
from ._progress import Progress, on_terminal
from .attacks import build_attack
from .auditing import audit
from .data import load_dataset
from .metrics import ClassReport
from ._formatting import markdown_table
from ._atomic import write_files_atomically
from .plots import classwise_bars
from .study.catalog import load_preset
from .study.grid import expand
from .training import TrainConfig, train

# The demo is the `digits-quick` study preset (its seed-0 runs): the settings live there, once.
# eps 0.2 (L-inf, images in [0, 1]) is large for 8x8 digits with 17 grey levels: standard
# training collapses to near-zero robust accuracy while PGD-AT still reaches a robust majority,
# so the class gap is visible in about a minute on a CPU.
PRESET = "digits-quick"
METRICS = ("clean_acc", "robust_acc")
LABELS = {"standard": "standard", "pgd_at": "PGD-AT"}


@dataclass
class DemoResult:
    reports: dict[str, ClassReport]
    paths: dict[str, Path]
    seconds: float


def demo_plan() -> tuple[dict[str, TrainConfig], dict]:
    """The preset's seed-0 training configs by objective, and its evaluation attack."""
    runs = [r for r in expand(load_preset(PRESET)) if r.config["train"]["seed"] == 0]
    configs = {r.config["train"]["objective"]: TrainConfig.from_dict(r.config["train"]) for r in runs}
    attack = runs[0].config["evaluation"]["attacks"][0]
    return configs, {"name": attack["attack"], **attack["settings"]}


def side_by_side(reports: dict[str, ClassReport]) -> pd.DataFrame:
    """One row per class, a column per (model, metric); values in percent."""
    cols = {}
    for label, report in reports.items():
        for metric in METRICS:
            cols[f"{label} {metric.replace('_acc', '')}"] = 100 * report.by_class[metric]
    return pd.DataFrame(cols).round(1)


def discrepancy_rows(reports: dict[str, ClassReport]) -> pd.DataFrame:
    """The discrepancy measures for each (model, metric), in percent (ratio as a fraction)."""
    rows = {}
    for label, report in reports.items():
        for metric in METRICS:
            worst_name, worst = report.worst_class(metric)
            rows[f"{label} {metric.replace('_acc', '')}"] = {
                "mean": 100 * report.class_values(metric).mean(),
                "worst class": f"{worst_name} ({100 * worst:.1f})",
                "max - min": 100 * report.difference(metric),
                "std": 100 * report.std(metric),
                "normalised std": report.normalized_std(metric),
                "worst 20% mean": 100 * report.worst_fraction_mean(metric),
            }
    table = pd.DataFrame(rows)
    for measure in table.index:
        digits = 3 if measure == "normalised std" else 1
        table.loc[measure] = [f"{v:.{digits}f}" if isinstance(v, float) else v
                              for v in table.loc[measure]]
    return table


def reliable_note(eps: float, checkpoint: str = "runs/demo/pgd_at/model.safetensors") -> str:
    """The demo's attack is a quick one: say so, and how to run the reliable evaluation."""
    return (f"PGD-20 is a quick attack, not the reliable evaluation: it can overstate robust "
            f"accuracy and name the wrong worst class. For numbers to report, run AutoAttack: "
            f"robustfair audit --checkpoint {checkpoint} --dataset digits --eps {eps:g} "
            f"--out runs/demo/autoattack")


def _markdown(reports: dict[str, ClassReport], config: TrainConfig, attack_desc: str,
              seconds: float) -> str:
    worst = {label: r.worst_class("robust_acc")[0] for label, r in reports.items()}
    n = len(next(iter(reports.values())).predictions)
    lines = [
        "# robustfair demo: class-wise robustness on digits",
        "",
        f"Model `{config.model}`, standard training vs PGD-AT (L-inf eps {config.eps}, "
        f"{config.steps} steps), {config.epochs} epochs each, {config.optimizer} "
        f"lr {config.lr} ({config.schedule}), seed {config.seed} (the `{PRESET}` preset); "
        f"audited on the {n}-image test split with {attack_desc}. Wall time {seconds:.0f} s.",
        "",
        "## Per-class accuracy (%)",
        "",
        frame_markdown(side_by_side(reports)),
        "",
        "## Discrepancy measures (percent; normalised std as a fraction)",
        "",
        frame_markdown(discrepancy_rows(reports)),
        "",
        "Worst robust class: " + ", ".join(f"{k}: {v}" for k, v in worst.items()) + ".",
        "",
        f"**Note.** {reliable_note(config.eps)}",
        "",
        "![class-wise clean and robust accuracy](classwise.png)",
        "",
    ]
    return "\n".join(lines)


def frame_markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index as the first column), without extra packages."""
    header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    rows = [[str(i)] + [str(v) for v in row] for i, row in zip(frame.index, frame.to_numpy())]
    return markdown_table(header, rows)


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int | None = None, seed: int = 0,
             device: str | None = None, progress: bool = True) -> DemoResult:
    """Train, audit and report; returns the two ClassReports and the files written.

    ``epochs`` overrides the preset's (a shorter demo); the training runs live in
    ``out_dir/<objective>`` and are resumed or reused when the demo runs again.
    """
    # one CPU thread, like the preset's runs: faster for this tiny model, and the same numbers
    # on every machine; a GPU is unaffected
    with torch_threads(1 if resolve_device(device).type == "cpu" else None):
        return _run_demo(Path(out_dir), epochs, seed, device, progress)


def _run_demo(out: Path, epochs: int | None, seed: int, device: str | None,
              progress: bool) -> DemoResult:
    start = time.perf_counter()
    configs, attack_settings = demo_plan()
    ds = load_dataset("digits")
    attack = build_attack(attack_settings.pop("name"), **attack_settings, seed=seed)
    reports: dict[str, ClassReport] = {}
    # a line per trained and per audited model off a terminal (the trainer's bars only on one)
    said = Progress(2 * len(LABELS), "demo", unit="step", enabled=progress)
    for objective, label in LABELS.items():
        config = configs[objective].replace(seed=seed, device=device,
                                            epochs=epochs or configs[objective].epochs)
        result = train(config, out / objective, progress=progress and on_terminal())
        said.done(f"training {label}", units=1)
        reports[label] = audit(result.model, ds.test.x, ds.test.y, attacks=[attack],
                               classes=ds.classes, seed=seed, device=device,
                               progress=progress and on_terminal())
        reports[label].to_json(out / objective / "report.json")
        said.done(f"audit of {label}", units=1,
                  detail=f" (robust {reports[label].overall['robust_acc']:.1%})")
    said.close()
    seconds = time.perf_counter() - start
    png = classwise_bars(reports, out / "classwise.png",
                         title=f"digits, {config.model}: clean vs PGD-{attack.steps} robust "
                               f"accuracy (eps {config.eps})")
    md_path = out / "report.md"
    write_files_atomically({md_path: _markdown(reports, config, attack.describe(), seconds)})
    return DemoResult(reports, {"report": md_path, "plot": png}, seconds)
