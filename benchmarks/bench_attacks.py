"""Attack throughput: robustfair's audit vs torchattacks vs IBM ART, same model, data and settings.

Cases: PGD-20 L-inf, FGSM, APGD-CE (100 iterations, 1 restart) on

* ``digits``: the PGD-AT ``small_cnn`` (eps 0.2, cached in ``benchmarks/.cache``), the whole
  539-image test split;
* ``resnet``: an untrained ``preact_resnet18`` on 32x32x3 Gaussian-noise images labelled with
  the model's own predictions (eps 0.25/255: see ``_common.RESNET_EPS``).

Prints images/second for each library, robustfair's speed-up over each peer, and the robust
accuracy each found (a faster attack that finds less is not faster). On digits one more row,
``robustfair, model as is`` (``audit(..., optimize=False)``), splits robustfair's lead into
what the attack view gives and what attacking only the still-robust points gives.

    python benchmarks/bench_attacks.py [--quick] [--case digits|resnet|all] [--attack pgd,fgsm,apgd-ce]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

ATTACKS = ("pgd", "fgsm", "apgd-ce")
STEPS = {"pgd": 20, "fgsm": 1, "apgd-ce": 100}
LABEL = {"pgd": "PGD-20 Linf", "fgsm": "FGSM", "apgd-ce": "APGD-CE-100"}
# robustfair's audit with optimize=False: the model run as it is, without the attack view
# (BatchNorm folding, channels_last); shows what the view adds to the
# early exit and refill
AS_IS = "robustfair, model as is"


def build_ours(kind: str, eps: float, alpha: float):
    from robustfair.attacks import build_attack

    if kind == "pgd":
        return build_attack("pgd", eps=eps, steps=STEPS["pgd"], alpha=alpha, random_start=True)
    if kind == "fgsm":
        return build_attack("fgsm", eps=eps)
    return build_attack("apgd-ce", eps=eps, steps=STEPS["apgd-ce"], restarts=1)


def run_case(case: str, kinds: list[str], *, quick: bool, repeats: int, with_art: bool = True,
             seeds: int = 1) -> list[dict]:
    """Time every attack of ``kinds`` on one case; one row per (attack, library)."""
    if case == "digits":
        model = c.digits_pgdat_model()
        _, _, x, y = c.digits_data()
        if quick:
            x, y = x[:256], y[:256]
        eps, alpha, batch_size = c.DIGITS_EPS, c.DIGITS_ALPHA, 128
        what = "small_cnn PGD-AT (eps 0.2) on digits test"
    else:
        n = 16 if quick else 32
        model, x, y = c.resnet_model_and_data(n)
        eps, alpha, batch_size = c.RESNET_EPS, c.RESNET_ALPHA, 16 if quick else 32
        what = "untrained preact_resnet18 on 32x32 Gaussian noise (labels = own predictions)"
    model.eval()
    num_classes = int(model.robustfair_config["num_classes"])
    rows = []
    for kind in kinds:
        ours = build_ours(kind, eps, alpha)
        ta = c.torchattacks_attack(model, kind, eps, alpha, STEPS[kind])

        def run_ours():
            return c.robustfair_audit(model, x, y, ours, batch_size)

        def run_ta():
            torch.manual_seed(0)
            return c.peer_audit(model, x, y, ta, batch_size)

        def run_ours_as_is():
            return c.robustfair_audit(model, x, y, ours, batch_size, optimize=False)

        runners = {"robustfair": run_ours, "torchattacks": run_ta}
        if case == "digits":  # how much of the lead the faster model view gives (not a peer)
            runners[AS_IS] = run_ours_as_is
        if with_art:
            try:
                art = c.art_attack(model, kind, eps, alpha, STEPS[kind], batch_size,
                                   tuple(x.shape[1:]), num_classes)

                def run_art():
                    torch.manual_seed(0)
                    return c.peer_audit(model, x, y, art, batch_size)

                runners["ART"] = run_art
            except Exception as exc:  # noqa: BLE001 - reported in the table
                rows.append({"case": case, "what": what, "attack": LABEL[kind], "library": "ART",
                             "note": f"not run: {type(exc).__name__}: {exc}"})
        if case == "resnet":
            # A full warm-up run would double a long benchmark: warm the shared model's kernels
            # (the same for every library) with one forward and backward pass instead.
            c.warm_model(model, x[:batch_size], y[:batch_size])
        timings = c.take_turns(runners, repeats=repeats, warmup=case != "resnet")
        base = timings["robustfair"].median
        for lib, t in timings.items():
            rows.append({
                "case": case, "what": what, "attack": LABEL[kind], "library": lib,
                "n": len(x), "batch_size": batch_size, "eps": eps,
                "alpha": alpha if kind == "pgd" else None,
                "seconds": t.median, "runs": len(t.seconds),
                "img_per_s": c.fmt_rate(len(x), t.median),
                "robustfair_speedup": (t.median / base) if lib != "robustfair" else 1.0,
                "clean_acc": t.clean_acc, "robust_acc": t.robust_acc, "note": t.note,
            })
        if case == "digits" and seeds > 1 and kind != "fgsm":  # FGSM draws nothing at random
            _accuracy_over_seeds(rows, kind, model, x, y, ours, eps, alpha, batch_size, seeds)
        if kind == "pgd" and case == "digits":
            rows.extend(_nothing_to_fool(model, x, y, batch_size, repeats))
    return rows


def _accuracy_over_seeds(rows, kind, model, x, y, ours, eps, alpha, batch_size, seeds) -> None:
    """Robust accuracy of robustfair and torchattacks over ``seeds`` seeds (untimed runs).

    One run's accuracy moves with its random start by about half a point here (APGD-CE, 440
    attacked points): judging "equal or lower" on one seed would judge the luck of the draw.
    """
    import statistics

    found = {"robustfair": [], "torchattacks": []}
    for seed in range(seeds):
        found["robustfair"].append(c.robustfair_audit(model, x, y, ours, batch_size, seed=seed)[1])
        torch.manual_seed(seed)
        ta = c.torchattacks_attack(model, kind, eps, alpha, STEPS[kind], seed=seed)
        found["torchattacks"].append(c.peer_audit(model, x, y, ta, batch_size)[1])
    for r in rows:
        if r.get("attack") == LABEL[kind] and r.get("library") in found and "seconds" in r:
            values = found[r["library"]]
            r["robust_acc_seeds"] = values
            r["robust_acc_mean"] = statistics.fmean(values)
            r["robust_acc_sd"] = statistics.stdev(values)


def _nothing_to_fool(model, x, y, batch_size, repeats) -> list[dict]:
    """Per-step cost alone: PGD-20 at eps 0 fools nobody, so nobody leaves the batch early.

    This row shows what robustfair's bookkeeping costs when its early exit cannot help.
    """
    from robustfair.attacks import build_attack

    ours = build_attack("pgd", eps=0.0, steps=20, alpha=c.DIGITS_ALPHA, random_start=True)
    ta = c.torchattacks_attack(model, "pgd", 0.0, c.DIGITS_ALPHA, 20)
    timings = c.take_turns({
        "robustfair": lambda: c.robustfair_audit(model, x, y, ours, batch_size),
        "torchattacks": lambda: c.peer_audit(model, x, y, ta, batch_size),
    }, repeats=repeats)
    base = timings["robustfair"].median
    return [{
        "case": "digits", "what": "same model, eps 0 (no point can be fooled)",
        "attack": "PGD-20 eps=0", "library": lib, "n": len(x), "batch_size": batch_size,
        "eps": 0.0, "alpha": c.DIGITS_ALPHA, "seconds": t.median, "runs": len(t.seconds),
        "img_per_s": c.fmt_rate(len(x), t.median),
        "robustfair_speedup": (t.median / base) if lib != "robustfair" else 1.0,
        "clean_acc": t.clean_acc, "robust_acc": t.robust_acc, "note": t.note,
    } for lib, t in timings.items()]


def print_rows(rows: list[dict]) -> None:
    print(f"{'case':7} {'attack':14} {'library':24} {'img/s':>9} {'x faster':>9} "
          f"{'clean':>6} {'robust':>7} {'robust, seeds':>15}  note")
    for r in rows:
        if "seconds" not in r:
            print(f"{r['case']:7} {r['attack']:14} {r['library']:24} {'':>9} {'':>9} {'':>6} {'':>7} "
                  f"{'':>15}  {r['note']}")
            continue
        speed = "" if r["library"] == "robustfair" else f"{r['robustfair_speedup']:.2f}"
        pct = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        print(f"{r['case']:7} {r['attack']:14} {r['library']:24} {r['img_per_s']:9.1f} {speed:>9} "
              f"{pct(r['clean_acc']):>6} {pct(r['robust_acc']):>7} {seed_summary(r):>15}  {r['note']}")


def seed_summary(r: dict) -> str:
    """``mean ± sd (n)`` of the robust accuracy over seeds, in percent, if measured."""
    if "robust_acc_mean" not in r:
        return ""
    return (f"{100 * r['robust_acc_mean']:.2f} ± {100 * r['robust_acc_sd']:.2f} "
            f"({len(r['robust_acc_seeds'])})")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer images and repeats")
    p.add_argument("--case", default="all", choices=("digits", "resnet", "all"))
    p.add_argument("--attack", default=",".join(ATTACKS))
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-art", action="store_true", help="skip IBM ART (it is the slowest)")
    p.add_argument("--seeds", type=int, default=None,
                   help="digits: robust accuracy over this many seeds (default 10, --quick 1)")
    args = p.parse_args(argv)
    c.set_threads()
    kinds = [k.strip() for k in args.attack.split(",") if k.strip()]
    # digits runs take a fraction of a second and this shared machine's speed drifts from
    # minute to minute: five timed repeats per library give a steadier median
    repeats = args.repeats or (1 if args.quick else 5)
    cases = ("digits", "resnet") if args.case == "all" else (args.case,)
    rows = []
    for case in cases:
        # the ResNet case is slow on a CPU (a minute per APGD run): two timed repeats
        reps = min(repeats, 2) if case == "resnet" and args.repeats is None else repeats
        seeds = args.seeds or (1 if args.quick else 10)
        rows += run_case(case, kinds, quick=args.quick, repeats=reps, with_art=not args.no_art,
                         seeds=seeds)
    print_rows(rows)
    return rows


if __name__ == "__main__":
    main()
