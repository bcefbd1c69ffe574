"""robustfair's ``autoattack`` against the official AutoAttack (pyautoattack 0.2.0): speed at
equal strength, and the model rows each spends.

One process, the same model object (the digits PGD-AT ``small_cnn`` of ``_common``), the same
test points, batch size and version (standard: APGD-CE, APGD-T, FAB-T, Square 5,000 queries).
Each library's figure is what it takes to know the robust accuracy: robustfair's audit (clean
pass, AutoAttack, sanity checks, bookkeeping); the official ``run_standard_evaluation`` (its
checks, clean pass, the four attacks on the points still robust). The libraries take turns
within each repeat; the median is reported (see ``_common``).

Model rows: a wrapper module counts the rows of every forward pass and, with a hook on its
output, the rows that a backward pass went through. Strength: robust accuracy of both and the
points where they disagree (a sign test), over ``--seeds`` seeds.

    python benchmarks/bench_autoattack.py               # 539 points, 3 repeats, 3 seeds
    python benchmarks/bench_autoattack.py --quick       # 200 points, 1 repeat, 1 seed
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DIGITS_EPS, digits_data, digits_pgdat_model, set_threads,  # noqa: E402
                     sign_test, take_turns)
from _rows import RowCounter  # noqa: E402


def ours(model, x, y, batch_size: int, seed: int, optimize: bool = True):
    import robustfair as rf

    attack = rf.build_attack("autoattack", eps=DIGITS_EPS, version="standard")
    report = rf.audit(model, x, y, attacks=[attack], batch_size=batch_size, seed=seed,
                      progress=False, optimize=optimize)
    p = report.predictions
    return (p["worst_pred"] == p["y_true"]).to_numpy(), report


def official(model, x, y, batch_size: int, seed: int):
    import logging

    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    adversary = AutoAttack(model, eps=DIGITS_EPS, norm="Linf", version="standard", seed=seed)
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        adv = model(x_adv).argmax(1) == y
    return (clean & adv).numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args(argv)
    threads = set_threads()
    n = 200 if args.quick else None
    repeats, seeds = (1, 1) if args.quick else (args.repeats, args.seeds)
    _, _, x, y = digits_data()
    x, y = (x[:n], y[:n]) if n else (x, y)
    model = digits_pgdat_model().eval()
    bs = args.batch_size
    print(f"digits PGD-AT small_cnn, {len(x)} test points, eps {DIGITS_EPS} L-inf, batch {bs}, "
          f"{threads} thread(s), torch {torch.__version__}")

    # 1. time, taking turns
    timing = take_turns({
        "robustfair autoattack (audit)": lambda: (None, float(ours(model, x, y, bs, 0)[0].mean())),
        "robustfair autoattack (model as is)": lambda: (None, float(ours(model, x, y, bs, 0, optimize=False)[0].mean())),
        "official AutoAttack": lambda: (None, float(official(model, x, y, bs, 0).mean())),
    }, repeats=repeats)
    base = timing["official AutoAttack"].median
    print("\n| library | median s | img/s | speed vs official | robust acc (seed 0) |")
    print("|---|---|---|---|---|")
    for name, t in timing.items():
        print(f"| {name} | {t.median:.2f} | {len(x) / t.median:.0f} | {base / t.median:.2f}x | "
              f"{100 * t.robust_acc:.2f}% |")

    # 2. model rows spent (one run each)
    counted = RowCounter(model).eval()
    ours(counted, x, y, bs, 0, optimize=False)
    rows_ours = (counted.forward_rows, counted.backward_rows)
    counted = RowCounter(model).eval()
    official(counted, x, y, bs, 0)
    rows_official = (counted.forward_rows, counted.backward_rows)
    print("\n| library | forward rows | of which also backward | forward-only rows |")
    print("|---|---|---|---|")
    for name, (f, b) in (("robustfair autoattack", rows_ours), ("official AutoAttack", rows_official)):
        print(f"| {name} | {f:,} | {b:,} | {f - b:,} |")

    # 3. strength over seeds, per point and per class
    print("\n| seed | robustfair | official | robust only under robustfair | only under official | sign-test p |")
    print("|---|---|---|---|---|---|")
    per_class_gap = torch.zeros(10, dtype=torch.float64)
    for seed in range(seeds):
        a, report = ours(model, x, y, bs, seed)
        b = official(model, x, y, bs, seed)
        a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
        print(f"| {seed} | {100 * a.mean():.2f}% | {100 * b.mean():.2f}% | {a_only} | {b_only} | "
              f"{sign_test(a_only, b_only):.3f} |")
        for c in range(10):
            mask = (y == c).numpy()
            per_class_gap[c] += (a[mask].mean() - b[mask].mean()) * 100 / seeds
    print("\nper-class robust accuracy, robustfair minus official, mean over seeds (points): "
          + ", ".join(f"{c}: {g:+.2f}" for c, g in enumerate(per_class_gap.tolist())))
    print(f"\nfinished {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
