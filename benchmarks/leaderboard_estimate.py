"""How long the leaderboard presets should take on one GPU: an ESTIMATE from counted passes and
model FLOPs, not a measurement (no GPU here).

A point AutoAttack (standard) cannot break runs every attack's full budget: APGD-CE 100 steps,
APGD-T 9 targets x 100 steps, FAB-T 9 x 100 steps (a forward and a backward, plus a forward to
check), Square 5,000 queries; with a backward pass counted as two forwards that is
PASSES_ROBUST forward equivalents. A broken point costs a few, so a model costs about
points x (its published AutoAttack accuracy) x PASSES_ROBUST forwards. The FLOPs of a forward
pass on a 32x32 image are scaled from WRN-28-10's 5.25 GMACs by blocks x width^2 (WRN-d-k has
(d-4)/6 blocks per group); ensembles count only their WRN-70-16 part, so they are lower bounds.

    python benchmarks/leaderboard_estimate.py
"""
from __future__ import annotations

import re

from robustfair.leaderboard import load_preset
from robustfair.leaderboard.presets import _folder

PASSES_ROBUST = 100 * 3 + 900 * 3 + 900 * 4 + 5000
THROUGHPUT = (100e12, 300e12)  # assumed sustained FLOP/s of one H100-class GPU on attack passes


def wrn_flops(depth: int, width: int) -> float:
    """FLOPs (2 x MACs) of one WRN-depth-width forward pass on a 32x32 image."""
    return 2 * 5.25e9 * ((depth - 4) / 6 * width ** 2) / (4 * 10 ** 2)


GFLOPS = {  # per architecture of the presets' models (RobustBench's model_info "architecture")
    "WRN-94-16": wrn_flops(94, 16), "WRN-82-8": wrn_flops(82, 8), "WRN-70-16": wrn_flops(70, 16),
    "WRN-28-10": wrn_flops(28, 10), "XCiT-L12": 13e9,  # 64 tokens x ~104M parameters x 2
}
ARCH = [  # name pattern -> architecture (ensembles and the ODE model: their WRN-70-16 part)
    (r"94-16", "WRN-94-16"), (r"82-8", "WRN-82-8"), (r"28-10|28_10|Standard", "WRN-28-10"),
    (r"XCiT-L12", "XCiT-L12"), (r".", "WRN-70-16")]


def published_aa(preset: str) -> dict[str, float]:
    """The published AutoAttack accuracy in each model line's comment (``# clean / AA``)."""
    text = _folder().joinpath(f"{preset}.yaml").read_text()
    return {m.group(1): float(m.group(2)) / 100
            for m in re.finditer(r"- name: (\S+)\s+# [\d.]+ / ([\d.]+)", text)}


def main() -> None:
    print("| preset | models | points | forward passes | FLOPs | hours at 300 / 100 TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for preset in ("robustbench-cifar10-linf", "robustbench-cifar100-linf"):
        spec = load_preset(preset)
        points = spec.points_per_class * (100 if spec.dataset == "cifar100" else 10)
        aa = published_aa(preset)
        passes = flops = 0.0
        for model in spec.models:
            arch = next(a for pattern, a in ARCH if re.search(pattern, model.name))
            n = points * aa[model.name] * PASSES_ROBUST
            passes += n
            flops += n * GFLOPS[arch]
        hours = [flops / t / 3600 for t in reversed(THROUGHPUT)]
        print(f"| {preset} | {len(spec.models)} | {points:,} | {passes / 1e9:.2f} billion | "
              f"{flops:.2e} | {hours[0]:.0f} / {hours[1]:.0f} |")


if __name__ == "__main__":
    main()
