"""What the audit's sanity checks cost on a small audit: the resnet case of ``bench_attacks.py``
(32 points), ``audit(sanity=True)`` against ``sanity=False``, taking turns in one process, median
of 3 timed turns after a warm-up.

The checks look at 32 points before the attacks (two forward passes, one input gradient, the
first attack at eps 0 with at most 5 steps) and at the results after them; on a 32-point audit
that is about as much work as the audit itself, on a 10,000-point audit a fraction of a percent.

    python benchmarks/bench_sanity_cost.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import bench_attacks  # noqa: E402


def main() -> None:
    from robustfair.auditing import audit

    c.set_threads()
    model, x, y = c.resnet_model_and_data(32)
    model.eval()
    for kind in ("fgsm", "pgd"):
        attack = bench_attacks.build_ours(kind, c.RESNET_EPS, c.RESNET_ALPHA)
        times: dict[bool, list[float]] = {True: [], False: []}
        for turn in range(4):  # the first turn warms up
            for sanity in (True, False):
                t0 = time.perf_counter()
                audit(model, x, y, attacks=[attack], batch_size=32, progress=False, sanity=sanity)
                if turn:
                    times[sanity].append(time.perf_counter() - t0)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{kind}: sanity on {on:.2f} s, off {off:.2f} s, on/off {on / off:.2f}", flush=True)


if __name__ == "__main__":
    main()
