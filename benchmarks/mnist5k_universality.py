"""The universality study on mnist5k, with its tests, as a results file.

Runs (or resumes) the ``mnist5k-universality`` preset (3 architectures x SGD/Adam x
standard/PGD-AT x 2 seeds on mnist5k at 14x14; ``robustfair study run``), then writes
``benchmarks/results/mnist5k_universality.md``:

- did adversarial training widen the class gap? The std of the class accuracies, PGD-AT minus
  standard on the SAME metric (clean vs clean, robust vs robust at the same eps), runs matched
  by model, optimiser and seed, a paired hierarchical bootstrap over the matched pairs and the
  test points (``robustfair.study.inference.training_gap_tests``);
- are the class profiles alike across architectures and optimisers? Cosine and centred
  correlation of matched pairs, with 95% intervals of their means (pairs and test points);
- the worst class of each run with its interval and noise p-value (``runs.csv``).

Usage::

    python benchmarks/mnist5k_universality.py [--out runs/mnist5k-universality] [--summarise-only]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_BOOT = 2000


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks",
                                ":!benchmarks/results"], cwd=ROOT, text=True,
                               capture_output=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "mnist5k-universality"))
    p.add_argument("--summarise-only", action="store_true")
    p.add_argument("--results", default=str(RESULTS / "mnist5k_universality.md"))
    args = p.parse_args(argv)
    command = "python benchmarks/mnist5k_universality.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()

    from robustfair.study import analysis as A
    from robustfair.metrics import format_p
    from robustfair.study.inference import training_gap_tests
    from robustfair.study.universality import universality
    from robustfair.study.table import load_tables, runs_table

    if not args.summarise_only:
        from robustfair.cli import main as cli

        cli(["study", "run", "mnist5k-universality", "--out", args.out, "--no-progress"])
    tables = load_tables(args.out)
    data = A.StudyData(tables.results)
    runs = runs_table(tables, n_boot=N_BOOT)
    done = tables.total_runs - len(tables.missing)
    out = Path(args.out).resolve()
    shown_out = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out

    lines = [
        "# Universality and the training gap on mnist5k",
        "",
        f"Commit `{commit()}`. Command: `{command.rstrip()}` (the study: `robustfair study run "
        f"mnist5k-universality --out {shown_out}`); "
        f"{done} of {tables.total_runs} runs finished; summary wall time "
        f"{time.perf_counter() - t0:.0f} s.",
        "",
        "mlp, small_cnn and lenet, each with SGD (lr 0.1) and Adam (lr 0.002), by standard "
        "training and by PGD-AT (L-inf eps 0.2, PGD-3), two seeds, 10 epochs, on mnist5k at "
        "14x14 (150 test points per class); audited on the whole test split with PGD-20 at eps "
        "0.2. Profiles: clean accuracy for standard models, robust for PGD-AT.",
        "",
        "## Did adversarial training widen the class gap? (same metric, paired test)",
        "",
        "Std of the class accuracies, PGD-AT minus standard, runs matched by model, optimiser "
        "and seed; 95% interval from a paired hierarchical bootstrap (matched pairs with the "
        f"sqrt(n/(n-1)) correction, and each run's test points; {N_BOOT} replicates); "
        "two-sided p from an exact sign-flip test over the pairs below 10 pairs (its "
        "smallest attainable p beside), else from the bootstrap. Robust spread leaves out "
        "pairs where a run sits at 0% robust in every class (its std of 0 is a floor).",
        "",
        "| scope | metric (both sides) | pairs | pairs left out (0% robust in every class) "
        "| difference of std, points [95%] | p | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in training_gap_tests(data, n_boot=N_BOOT):
        r = t.result
        lines.append(f"| {t.what} | {'clean' if t.metric_a == 'clean_acc' else 'robust'} | "
                     f"{t.runs_a} | {t.skipped} | {100 * t.estimate:+.1f} [{100 * t.lo:+.1f}, "
                     f"{100 * t.hi:+.1f}] | {format_p(r.p_value, r.p_min if r.exact else None)} "
                     f"| {r.test} |")
    lines += ["", "## Are the class profiles alike?", "",
              "Matched pairs differ only in the named axis (same everything else and seed). "
              "Cosine, and centred correlation (Pearson r of the class profiles); ranges over "
              "the pairs and the 95% interval of the mean (pairs and test points resampled).",
              "", "| objective | across | pairs | cosine range | cosine mean [95%] | "
              "centred r range | centred r mean [95%] |", "|---|---|---|---|---|---|---|"]
    u = universality(data, n_boot=N_BOOT)
    for s in u.similarities:
        lo_c, hi_c = s.mean_interval
        lo_r, hi_r = s.centered_mean_interval
        lines.append(f"| {s.objective} ({'clean' if s.metric == 'clean_acc' else 'robust'}) | "
                     f"{s.across} | {s.n} | {s.lo:.3f}-{s.hi:.3f} | {s.mean:.3f} [{lo_c:.3f}, "
                     f"{hi_c:.3f}] | {min(s.centered):.2f}-{max(s.centered):.2f} | "
                     f"{np.mean(s.centered):.2f} [{lo_r:.2f}, {hi_r:.2f}] |")
    for what, table in (("architecture", u.worst_by_model),
                        ("optimiser setting", u.worst_by_hparams)):
        for (dataset, objective), worst in table.items():
            listing = ", ".join(f"{k} → {'/'.join(v)}" for k, v in worst.items())
            lines.append("")
            lines.append(f"Worst class of the mean profile per {what} ({objective}): {listing} "
                         f"({'the same' if A.same_worst_class(worst) else 'not the same'}).")
    lines += ["", "## Each run: the worst class and the gap against sampling noise", "",
              "Worst class with its 95% bootstrap interval (test points); std of the class "
              "accuracies beside the std that sampling noise alone gives (every class at the "
              "pooled accuracy, each with its 150 points) and the p-value of 'the gap exceeds "
              "sampling noise'. Percent.", "",
              "| model | objective | optimizer | seed | clean worst (class) | clean std (no gap), p "
              "| robust worst (class) | robust std (no gap), p |", "|---|---|---|---|---|---|---|---|"]
    for r in runs.sort_values(["model", "objective", "optimizer", "seed"]).itertuples():
        lines.append(
            f"| {r.model} | {r.objective} | {r.optimizer} | {r.seed} | {pct(r.clean_worst)} "
            f"[{pct(r.clean_worst_lo)}, {pct(r.clean_worst_hi)}] ({r.clean_worst_class}) | "
            f"{pct(r.clean_std)} ({pct(r.clean_std_noise_floor)}), {format_p(r.clean_p_noise)} | "
            f"{pct(r.robust_worst)} [{pct(r.robust_worst_lo)}, {pct(r.robust_worst_hi)}] "
            f"({r.robust_worst_class}) | {pct(r.robust_std)} ({pct(r.robust_std_noise_floor)}), "
            f"{format_p(r.robust_p_noise)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
