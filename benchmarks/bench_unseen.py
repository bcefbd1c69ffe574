"""robustfair's ``autoattack`` against the official AutoAttack on architectures robustfair never
defined: the speed, model rows and strength a user sees on the model they bring.

One process, the libraries taking turns on each model (robustfair first, then the official
``run_standard_evaluation``), the same model object, points, eps, batch size and version
(``standard``: APGD-CE, APGD-T, FAB-T, Square 5,000 queries). The models:

* ``digits_tanh``: a conv-tanh-avgpool network on digits (8x8 grey), eps 0.2;
* ``mlp``: a three-layer ReLU MLP on digits, eps 0.2;
* ``timm_resnet18``: ``timm.create_model("resnet18")`` on mnist5k upsampled to 32x32 RGB, eps 0.1;
* ``rb_preact18``: RobustBench's ``PreActResNet18`` architecture, same data and eps.

Each is PGD-AT-trained briefly by a plain loop in this file (so a real share of points stays
robust), once, and cached as a state dict in ``~/.cache/robustfair-bench`` (``$BENCH_CACHE``).

Model rows are counted by a wrapper that fx traces through (so robustfair's attack view still
rewrites the model inside): every forward pass adds its rows, and a hook on its input adds the
rows again when a backward pass reaches it. Rows and time come from the same run; the clean and
adversarial forward passes that score the official result are made outside the timer and the
count (they favour the official side).

timm and RobustBench need the second environment:

    PYTHONPATH=$PWD/src /work/eco/bin/python benchmarks/bench_unseen.py            # all models
    PYTHONPATH=$PWD/src /work/eco/bin/python benchmarks/bench_unseen.py --models digits_tanh,mlp --n 100
    ... --profile digits_tanh      # where robustfair's time goes on one model (torch profiler)

Wall time and this process's CPU time are both reported: on a machine shared with other jobs
(one intra-op thread, the default of ``_common.set_threads``) the CPU time is the steadier
figure; on a GPU only the wall time means anything.
``--n`` overrides every model's point count (defaults sized for a loaded 2-core machine);
``--out`` writes the markdown table (with the commit and command) to a file.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import set_threads  # noqa: E402

CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "robustfair-bench"))


# ---------------------------------------------------------------------------- row counting
# forward and backward rows per counter, by key: fx.wrap'd functions take plain constants
_ROWS: dict[int, list[int]] = {}


@fx.wrap
def count_rows(x: torch.Tensor, key: int) -> torch.Tensor:
    """Identity that counts ``x``'s rows now and again when a backward pass reaches it.

    ``fx.wrap``: a leaf of any fx trace, so robustfair's attack view keeps rewriting the rest.
    """
    rows = _ROWS[key]
    rows[0] += len(x)
    if not x.requires_grad:
        return x
    y = x.view_as(x)  # a node of this pass only: its hook fires once per backward through it
    n = len(x)

    def count(grad: torch.Tensor) -> torch.Tensor:
        rows[1] += n
        return grad

    y.register_hook(count)
    return y


class RowCounter(nn.Module):
    """``net`` with its forward rows and backward rows counted (see :func:`count_rows`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.key = len(_ROWS)
        _ROWS[self.key] = [0, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(count_rows(x, self.key))

    def take(self) -> tuple[int, int]:
        """(forward rows, backward rows) since the last call."""
        rows = tuple(_ROWS[self.key])
        _ROWS[self.key] = [0, 0]
        return rows


# ---------------------------------------------------------------------------- the models
class ConvTanh(nn.Module):
    """conv-tanh-avgpool twice, then a linear layer: 1x8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.c2(x)), 2)
        return self.fc(x.flatten(1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def timm_resnet18() -> nn.Module:
    import timm

    return timm.create_model("resnet18", num_classes=10, pretrained=False)


def rb_preact18() -> nn.Module:
    from robustfair.models._optional import alias_autoattack

    alias_autoattack()  # robustbench's package imports `autoattack` (pyautoattack here)
    from robustbench.model_zoo.architectures.resnet import PreActResNet18

    return PreActResNet18()


def digits() -> tuple[torch.Tensor, ...]:
    import robustfair as rf

    ds = rf.load_dataset("digits")
    return ds.train.x.float() / 255, ds.train.y, ds.test.x.float() / 255, ds.test.y


def mnist5k_rgb32() -> tuple[torch.Tensor, ...]:
    """mnist5k, 28x28 grey upsampled to 32x32 and repeated to 3 channels: a CIFAR-shaped stand-in."""
    import robustfair as rf

    ds = rf.load_dataset("mnist5k")

    def rgb32(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float() / 255, size=32, mode="bilinear", align_corners=False)
        return x.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()

    return rgb32(ds.train.x), ds.train.y, rgb32(ds.test.x), ds.test.y


@dataclass(frozen=True)
class Spec:
    build: Callable[[], nn.Module]
    data: Callable[[], tuple[torch.Tensor, ...]]
    eps: float
    n: int              # default audit points (sized for a loaded 2-core machine)
    train_points: int   # PGD-AT: this many training points, for `epochs`, PGD-`steps`
    epochs: int
    steps: int
    lr: float


MODELS: dict[str, Spec] = {
    "digits_tanh": Spec(ConvTanh, digits, 0.2, 200, 10_000, 20, 10, 5e-3),
    "mlp": Spec(mlp, digits, 0.2, 200, 10_000, 20, 10, 2e-3),
    "timm_resnet18": Spec(timm_resnet18, mnist5k_rgb32, 0.1, 16, 1_024, 1, 2, 1e-3),
    "rb_preact18": Spec(rb_preact18, mnist5k_rgb32, 0.1, 4, 2_048, 2, 2, 1e-3),
}


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    alpha = 2.5 * eps / steps
    delta = torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def trained(name: str, device: str = "cpu") -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(the PGD-AT model in eval mode, test x, test y) on ``device``, training and caching the
    model the first time."""
    spec = MODELS[name]
    x_train, y_train, x_test, y_test = (t.to(device) for t in spec.data())
    model = spec.build().to(device)
    key = hashlib.sha256(repr((name, spec.eps, spec.train_points, spec.epochs, spec.steps,
                               spec.lr)).encode()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.eval(), x_test, y_test
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    x_train, y_train = x_train[: spec.train_points], y_train[: spec.train_points]
    t0 = time.perf_counter()
    for epoch in range(spec.epochs):
        order = torch.randperm(len(x_train), device=device)
        for s in range(0, len(order), 64):
            idx = order[s: s + 64]
            model.eval()  # the attack sees fixed batch-norm statistics
            x_adv = pgd(model, x_train[idx], y_train[idx], spec.eps, spec.steps)
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_adv), y_train[idx]).backward()
            opt.step()
        print(f"  {name}: PGD-AT epoch {epoch + 1}/{spec.epochs} done "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)  # a kill leaves no half-written cache entry
    return model.eval(), x_test, y_test


# ---------------------------------------------------------------------------- the two runs
def robustfair_run(model: nn.Module, x, y, eps: float, batch_size: int, seed: int,
                   parts: dict[str, float] | None = None) -> np.ndarray:
    """robustfair's audit with AutoAttack standard: per point, robust (clean right and not broken).

    ``parts`` gets the seconds from the start to the end of each AutoAttack part."""
    import robustfair as rf
    from robustfair._progress import listen_for_parts

    attack = rf.build_attack("autoattack", eps=eps, version="standard")
    start = time.perf_counter()

    def part_done(name: str, points: int, robust: int) -> None:
        sync()
        if parts is not None:
            parts[name] = time.perf_counter() - start

    with listen_for_parts(part_done):
        report = rf.audit(model, x, y, attacks=[attack], batch_size=batch_size, seed=seed,
                          progress=False)
    p = report.predictions
    return (p["worst_pred"] == p["y_true"]).to_numpy()


class _OfficialParts(logging.Handler):
    """Reads the official AutoAttack's own log: the time at the end of each attack."""

    PATTERN = re.compile(r"robust accuracy after (\S+): .*\(total time ([0-9.]+) s\)")

    def __init__(self, parts: dict[str, float]) -> None:
        super().__init__(logging.DEBUG)
        self.parts = parts

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.parts[match.group(1).lower()] = float(match.group(2))


def official_run(model: nn.Module, x, y, eps: float, batch_size: int, seed: int,
                 parts: dict[str, float] | None = None) -> torch.Tensor:
    """The official ``run_standard_evaluation``; returns its adversarial images. ``parts`` gets
    the seconds to the end of each attack, from its own log (its verbose mode, kept off screen)."""
    from pyautoattack import AutoAttack

    log = logging.getLogger("auto-attack")
    handler = _OfficialParts({} if parts is None else parts)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)
    try:
        adversary = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=seed,
                               device=x.device)
        adversary.verbose = True  # what it logs goes to the handler only
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        log.removeHandler(handler)
    return x_adv


@dataclass
class Result:
    name: str
    n: int
    eps: float
    clean: float
    seconds: tuple[float, float]           # wall: robustfair, official
    cpu_seconds: tuple[float, float]       # this process's CPU time: robustfair, official
    rows: tuple[tuple[int, int], tuple[int, int]]  # (forward, backward) each
    robust: tuple[float, float]
    only_rf_broke: int
    only_official_broke: int
    weaker_classes: int                    # classes where robustfair's robust accuracy is higher
    seed: int = 0
    per_point: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # robust rf, official, label
    parts: tuple[dict[str, float], dict[str, float]] = ({}, {})  # seconds to each part's end


def bench(name: str, n: int | None, batch_size: int, seed: int, device: str) -> Result:
    spec = MODELS[name]
    net, x_test, y_test = trained(name, device)
    n = n or spec.n
    x, y = x_test[:n], y_test[:n]
    counted = RowCounter(net).eval()
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    parts: tuple[dict[str, float], dict[str, float]] = ({}, {})
    ours = robustfair_run(counted, x, y, spec.eps, batch_size, seed, parts[0])
    sync()
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    rows_ours = counted.take()
    t0, c0 = time.perf_counter(), time.process_time()
    x_adv = official_run(counted, x, y, spec.eps, batch_size, seed, parts[1])
    sync()
    t_official, c_official = time.perf_counter() - t0, time.process_time() - c0
    rows_official = counted.take()
    with torch.no_grad():
        clean = net(x).argmax(1) == y
        theirs = (clean & (net(x_adv).argmax(1) == y)).cpu().numpy()
    labels = y.cpu().numpy()
    weaker = weaker_classes(ours, theirs, labels)
    return Result(name, n, spec.eps, float(clean.float().mean()), (t_ours, t_official),
                  (c_ours, c_official),
                  (rows_ours, rows_official), (float(ours.mean()), float(theirs.mean())),
                  int((theirs & ~ours).sum()), int((ours & ~theirs).sum()), weaker, seed,
                  (ours, theirs, labels), parts)


def weaker_classes(ours: np.ndarray, theirs: np.ndarray, labels: np.ndarray) -> int:
    """Classes where more points stay robust under robustfair than under the official attack
    (per-point robust flags of both, on the same points)."""
    return sum(int(ours[labels == c].sum() > theirs[labels == c].sum()) for c in np.unique(labels))


def sync() -> None:
    """Wait for queued GPU work, so a timer reads the work done, not the work queued."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile(name: str, n: int | None, batch_size: int, seed: int) -> str:
    """The torch profiler's table of robustfair's run on one model: model ops against the rest."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    spec = MODELS[name]
    net, x_test, y_test = trained(name)
    n = n or spec.n
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        robustfair_run(net, x_test[:n], y_test[:n], spec.eps, batch_size, seed)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def table(results: list[Result]) -> str:
    lines = ["| model | points | eps | clean | robustfair s | official s | speed (official / robustfair) "
             "| CPU s robustfair / official | CPU-time speed "
             "| forward rows rf / official | backward rows rf / official | robust rf | robust official "
             "| only robustfair broke | only official broke | classes rf weaker |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seeds = len({r.seed for r in results}) > 1
    for r in results:
        (fo, bo), (ff, bf) = r.rows
        lines.append(
            f"| {_label(r, seeds)} | {r.n} | {r.eps:g} | {100 * r.clean:.1f}% | {r.seconds[0]:.1f} | "
            f"{r.seconds[1]:.1f} | {r.seconds[1] / r.seconds[0]:.2f}x | {r.cpu_seconds[0]:.1f} / "
            f"{r.cpu_seconds[1]:.1f} | {r.cpu_seconds[1] / r.cpu_seconds[0]:.2f}x | {fo:,} / {ff:,} "
            f"({fo / max(ff, 1):.2f}) | {bo:,} / {bf:,} ({bo / max(bf, 1):.2f}) | "
            f"{100 * r.robust[0]:.1f}% | {100 * r.robust[1]:.1f}% | {r.only_rf_broke} | "
            f"{r.only_official_broke} | {r.weaker_classes} |")
    if results:
        ratios = sorted(r.seconds[1] / r.seconds[0] for r in results)
        cpu = sorted(r.cpu_seconds[1] / r.cpu_seconds[0] for r in results)
        lines.append(f"\nmedian speed ratio {float(np.median(ratios)):.2f}x, lowest {ratios[0]:.2f}x "
                     f"(CPU time: median {float(np.median(cpu)):.2f}x, lowest {cpu[0]:.2f}x; "
                     f"target: median >= 1.5x, none below 1.2x)")
    if seeds:
        lines.append("\n" + strength_over_seeds(results))
    lines.append("\n" + part_table(results))
    return "\n".join(lines)


def _label(r: Result, seeds: bool) -> str:
    """A table row's model, with its seed when the tables hold several."""
    return f"{r.name} (seed {r.seed})" if seeds else r.name


def part_table(results: list[Result]) -> str:
    """Seconds spent in each AutoAttack part (from the end of the one before), both libraries:
    robustfair's counted from the start of its audit (the clean pass, model view and checks
    fall in its first part), the official's from its own log."""
    lines = ["| model | part | robustfair s | official s | speed |", "|---|---|---|---|---|"]
    seeds = len({r.seed for r in results}) > 1
    for r in results:
        ours, theirs = r.parts
        before = [0.0, 0.0]
        for name in ours:
            spent = [ours[name] - before[0], theirs.get(name, float("nan")) - before[1]]
            before = [ours[name], theirs.get(name, before[1])]
            lines.append(f"| {_label(r, seeds)} | {name} | {spent[0]:.2f} | {spent[1]:.2f} | "
                         f"{spent[1] / spent[0]:.2f}x |")
    return "\n".join(lines)


def strength_over_seeds(results: list[Result]) -> str:
    """Per model, over all its seeds: the points only one side broke, and the classes whose
    robust count (summed over the seeds) is higher under robustfair (where it is weaker)."""
    lines = ["| model | seeds | only robustfair broke | only official broke "
             "| robust rf / official (points, all seeds) | classes rf weaker (summed over seeds) |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r.name for r in results):
        runs = [r for r in results if r.name == name and r.per_point is not None]
        ours = np.concatenate([r.per_point[0] for r in runs])
        theirs = np.concatenate([r.per_point[1] for r in runs])
        labels = np.concatenate([r.per_point[2] for r in runs])
        weaker = weaker_classes(ours, theirs, labels)
        lines.append(f"| {name} | {', '.join(str(r.seed) for r in runs)} "
                     f"| {sum(r.only_rf_broke for r in runs)} "
                     f"| {sum(r.only_official_broke for r in runs)} "
                     f"| {int(ours.sum())} / {int(theirs.sum())} | {weaker} |")
    return "\n".join(lines)


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--n", type=int, default=None, help="points per model (default: per model)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seeds", default="0",
                    help="comma-separated seeds, each model run once per seed (both libraries)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--profile", metavar="MODEL", help="profile robustfair's run on MODEL instead")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names + ([args.profile] if args.profile else []) if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    threads = set_threads()
    if args.profile:
        print(profile(args.profile, args.n, args.batch_size, seeds[0]))
        return
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{threads} thread(s)"
    header = (f"commit {commit()}, torch {torch.__version__}, {args.device}: {where}, "
              f"batch {args.batch_size}, seed(s) {args.seeds}, AutoAttack standard (L-inf)\n"
              f"command: {' '.join(['python', *sys.argv])}\n")
    print(header, flush=True)
    results = []
    for name, seed in ((name, seed) for name in names for seed in seeds):
        results.append(bench(name, args.n, args.batch_size, seed, args.device))
        r = results[-1]
        print(f"{name} (seed {seed}): {r.seconds[0]:.1f} s vs {r.seconds[1]:.1f} s official (CPU {r.cpu_seconds[0]:.1f} "
              f"vs {r.cpu_seconds[1]:.1f} s), rows {r.rows}, robust {r.robust[0]:.3f} vs "
              f"{r.robust[1]:.3f}, only robustfair broke {r.only_rf_broke}, only official broke "
              f"{r.only_official_broke}", flush=True)
    text = header + "\n" + table(results) + f"\n\nfinished {time.strftime('%Y-%m-%d %H:%M')}\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
