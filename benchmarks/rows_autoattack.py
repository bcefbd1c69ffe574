"""Model rows (forward, and with a backward pass) of robustfair's autoattack (model as is) and
the official AutoAttack on the digits PGD-AT model, one run each, seed 0, and the points only
one side left robust (benchmarks/_rows.py counts).

    python benchmarks/rows_autoattack.py [N]     # the first N test points (default 539)
"""
import sys, time
sys.path.insert(0, "benchmarks")
import torch
from _common import DIGITS_EPS, digits_data, digits_pgdat_model, set_threads
from _rows import RowCounter
from bench_autoattack import ours, official
set_threads()
_, _, x, y = digits_data()
n = int(sys.argv[1]) if len(sys.argv) > 1 else 539
x, y = x[:n], y[:n]
model = digits_pgdat_model().eval()
c = RowCounter(model).eval(); t = time.time(); a, _ = ours(c, x, y, 256, 0, optimize=False); ta = time.time() - t
print("ours", c.rows(), f"robust {a.mean():.4f}", f"{ta:.1f}s", flush=True)
c = RowCounter(model).eval(); t = time.time(); b = official(c, x, y, 256, 0); tb = time.time() - t
print("official", c.rows(), f"robust {b.mean():.4f}", f"{tb:.1f}s")
print("only ours robust", int((a & ~b).sum()), "only official robust", int((b & ~a).sum()))
