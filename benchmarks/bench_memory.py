"""Does an audit stream? Peak RSS of auditing N vs 10N images, each in a fresh subprocess.

The images are uint8 (the caller's, 3x32x32, like CIFAR) and are created before the baseline
is read, so they are not counted as the audit's. In each subprocess:

1. import, build the model (``small_cnn`` for 3x32x32, untrained: memory does not care),
   make the uint8 images, and run a two-batch audit to warm up the allocator and kernels;
2. read the peak RSS (``VmHWM`` on Linux, else ``ru_maxrss``) = the baseline;
3. audit all the images with PGD-``steps``; read the peak RSS again.

The audit's own growth is (2) -> (3). If the audit streams, that growth does not depend on the
number of images (a float copy of 10N CIFAR-size images alone would be 10 * N * 12 KiB). The
audit holds one pool of a few batches at a time (``robustfair.auditing.POOL_BATCHES``, so that
PGD can refill its working batch), so N is at least one pool: below it, a larger N also means
a larger pool, up to the pool's fixed size.

Each size is measured twice: with glibc's malloc as it comes, and with its mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_=131072``). By default glibc raises that threshold after freeing a
large block, so later large blocks come from the heap, where tensors of ever new sizes
fragment it: the peak RSS then creeps up with the number of batches although no tensor
outlives its batch. robustfair's attacks run their passes on a few fixed sizes
(``Search.pass_rows``) so that the default allocator reuses its blocks; the fixed threshold
(large blocks go back to the OS when freed; jemalloc and tcmalloc, which PyTorch recommends
for CPU work, behave alike) shows the audit's footprint without the allocator's keeping.

    python benchmarks/bench_memory.py [--n N] [--factor 10] [--steps 5] [--batch-size 256]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _peak_mib() -> float:
    """This process's peak RSS in MiB.

    Linux: ``VmHWM`` of /proc/self/status, which belongs to the process's own address space.
    Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec, so a
    worker started by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def worker(n: int, steps: int, batch_size: int) -> dict:
    import torch

    import robustfair as rf
    from robustfair.auditing import audit

    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    model = rf.build_model("small_cnn", num_classes=10, in_channels=3, image_size=32).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    with torch.no_grad():  # labels = the model's own predictions: every point gets attacked
        y = torch.cat([model(x[s:s + 512].float() / 255).argmax(1) for s in range(0, n, 512)])
    attack = rf.build_attack("pgd", eps=8 / 255, steps=steps)
    warm = min(n, pool_size(batch_size))  # one pool: the allocator reaches its steady state
    audit(model, x[:warm], y[:warm], attacks=[attack], batch_size=batch_size, progress=False)
    before = _peak_mib()
    report = audit(model, x, y, attacks=[attack], batch_size=batch_size, progress=False)
    after = _peak_mib()
    robust = float((report.predictions["worst_pred"] == report.predictions["y_true"]).mean())
    return {"n": n, "images_mib": x.numel() / 2**20, "baseline_peak_mib": before,
            "peak_mib": after, "growth_mib": after - before, "robust_acc": robust}


FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def pool_size(batch_size: int) -> int:
    """Images the audit holds at once on 3x32x32 inputs (its pool, see robustfair/auditing.py)."""
    import torch

    from robustfair.auditing import _pool_size

    return _pool_size(batch_size, torch.empty(1, 3, 32, 32))


def measure(n: int, steps: int, batch_size: int, env: dict | None = None) -> dict:
    """Run :func:`worker` in a fresh interpreter (peak RSS is per process)."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(n),
                          "--steps", str(steps), "--batch-size", str(batch_size)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(n: int | None = None, factor: int = 10, steps: int = 5, batch_size: int = 256,
        env: dict | None = None) -> dict:
    """N vs factor * N images; N defaults to 1024 or one pool if larger (below one pool, the
    pool itself grows with N)."""
    n = n or max(1024, pool_size(batch_size))
    small, large = measure(n, steps, batch_size, env), measure(n * factor, steps, batch_size, env)
    return {
        "allocator": "glibc, mmap threshold fixed (MALLOC_MMAP_THRESHOLD_=131072)" if env
        else "glibc default",
        "small": small, "large": large, "factor": factor, "steps": steps, "batch_size": batch_size,
        "pool": pool_size(batch_size),
        # the whole process's peak, images included
        "peak_increase": large["peak_mib"] / small["peak_mib"] - 1.0,
        # the audit's own growth above the warm baseline
        "growth_small_mib": small["growth_mib"], "growth_large_mib": large["growth_mib"],
        # what a non-streaming audit would add at least: one float32 copy of the extra images
        "float_copy_of_extra_mib": (large["n"] - small["n"]) * 3 * 32 * 32 * 4 / 2**20,
    }


def describe(r: dict) -> str:
    s, l = r["small"], r["large"]
    return (f"audit PGD-{r['steps']} (batch {r['batch_size']}), small_cnn on uint8 3x32x32, "
            f"{r['allocator']}:\n"
            f"  N={s['n']:>6}: peak RSS {s['peak_mib']:.0f} MiB (audit's growth over warm baseline "
            f"{s['growth_mib']:+.1f} MiB; images {s['images_mib']:.1f} MiB)\n"
            f"  N={l['n']:>6}: peak RSS {l['peak_mib']:.0f} MiB (audit's growth over warm baseline "
            f"{l['growth_mib']:+.1f} MiB; images {l['images_mib']:.1f} MiB)\n"
            f"  {r['factor']}x the images -> peak RSS {100 * r['peak_increase']:+.1f}% "
            f"(a float copy of the extra images alone would be {r['float_copy_of_extra_mib']:.0f} MiB)")


def main(argv: list[str] | None = None) -> list[dict] | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help="default: 1024, or one pool of the audit if larger")
    p.add_argument("--factor", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size)))
        return None
    results = [run(args.n, args.factor, args.steps, args.batch_size),
               run(args.n, args.factor, args.steps, args.batch_size, FIXED_MMAP)]
    for r in results:
        print(describe(r))
    return results


if __name__ == "__main__":
    main()
