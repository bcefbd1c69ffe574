"""Helpers shared by the mitigations: option parsing, class priors, per-class bookkeeping.

Private (the leading underscore keeps the registry's auto-import away from it). Options may
arrive as Python values (from a study spec or ``TrainConfig``) or as strings (from the CLI's
``--mitigation NAME:k=v``), so every parser here accepts both.

>>> parse_class_map("cat:0.1;2:8/255", what="eps")
{'cat': 0.1, '2': 0.03137254901960784}
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..._parse import parse_number
from ...errors import ConfigError
from ._base import EpochStats, Mitigation, MitigationContext

# A class with zero robust accuracy would get an infinite "robust-error prior" weight; its
# accuracy is floored here so that the hardest class weighs at most 1/0.05 = 20x an easy one.
ACC_FLOOR = 0.05


# --------------------------------------------------------------------------- option parsing
def as_float(value: Any, *, what: str, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False) -> float:
    """A number (``"8/255"`` allowed) inside the given bounds, or a one-line ConfigError."""
    x = parse_number(value, what=what)
    bad_low = low is not None and (x <= low if low_open else x < low)
    bad_high = high is not None and (x >= high if high_open else x > high)
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        if low is None:
            rule = f"must be {'<' if high_open else '<='} {high:g}"
        elif high is None:
            rule = f"must be {'>' if low_open else '>='} {low:g}"
        else:
            rule = f"must lie in {lo}, {hi}"
        raise ConfigError(f"{what} {rule}, got {x:g}")
    return x


def as_choice(value: Any, choices: tuple[str, ...], *, what: str) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}")
    return text


def parse_class_map(value: Mapping[Any, Any] | str | None, *, what: str) -> dict[str, float]:
    """``{"cat": 0.1}``, ``"cat:0.1,dog:0.2"``, ``"cat=0.1;dog=0.2"`` -> ``{"cat": 0.1, ...}``.

    Keys stay strings (a class name or index, resolved later by ``ctx.class_index``).
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = []
        for part in re.split(r"[,;|]", str(value)):
            part = part.strip()
            if not part:
                continue
            sep = ":" if ":" in part else ("=" if "=" in part else None)
            if sep is None:
                raise ConfigError(f"{what} entry {part!r} must look like CLASS:VALUE")
            k, v = part.split(sep, 1)
            pairs.append((k.strip(), v.strip()))
    return {str(k): parse_number(v, what=f"{what} of class {k!r}") for k, v in pairs}


def take_lambda(aliases: dict[str, Any], default: Any, *, mitigation: str, known: str) -> Any:
    """``lambda`` is a Python keyword, so mitigations take ``lam`` and accept ``lambda`` too."""
    extra = [k for k in aliases if k != "lambda"]
    if extra:
        raise ConfigError(f"mitigation {mitigation!r} has no option(s) {', '.join(extra)}; "
                          f"options are: {known}")
    return aliases.get("lambda", default)


def trades_beta(ctx: MitigationContext) -> float:
    """The run's TRADES beta, as the trainer passes it in the context."""
    return float(ctx.beta)


def epoch_index(fraction: float, epochs: int) -> int:
    """The first epoch (0-based) at or after ``fraction`` of the run, never before epoch 1.

    Adaptive methods need at least one finished epoch of statistics, so nothing starts at 0.

    >>> epoch_index(0.05, 200), epoch_index(0.05, 8), epoch_index(70 / 110, 110)
    (10, 1, 70)
    """
    return max(1, int(round(fraction * epochs)))


# --------------------------------------------------------------------------- class priors
PRIORS = ("frequency", "robust_error")


class ClassPrior:
    """Per-class *effective counts* that drive the long-tail methods.

    ``frequency``: the training-split counts (the textbook prior; uniform on balanced data).
    ``robust_error``: ``count_c · max(robust_acc_c, ACC_FLOOR)``, i.e. the number of training
    points of class ``c`` the model is currently robust on, with ``robust_acc`` measured on the
    held-out validation split at the end of every epoch. A class with a high robust error then
    looks like a rare class, so each long-tail method favours it. Until the first epoch has
    been evaluated the robust-error prior equals the frequency prior.
    """

    def __init__(self, kind: str) -> None:
        self.kind = as_choice(kind, PRIORS, what="prior")

    def setup(self, ctx: MitigationContext) -> None:
        self.base = ctx.class_counts.to(device=ctx.device, dtype=torch.float32).clamp_min(1.0)
        self.acc = torch.ones_like(self.base)

    def update(self, stats: EpochStats) -> None:
        if self.kind != "robust_error":
            return
        acc = stats.robust_acc.to(self.base.device, torch.float32)
        seen = stats.counts.to(self.base.device) > 0
        # a class absent from the validation split keeps its last value
        self.acc = torch.where(seen, acc.clamp(ACC_FLOOR, 1.0), self.acc)

    def counts(self) -> torch.Tensor:
        """Effective counts, Tensor[K] (>= ACC_FLOOR, never 0)."""
        return self.base * self.acc

    def probabilities(self) -> torch.Tensor:
        c = self.counts()
        return c / c.sum()

    def describe(self) -> str:
        if self.kind == "frequency":
            return "prior=frequency (training-split class counts)"
        return ("prior=robust_error (counts x per-class robust accuracy on the validation "
                f"split, floored at {ACC_FLOOR}, updated every epoch)")

    def state_dict(self) -> dict[str, Any]:
        return {"acc": self.acc}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "acc" in state:
            self.acc = torch.as_tensor(state["acc"]).to(self.base.device, torch.float32)


# --------------------------------------------------------------------------- base class
class DescribedMitigation(Mitigation):
    """A mitigation that can say in one line what it does with which settings.

    ``settings()`` is a JSON-able dict of every option (defaults included), ``describe()`` a
    line for logs; both are meant for the run's config and log, so a reader knows e.g. which
    prior drove a long-tail method.
    """

    def settings(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{self.name}({body})"

    def __repr__(self) -> str:
        return self.describe()


def present_classes(stats: EpochStats) -> torch.Tensor:
    """Bool Tensor[K]: classes with at least one validation point."""
    return stats.counts > 0


def worst_class(robust_acc: torch.Tensor, present: torch.Tensor | None = None) -> int:
    """Index of the lowest accuracy among present classes (ties: the lowest index)."""
    acc = robust_acc.float().clone()
    if present is not None:
        acc[~present.to(acc.device)] = float("inf")
    return int(torch.argmin(acc))


class PriorMitigation(DescribedMitigation):
    """Base of the long-tail methods: holds a :class:`ClassPrior` and keeps it up to date."""

    def __init__(self, prior: str = "frequency") -> None:
        self.prior = ClassPrior(prior)

    def setup(self, ctx: MitigationContext) -> None:
        super().setup(ctx)
        self.prior.setup(ctx)

    def end_epoch(self, stats: EpochStats) -> None:
        self.prior.update(stats)

    def settings(self) -> dict[str, Any]:
        return {"prior": self.prior.kind}

    def describe(self) -> str:
        return f"{super().describe()}: {self.prior.describe()}"

    def state_dict(self) -> dict[str, Any]:
        return {"prior": self.prior.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior.load_state_dict(state.get("prior", {}))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks of a distributed run (a no-op otherwise).

    Mitigations that count things in the ``loss`` hook see only their rank's share of each
    batch; summing before use keeps every rank's per-class quantities identical.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


class ClasswiseCounter:
    """Per-class sums accumulated over an epoch in the ``loss`` hook (on the device, no syncs)."""

    def __init__(self, num_classes: int, device: torch.device, width: int = 1) -> None:
        self.shape = (num_classes,) if width == 1 else (num_classes, width)
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros(self.shape, device=self.device)
        self.count = torch.zeros(self.shape[0], device=self.device)

    def add(self, y: torch.Tensor, values: torch.Tensor) -> None:
        values = values.detach().float().to(self.device)
        y = y.to(self.device)
        self.total.index_add_(0, y, values)
        self.count += torch.bincount(y, minlength=self.shape[0]).float()

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-class mean, bool mask of classes seen), summed over ranks first."""
        total, count = all_reduce_sum(self.total), all_reduce_sum(self.count)
        shape = (-1,) + (1,) * (total.dim() - 1)
        return total / count.clamp_min(1.0).view(shape), count > 0


class SeededStream:
    """A mitigation's own random stream: seeded from the run's seed and a per-method offset,
    created on the device of the first batch, and saved in the state so a resumed run draws
    exactly what the uninterrupted one would have drawn.

    >>> s = SeededStream(seed=0, offset=1)
    >>> a = torch.rand(2, generator=s.generator(torch.device("cpu")))
    >>> again = SeededStream(seed=0, offset=1)
    >>> torch.equal(a, torch.rand(2, generator=again.generator(torch.device("cpu"))))
    True
    """

    def __init__(self, seed: int, offset: int) -> None:
        self.seed = int(seed) * 1_000_003 + int(offset)
        self._generator: torch.Generator | None = None
        self._saved: torch.Tensor | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._saved is not None:
                self._generator.set_state(self._saved)
                self._saved = None
        return self._generator

    def state(self) -> torch.Tensor | None:
        if self._generator is not None:
            return self._generator.get_state()
        return self._saved

    def load(self, state: Any) -> None:
        self._generator = None
        self._saved = torch.as_tensor(state).to("cpu", torch.uint8)

    def save_into(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with the stream under ``"generator"`` once it has drawn or been loaded."""
        saved = self.state()
        if saved is not None:
            state["generator"] = saved
        return state

    def load_from(self, state: dict[str, Any]) -> None:
        """The stream saved by :meth:`save_into`, if ``state`` holds one."""
        if "generator" in state:
            self.load(state["generator"])


def robust_error_gap(stats: EpochStats, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(``e_c - mean e``, present mask): each class's validation robust error minus the mean over
    the classes present in the validation split (0 for absent classes)."""
    present = present_classes(stats).to(device)
    err = 1.0 - stats.robust_acc.to(device, torch.float32)
    if not bool(present.any()):
        return torch.zeros_like(err), present
    gap = err - err[present].mean()
    return torch.where(present, gap, torch.zeros_like(gap)), present
