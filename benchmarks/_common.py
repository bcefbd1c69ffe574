"""What every benchmark shares: threads, the cached models, the timer, the peers' wrappers.

Fairness rules (applied by every script here):

* robustfair and the peers run in the same process, on the same model object (in eval mode
  for attacks), the same float images, labels, batch size and attack settings;
* each measurement is a warm-up run, then ``repeats`` timed runs, and the libraries take turns
  within every repeat (A, B, C, A, B, C, ...) so that a slow moment of a shared machine hits
  them all alike; the median is reported;
* every library's figure includes what it takes to *know* the robust accuracy: robustfair's
  audit does the clean pass, the attack and the bookkeeping; a peer run does the clean forward
  pass, the attack (the peer's usual call, on the whole batch) and a forward pass on the
  adversarial images.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"

# The digits PGD-AT model: eps 0.2 L-inf, PGD-10 training, Adam, 20 epochs (about 20 s on one
# core; it reaches about 87% clean / 47% PGD accuracy on its validation split).
DIGITS_EPS = 0.2
DIGITS_ALPHA = DIGITS_EPS / 8   # PGD-20's step (2.5 * eps / 20 rounded to a simple fraction)
# An untrained network on noise has tiny decision margins: at any usual eps every point falls
# at the first step, which would time nothing but robustfair's early exit. At 0.25/255 about
# 40% of the points survive PGD-20, so the libraries do comparable work.
RESNET_EPS = 0.25 / 255
RESNET_ALPHA = RESNET_EPS / 8


def set_threads(n: int | None = None) -> int:
    """Same intra-op thread count for every library: ``n``, else ``$BENCH_THREADS``, else 1.

    One thread by default: on a machine shared with other jobs, OpenMP threads that wait for
    each other at every kernel make multi-threaded timings swing by an order of magnitude.
    On a machine of your own, ``BENCH_THREADS=$(nproc)`` measures all cores.
    """
    n = n or int(os.environ.get("BENCH_THREADS", 0)) or 1
    torch.set_num_threads(n)
    return n


def machine() -> dict:
    """What the figures were measured on."""
    import torchattacks

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "python": platform.python_version(),
    }
    try:
        import art

        info["art"] = art.__version__
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        info["art"] = f"not importable: {type(exc).__name__}: {exc}"
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 1)
    except OSError:
        pass
    return info


# ---------------------------------------------------------------------------- models and data
def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as float images in [0, 1]: (x_train, y_train, x_test, y_test)."""
    import robustfair as rf

    ds = rf.load_dataset("digits")
    return (ds.train.x.float() / 255, ds.train.y, ds.test.x.float() / 255, ds.test.y)


def digits_pgdat_model(progress: bool = False) -> torch.nn.Module:
    """The PGD-AT ``small_cnn`` on digits (eps 0.2), trained once with robustfair.training and
    cached as safetensors in ``benchmarks/.cache``."""
    import tempfile

    from robustfair.models import load_model, save_model
    from robustfair.training import TrainConfig, train

    path = CACHE / "small_cnn_digits_pgdat_eps0.2_adam20.safetensors"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        cfg = TrainConfig(dataset="digits", model="small_cnn", objective="pgd_at",
                          eps=DIGITS_EPS, steps=10, epochs=20, batch_size=64, optimizer="adam",
                          lr=0.005, weight_decay=0.0, schedule="cosine", seed=0, keep="last",
                          eval_steps=5, device="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            result = train(cfg, Path(tmp) / "run", progress=progress)
            save_model(result.model, path, metadata={"trained_by": "benchmarks/_common.py",
                                                     "config": cfg.to_dict()})
    return load_model(path, device="cpu").eval()


def resnet_model_and_data(n: int, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """An *untrained* (seeded init) ``preact_resnet18`` on ``n`` 32x32x3 Gaussian-noise images.

    Untrained, so every point's "label" is the model's own clean prediction: all points start
    correctly classified and the attack has to move each one. BatchNorm running statistics
    are first fitted to the noise (a few forward passes in train mode, no weight update), so
    the eval-mode network is not degenerate (one class for every input).
    """
    import robustfair as rf

    torch.manual_seed(seed)
    model = rf.build_model("preact_resnet18", num_classes=10, in_channels=3, image_size=32)
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.2 * torch.randn(n, 3, 32, 32, generator=g)).clamp_(0, 1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x[: min(n, 64)])
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


# ---------------------------------------------------------------------------- timing
@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    robust_acc: float | None = None
    clean_acc: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def take_turns(runners: dict[str, Callable[[], tuple[float | None, float | None]]], *,
               repeats: int, warmup: bool = True) -> dict[str, Timing]:
    """Time each runner ``repeats`` times, interleaved, the order turning by one runner each
    repeat; a runner returns (clean_acc, robust_acc).

    The accuracy reported is the last timed run's (the runs are seeded, so it does not vary
    from repeat to repeat). A runner that raises is reported with its error and skipped after.
    """
    out = {name: Timing() for name in runners}
    failed: set[str] = set()
    order = list(runners.items())
    for rep in range(repeats + (1 if warmup else 0)):
        # each repeat starts one runner later, so no runner always goes first
        shift = rep % len(order)
        for name, run in order[shift:] + order[:shift]:
            if name in failed:
                continue
            try:
                t0 = time.perf_counter()
                clean, robust = run()
                dt = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - a peer failing is a result to report
                failed.add(name)
                out[name].note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                continue
            if warmup and rep == 0:
                continue
            out[name].seconds.append(dt)
            out[name].clean_acc, out[name].robust_acc = clean, robust
    return out


def warm_model(model, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward and backward pass at the benchmark's batch size (kernel selection, caches)."""
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)


# ---------------------------------------------------------------------------- the runs
def batches(n: int, batch_size: int):
    for s in range(0, n, batch_size):
        yield slice(s, min(n, s + batch_size))


def robustfair_audit(model, x, y, attack, batch_size: int, independent: bool = True,
                     optimize: bool = True, seed: int = 0):
    """robustfair: ``audit`` with one attack; returns (clean_acc, robust_acc)."""
    from robustfair.auditing import audit

    report = audit(model, x, y, attacks=[attack], batch_size=batch_size, progress=False,
                   independent=independent, optimize=optimize, seed=seed)
    p = report.predictions
    return float((p["clean_pred"] == p["y_true"]).mean()), float((p["worst_pred"] == p["y_true"]).mean())


def peer_audit(model, x, y, attack_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               batch_size: int):
    """A peer library's audit: clean forward, the attack on the batch, forward on x_adv."""
    clean_ok = robust_ok = 0
    for sl in batches(len(x), batch_size):
        xb, yb = x[sl], y[sl]
        with torch.no_grad():
            clean = model(xb).argmax(1) == yb
        x_adv = attack_fn(xb, yb)
        with torch.no_grad():
            adv = model(x_adv).argmax(1) == yb
        clean_ok += int(clean.sum())
        robust_ok += int((clean & adv).sum())
    return clean_ok / len(x), robust_ok / len(x)


def torchattacks_attack(model, kind: str, eps: float, alpha: float, steps: int, seed: int = 0):
    """The torchattacks attack of the same settings (PGD: seeded by the caller's global RNG)."""
    import torchattacks

    if kind == "pgd":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if kind == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if kind == "apgd-ce":
        return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                                 loss="ce", rho=0.75)
    raise ValueError(kind)


def art_attack(model, kind: str, eps: float, alpha: float, steps: int, batch_size: int,
               input_shape: tuple[int, ...], num_classes: int):
    """IBM ART's attack of the same settings, as a function (x, y) -> x_adv on torch tensors."""
    from art.attacks.evasion import (AutoProjectedGradientDescent, FastGradientMethod,
                                     ProjectedGradientDescentPyTorch)
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(),
                            input_shape=input_shape, nb_classes=num_classes,
                            clip_values=(0.0, 1.0), device_type="cpu")
    if kind == "pgd":
        atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha,
                                              max_iter=steps, num_random_init=1,
                                              batch_size=batch_size, verbose=False)
    elif kind == "fgsm":
        atk = FastGradientMethod(clf, norm=np.inf, eps=eps, batch_size=batch_size)
    elif kind == "apgd-ce":
        atk = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps,
                                           max_iter=steps, nb_random_init=1,
                                           batch_size=batch_size, loss_type="cross_entropy",
                                           verbose=False)
    else:
        raise ValueError(kind)

    def run(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        adv = atk.generate(x=xb.numpy(), y=yb.numpy())
        return torch.from_numpy(adv).to(xb.dtype)

    return run


def sign_test(a_only: int, b_only: int) -> float:
    """Two-sided exact binomial p-value that the cases where exactly one of two sides won
    (points only one attack broke, repeats where only one runner was faster) split evenly."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def fmt_rate(n: int, seconds: float) -> float:
    return n / seconds if seconds and seconds == seconds else float("nan")
