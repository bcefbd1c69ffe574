"""One PGD-AT training epoch: robustfair's trainer vs a plain loop calling torchattacks' PGD.

Same model (``--model``, default ``small_cnn``; any model of the zoo, built with its defaults,
from the trainer's seeded initial weights), same digits training points (the trainer's own
train split, i.e. without its 20-point validation hold-out), same batch size (64), same batch
order, SGD (lr 0.05, momentum 0.9, weight decay 5e-4, constant), PGD-10 L-inf eps 0.2 with step
2.5 * eps / 10 and a uniform random start, no augmentation. Four runners:

* ``robustfair train()``: ``robustfair.training.train`` for one epoch; the time is the epoch's
  ``time_s`` from its log, which *also* includes the end-of-epoch validation (here PGD-1 on 20
  held-out points, a few milliseconds) but not the start-up (data loading, model building) nor
  the checkpoint write;
* ``robustfair train(), contiguous``: the same with ``channels_last=False``;
* ``torchattacks loop``: the plain loop, ``x_adv = torchattacks.PGD(...)(x, y)``, then
  cross-entropy and an SGD step;
* ``torchattacks loop, channels_last``: the same with model and images in channels_last memory
  format, which robustfair's trainer uses by default: a ten-line loop can adopt it too;
* ``torchattacks loop, channels_last, fused SGD``: the same with ``SGD(..., fused=True)``, the
  one-kernel optimiser step the trainer uses where torch has it: a loop can adopt that too.

The target (issue 26): the trainer at least as fast as the *best* plain loop, so every row also
gives its speed against the fastest of the three loops (``vs best loop``). Beside the wall time,
each runner's CPU time (this process's, one intra-op thread) is given: on a machine shared with
other jobs it is the steadier figure. For the trainer, ``CPU s`` spans what ``time_s`` spans
(a training callback reads the CPU clock at the epoch's start and after its validation), and
``CPU s + ckpt`` is the CPU time of a two-epoch ``train()`` minus that of a one-epoch one: the
epoch with its validation *and* its checkpoint commit (weights, optimiser state, log and
manifest, each written atomically and flushed to disk), which a plain loop does not do;
``train pass`` is the epoch up to its last optimiser step, without the validation: the work a
plain loop does.

    python benchmarks/bench_training.py [--quick] [--repeats 3] [--model mlp]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from robustfair.training.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

EPS, STEPS, BATCH = c.DIGITS_EPS, 10, 64
ALPHA = 2.5 * EPS / STEPS
VAL_MAX = 20
FUSED_LOOP = "torchattacks loop, channels_last, fused SGD"
# the plain loops: name -> (channels_last, fused SGD)
LOOPS = {"torchattacks loop": (False, False), "torchattacks loop, channels_last": (True, False),
         FUSED_LOOP: (True, True)}


def _config(model: str = "small_cnn"):
    from robustfair.training import TrainConfig

    # val_min_per_class=0: the validation is the VAL_MAX points that val_max asks for (the
    # default minimum of 50 per class would make it 310 points, 13% of the trainer's epoch)
    return TrainConfig(dataset="digits", model=model, objective="pgd_at", eps=EPS,
                       steps=STEPS, alpha=ALPHA, epochs=1, batch_size=BATCH,
                       optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                       schedule="constant", augment=False, seed=0, keep="last",
                       val_max=VAL_MAX, val_min_per_class=0, eval_steps=1,
                       eval_batch_size=VAL_MAX, device="cpu")


def _train_split():
    """The float training points and labels the trainer trains on (its split without val)."""
    import robustfair as rf
    from robustfair.training.evaluate import stratified_holdout

    cfg = _config()
    ds = rf.load_dataset("digits")
    train_idx, _ = stratified_holdout(ds.train.y, cfg.val_fraction, cfg.val_max, cfg.val_seed,
                                      ds.num_classes, cfg.val_min_per_class)
    return ds.train.x[train_idx].float() / 255, ds.train.y[train_idx], ds


def _initial_model(ds, model: str = "small_cnn"):
    import robustfair as rf

    from robustfair.training.parts import derive_seed

    torch.manual_seed(derive_seed(0, "init"))  # the trainer's initial weights (seed 0)
    mean, std = ds.stats()
    return rf.build_model(model, num_classes=ds.num_classes, in_channels=ds.channels,
                          image_size=ds.image_size, mean=mean, std=std)


def _sgd(model, fused: bool = False):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                           **({"fused": True} if fused else {}))


class EpochCPU(Callback):
    """A training callback: this process's CPU seconds from each epoch's start to its end
    (training and validation, the span of the log's ``time_s``; not the checkpoint write),
    and to its last optimiser step (the training pass alone, without the validation)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.pass_seconds: list[float] = []
        self._start = self._last_step = 0.0

    def on_epoch_start(self, epoch: int) -> None:
        self._start = time.process_time()

    def on_step_end(self, step) -> None:
        self._last_step = time.process_time()

    def on_epoch_end(self, end) -> None:
        self.seconds.append(time.process_time() - self._start)
        self.pass_seconds.append(self._last_step - self._start)
        return None


def plain_loop_epoch(model, x, y, make_adv, fused: bool = False) -> float:
    """One epoch of the textbook PGD-AT loop; returns the mean training loss."""
    opt = _sgd(model, fused)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    total = 0.0
    for s in range(0, len(y), BATCH):
        idx = order[s:s + BATCH]
        xb, yb = x[idx], y[idx]
        x_adv = make_adv(model, xb, yb)
        model.train()
        loss = F.cross_entropy(model(x_adv), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(y)


def torchattacks_pgd(model, xb, yb):
    """The plain loops' inner attack: torchattacks' PGD with the trainer's settings."""
    import torchattacks

    return torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)(xb, yb)


def plain_loop_model(init, channels_last: bool):
    """A plain loop's model (:data:`LOOPS`): a copy of the initial weights ``init`` in the
    loop's memory format, with the loops' global seed set."""
    torch.manual_seed(0)
    model = copy.deepcopy(init)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--model", default="small_cnn",
                   help="a model of robustfair's zoo, built with its defaults (e.g. mlp, lenet)")
    args = p.parse_args(argv)
    c.set_threads()
    repeats = args.repeats or (1 if args.quick else 3)
    # 20 validation points on purpose (a few milliseconds): the trainer's warning says so
    warnings.filterwarnings("ignore", message="the validation split has only")

    from robustfair.training import train

    x, y, ds = _train_split()
    init = _initial_model(ds, args.model)
    trainer_seconds: list[float] = []
    tmp = tempfile.TemporaryDirectory()

    runs = {"n": 0}
    cpu: dict[str, list[float]] = {}

    def cpu_timed(name: str, fn):
        """``fn`` with this process's CPU seconds recorded under ``name`` (the trainer's runner
        returns its own figure, the epoch's, in place of the clean accuracy)."""
        def run():
            c0 = time.process_time()
            own, _ = fn()
            cpu.setdefault(name, []).append(own if own is not None else time.process_time() - c0)
            return None, None
        return run

    with_checkpoint: dict[str, list[float]] = {}
    # the trainer's training pass alone (its epoch without the validation): the work a plain
    # loop does, which validates nothing
    training_pass: dict[str, list[float]] = {}
    # each runner's mean training loss over its (first) epoch: a sanity check that every runner
    # trains on adversarial points (a broken inner attack shows as a much lower loss)
    losses: dict[str, float] = {}

    def trainer(name: str, seconds: list[float], **overrides):
        def run():
            cfg = _config(args.model).replace(**overrides)
            cpu_used, epoch_cpu = [], EpochCPU()
            for epochs in (1, 2):
                runs["n"] += 1
                c0 = time.process_time()
                result = train(cfg.replace(epochs=epochs), Path(tmp.name) / f"run{runs['n']}",
                               progress=False, callbacks=[epoch_cpu])
                cpu_used.append(time.process_time() - c0)
            seconds.append(float(result.epoch_log["time_s"].iloc[-1]))  # the second epoch's
            # the first epoch's training loss, comparable with a plain loop's one epoch
            losses[name] = float(result.epoch_log["loss"].iloc[0])
            with_checkpoint.setdefault(name, []).append(cpu_used[1] - cpu_used[0])
            training_pass.setdefault(name, []).append(epoch_cpu.pass_seconds[-1])
            return epoch_cpu.seconds[-1], None
        return run

    contiguous_seconds: list[float] = []

    x_cl = x.contiguous(memory_format=torch.channels_last)

    def plain_loop(name: str):
        channels_last, fused = LOOPS[name]
        images = x_cl if channels_last else x

        def run():
            losses[name] = plain_loop_epoch(plain_loop_model(init, channels_last), images, y,
                                            torchattacks_pgd, fused=fused)
            return None, None
        return run

    runners = {"robustfair train()": trainer("robustfair train()", trainer_seconds),
               "robustfair train(), contiguous": trainer("robustfair train(), contiguous",
                                                         contiguous_seconds, channels_last=False),
               **{name: plain_loop(name) for name in LOOPS}}
    timings = c.take_turns({name: cpu_timed(name, fn) for name, fn in runners.items()},
                           repeats=repeats)
    tmp.cleanup()
    # the trainer's own epoch time (its log), not the wall time of train() with its start-up
    timings["robustfair train()"].seconds = trainer_seconds[1:]
    timings["robustfair train(), contiguous"].seconds = contiguous_seconds[1:]
    def median(v: list[float]) -> float:
        return c.statistics.median(v[1:]) if len(v) > 1 else float("nan")  # without the warm-up

    cpu_median = {name: median(v) for name, v in cpu.items()}
    checkpoint_median = {name: median(v) for name, v in with_checkpoint.items()}
    pass_median = {name: median(v) for name, v in training_pass.items()}
    base = timings["torchattacks loop"].median
    loops = tuple(LOOPS)
    best = min(timings[name].median for name in loops)
    best_cpu = min(cpu_median.get(name, float("nan")) for name in loops)
    best_loop = min(loops, key=lambda name: cpu_median.get(name, float("inf")))

    def paired(name: str) -> str:
        """The CPU-time ratio (best loop / runner) within each repeat, where the runners took
        turns: its median and range over the repeats say how much of a ratio is noise, and
        the exact sign test whether the runner was faster (or slower) in more repeats than
        chance gives."""
        ratios = [ref / own for ref, own in zip(cpu.get(best_loop, [])[1:], cpu.get(name, [])[1:])]
        if not ratios or name == best_loop:
            return ""
        faster, slower = sum(r > 1 for r in ratios), sum(r < 1 for r in ratios)
        return (f"per repeat {c.statistics.median(ratios):.2f}x "
                f"[{min(ratios):.2f}, {max(ratios):.2f}], faster in {faster} of {len(ratios)} "
                f"(sign test p={c.sign_test(faster, slower):.2f})")
    rows = []
    for name, t in timings.items():
        rows.append({"case": "training", "what": f"one PGD-AT epoch, {args.model} on digits "
                     f"({len(y)} points, batch {BATCH}, PGD-{STEPS} eps {EPS})",
                     "library": name, "n": len(y), "seconds": t.median, "runs": len(t.seconds),
                     "img_per_s": c.fmt_rate(len(y), t.median),
                     "speedup_vs_torchattacks": base / t.median,
                     "speedup_vs_best_loop": best / t.median,
                     "cpu_seconds": cpu_median.get(name, float("nan")),
                     "cpu_speedup_vs_best_loop": best_cpu / cpu_median.get(name, float("nan")),
                     "cpu_seconds_with_checkpoint": checkpoint_median.get(name, float("nan")),
                     "cpu_with_checkpoint_vs_best_loop":
                         best_cpu / checkpoint_median.get(name, float("nan")),
                     "cpu_vs_best_loop_per_repeat": paired(name),
                     "cpu_training_pass": pass_median.get(name, float("nan")),
                     "cpu_training_pass_vs_best_loop":
                         best_cpu / pass_median.get(name, float("nan")),
                     "train_loss": losses.get(name, float("nan")),
                     "note": t.note})
    print(f"{'runner':44} {'s/epoch':>8} {'img/s':>8} {'vs torchattacks':>16} "
          f"{'vs best loop':>13} {'CPU s':>7} {'CPU vs best loop':>17} "
          f"{'CPU s + ckpt':>13} {'vs best loop':>13} {'train pass':>11} {'vs best loop':>13} "
          f"{'loss':>6}")
    for r in rows:
        ckpt = r["cpu_seconds_with_checkpoint"]  # nan for the loops: they write nothing
        ckpt_text = (f"{ckpt:13.3f} {r['cpu_with_checkpoint_vs_best_loop']:12.2f}x"
                     if ckpt == ckpt else f"{'-':>13} {'-':>13}")
        own_pass = r["cpu_training_pass"]  # nan for the loops: their epoch is the pass
        ckpt_text += (f" {own_pass:11.3f} {r['cpu_training_pass_vs_best_loop']:12.2f}x"
                      if own_pass == own_pass else f" {'-':>11} {'-':>13}")
        print(f"{r['library']:44} {r['seconds']:8.3f} {r['img_per_s']:8.1f} "
              f"{r['speedup_vs_torchattacks']:15.2f}x {r['speedup_vs_best_loop']:12.2f}x "
              f"{r['cpu_seconds']:7.3f} {r['cpu_speedup_vs_best_loop']:16.2f}x "
              f"{ckpt_text} {r['train_loss']:6.3f}  {r['cpu_vs_best_loop_per_repeat']} "
              f"{r['note']}")
    return rows


if __name__ == "__main__":
    main()
