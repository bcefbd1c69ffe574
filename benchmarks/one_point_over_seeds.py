"""One test point of a bench_unseen model, attacked alone by both AutoAttacks under many seeds.

A point that only one library broke in a benchmark run may be that library's luck (its random
starts at that seed) or a real difference in strength. Attacking the point alone under seeds
0..S-1 with robustfair's ``autoattack`` (the point's own random streams, its index in the test
set) and the official ``run_standard_evaluation`` (``seed=s``) says which: how often each one
breaks it, and the official's final margin (top logit minus the runner-up's) at each seed.

    PYTHONPATH=$PWD/src python benchmarks/one_point_over_seeds.py --model mlp --point 97 --seeds 20
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_unseen as bu  # noqa: E402


def main(argv: list[str] | None = None) -> tuple[int, int, int]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", choices=sorted(bu.MODELS))
    p.add_argument("--point", type=int, required=True, help="index in the model's test set")
    p.add_argument("--seeds", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import robustfair as rf

    eps = bu.MODELS[args.model].eps
    net, x_test, y_test = bu.trained(args.model)
    i = args.point
    x, y = x_test[i:i + 1], y_test[i:i + 1]
    ours = theirs = 0
    for seed in range(args.seeds):
        attack = rf.build_attack("autoattack", eps=eps, version="standard")
        broke_ours = bool(attack.perturb(net, x, y, seed=seed, index=torch.tensor([i])).success[0])
        x_adv = bu.official_run(net, x, y, eps, batch_size=1, seed=seed)
        with torch.no_grad():
            logits = net(x_adv)[0]
        top2 = logits.topk(2).values
        broke_theirs = bool(logits.argmax() != y[0])
        ours, theirs = ours + broke_ours, theirs + broke_theirs
        print(f"seed {seed}: robustfair broke it: {broke_ours}; the official: {broke_theirs} "
              f"(its margin {float(top2[0] - top2[1]):.2e})", flush=True)
    print(f"{args.model} point {i}: robustfair broke it under {ours}/{args.seeds} seeds, "
          f"the official under {theirs}/{args.seeds}")
    return ours, theirs, args.seeds


if __name__ == "__main__":
    main()
