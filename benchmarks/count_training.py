"""Instructions, not seconds: one PGD-AT epoch of robustfair's trainer vs the plain loops, counted.

``bench_training.py`` times the same runners, but on a shared 2-core machine one epoch's CPU
time varies by 15-30% from repeat to repeat, so a difference of 1-2% between the trainer and
a ten-line loop cannot be read from it. Valgrind's callgrind counts the instructions each
runner executes instead: the count repeats to about 0.05% (the same work gives the same
count), so such a difference can be read, and each change's share of it too. An instruction
count is not a time (a cache miss or a wide vector instruction counts once), so it compares
runners that run the same kernels and differ in what surrounds them: the trainer (which runs
its model in channels_last) against the channels_last loops, the fused one (``vs fused
loop``) above all, which steps as the trainer does. The contiguous loop runs other
convolution and pooling kernels: on LeNet it counts 8% fewer instructions than the
channels_last loop and takes 19-25% longer (``bench_training.py``), so its count is given but
compares with nothing.

What it counts: the runners of ``bench_training.py`` (same model, points, batch order, SGD
and PGD-10), after one warm-up round of each in the same process:

* ``robustfair train(), training pass``: the trainer's epoch from its start to its last
  optimiser step (the work a plain loop does), and ``+ validation``: the rest of its epoch
  (its PGD-1 validation on 20 held-out points), which a plain loop does not do;
* the three plain loops with torchattacks' PGD: as written, channels_last, and channels_last
  with fused SGD.

Needs valgrind with its headers (``valgrind/callgrind.h``) and a C compiler, for the two
markers that zero and dump the counts (built in a temporary folder). It runs the whole
Python process under valgrind: a few minutes for the MLP, more for larger models.

    python benchmarks/count_training.py [--model mlp]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import bench_training as b  # noqa: E402

MARKERS_C = """#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_START_INSTRUMENTATION; }
void zero(void) { CALLGRIND_ZERO_STATS; }
void dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""
PASS, VALIDATION = "robustfair train(), training pass", "robustfair train(), validation"


def inner(model_name: str, markers: str) -> None:
    """Runs under valgrind: a warm-up round, then the counted one (a dump per runner)."""
    import torch

    from robustfair.training import train
    from robustfair.training.callbacks import Callback
    from robustfair.training.parts import batches_per_epoch

    c.set_threads()
    warnings.filterwarnings("ignore", message="the validation split has only")
    lib = ctypes.CDLL(markers)
    x, y, ds = b._train_split()
    init = b._initial_model(ds, model_name)
    steps = batches_per_epoch(len(y), b.BATCH, world_size=1)

    class Counted(Callback):
        """Dumps the count at the epoch's last optimiser step and again at its end."""

        def __init__(self, counting: bool) -> None:
            self.counting = counting

        def on_epoch_start(self, epoch: int) -> None:
            if self.counting:
                lib.zero()

        def on_step_end(self, step) -> None:
            if self.counting and step.step == steps - 1:
                lib.dump(PASS.encode())

        def on_epoch_end(self, end) -> None:
            if self.counting:
                lib.dump(VALIDATION.encode())

    with tempfile.TemporaryDirectory() as tmp:
        for counting in (False, True):
            if counting:
                lib.start()
            train(b._config(model_name), Path(tmp) / f"run{counting}", progress=False,
                  callbacks=[Counted(counting)])
            for name, (channels_last, fused) in b.LOOPS.items():
                images = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                model = b.plain_loop_model(init, channels_last)
                if counting:
                    lib.zero()
                b.plain_loop_epoch(model, images, y, b.torchattacks_pgd, fused=fused)
                if counting:
                    lib.dump(name.encode())


def counts(folder: Path) -> dict[str, int]:
    """Each dump's label and instruction count."""
    found = {}
    for path in folder.glob("callgrind.out.*"):
        text = path.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if label and total:
            found[label.group(1).strip()] = int(total.group(1))
    return found


def main(argv: list[str] | None = None) -> dict[str, int]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", help="a model of robustfair's zoo (e.g. mlp, lenet)")
    p.add_argument("--inner", help=argparse.SUPPRESS)  # the markers' library, under valgrind
    args = p.parse_args(argv)
    if args.inner:
        inner(args.model, args.inner)
        return {}
    for tool in ("valgrind", "cc"):
        if shutil.which(tool) is None:
            sys.exit(f"count_training: needs {tool} on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        built = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(folder / "markers.so"),
                                "-x", "c", "-"], input=MARKERS_C, text=True,
                               capture_output=True)
        if built.returncode != 0:
            sys.exit("count_training: cannot build the markers (are valgrind's headers "
                     f"installed?): {built.stderr.strip().splitlines()[-1:]}")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
             f"--callgrind-out-file={folder}/callgrind.out.%p", sys.executable, __file__,
             "--model", args.model, "--inner", str(folder / "markers.so")],
            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        found = counts(folder)
        if run.returncode != 0 or PASS not in found:
            sys.exit(f"count_training: the counted run failed: {run.stderr.strip()[-2000:]}")
    found[PASS + " + validation"] = found[PASS] + found.pop(VALIDATION)
    fused = found[b.FUSED_LOOP]
    print(f"PGD-AT epoch, {args.model} on digits: instructions (callgrind, after a warm-up round)")
    print(f"{'runner':48} {'instructions':>14} {'vs fused loop':>14}")
    for name in (*b.LOOPS, PASS, PASS + " + validation"):
        print(f"{name:48} {found[name]:14,d} {fused / found[name]:13.4f}x")
    return found


if __name__ == "__main__":
    main()
