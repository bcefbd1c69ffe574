"""The mitigation contract: pluggable parts of the training objective that target the class gap.

A :class:`Mitigation` changes *how* a model is trained (which samples, which weights, which
attack radius, which loss reduction) without touching the trainer loop. Every hook is
optional; the defaults do nothing, so a mitigation overrides only what it needs. Several
mitigations combine (``TrainConfig.mitigations`` is a list); :class:`MitigationStack` says how
their answers are merged.

Hook contract (``K`` = number of classes, ``N`` = batch size; every tensor a hook returns is
on ``ctx.device``, float32 unless said otherwise):

``setup(ctx: MitigationContext)``
    Called once before training (and again before a resumed run, *before*
    ``load_state_dict``). ``ctx`` holds ``num_classes``, ``classes`` (names), ``class_counts``
    (LongTensor[K], training-split counts after the validation split is carved off),
    ``device``, ``eps`` (base training eps), ``norm``, ``objective`` ("standard" | "pgd_at" |
    "trades" | "fgsm_rs"), ``epochs``, ``steps_per_epoch``, ``seed`` and ``beta`` (TRADES). Resolve class names
    here (``ctx.class_index("cat")``); raise :class:`~robustfair.errors.ConfigError` on bad
    options.

``class_weights() -> Tensor[K] | None``
    Per-sample loss weight ``w[y]``. The default reduction is ``sum(w[y]·l) / sum(w[y])`` (the
    convention of ``nn.CrossEntropyLoss(weight=w)``). Weights of several mitigations multiply.

    ``class_weights``, ``class_eps``, ``class_beta``, ``logit_offsets`` and ``sample_weights``
    are asked once at the start of every epoch (after the previous epoch's ``end_epoch``), so
    a mitigation changes them in ``end_epoch`` and the training steps never wait on a check.

``class_eps() -> Tensor[K] | None``
    Per-class radius of the *training* attack: sample ``i`` is attacked with ``eps[y_i]`` and
    step size ``alpha · eps[y_i] / base_eps`` (the step keeps its ratio to the radius).
    Evaluation always uses the base eps. At most one mitigation may set it.

``class_beta() -> Tensor[K] | None``
    TRADES only: per-class weight of the KL (robustness) term, ``beta[y_i]`` for sample ``i``.
    At most one mitigation may set it; ignored (with no error) by other objectives.

``logit_offsets() -> Tensor[K] | Tensor[K, K] | None``
    Added to the logits inside the *training loss only* (never the attack, never evaluation).
    A vector ``o`` is added to every row (logit adjustment: ``tau·log prior``); a matrix ``O``
    adds row ``O[y_i]`` to sample ``i`` (LDAM: ``O = -diag(margins)`` subtracts the margin
    from the true-class logit). Offsets of several mitigations add up.

``loss(logits, y, per_sample_loss, **ctx) -> Tensor``
    Override the reduction. ``logits`` are the ones the objective's main term is computed on
    (adversarial for pgd_at / fgsm_rs, clean for standard and trades), offsets already added;
    ``per_sample_loss`` is Tensor[N]. Keyword context: ``weights`` (Tensor[N], the combined
    class weights per sample, or None), ``logits_clean``, ``logits_adv`` (either may be None),
    ``model``, ``epoch``, ``step``. Return either a new per-sample loss Tensor[N] (handed to
    the next mitigation, then reduced with the weights as above; focal loss does this) or a
    0-dim scalar that *is* the final loss (then the mitigation applies ``weights`` itself;
    FAT's variance regulariser does this). Only the last mitigation in the list may return a
    scalar. The default returns ``per_sample_loss`` unchanged.

``sample_weights() -> Tensor[K] | None``
    Class-balanced re-sampling: each epoch draws ``len(train)`` indices with replacement,
    sample ``i`` with probability proportional to ``s[y_i]``, from the epoch's own seeded
    generator (so resume stays exact). Weights of several mitigations multiply.

``attack_target(y) -> LongTensor[N] | None``
    Targeted adversarial training: the training attack pushes sample ``i`` *toward* class
    ``t_i`` (minimises CE to ``t_i``); ``t_i = -1`` keeps sample ``i`` untargeted. At most one
    mitigation may return targets for a batch.

``end_epoch(stats: EpochStats)``
    After the per-epoch evaluation on the held-out validation split: ``stats`` holds
    ``epoch`` and per-class Tensor[K] ``clean_acc``, ``robust_acc``, ``natural_error``
    (``1 - clean_acc``) and ``boundary_error`` (fraction of the class that is correct clean but
    wrong under attack), plus ``counts``. Adaptive methods (adaptive re-weighting, FRL, CFA,
    DAFA) update their per-class quantities here.

``after_step(model)``
    After every optimiser step (weight averaging such as CFA's FAWA). ``model`` is the bare
    model (unwrapped from DDP).

``eval_model() -> nn.Module | None``
    A model to evaluate and save *instead of* the trained one (e.g. an averaged model). At
    most one mitigation may provide one; it takes precedence over the trainer's EMA.

``state_dict() -> dict`` / ``load_state_dict(state)``
    Everything needed to resume exactly. Values are tensors (saved in safetensors) or
    JSON-able Python values (saved in JSON); never pickled. A mitigation holding an
    ``eval_model`` must include that model's weights.

Register a mitigation with :func:`register_mitigation` and build it by name with
:func:`build_mitigation`; a new module in this package is imported by the package's
``__init__.py``.

>>> @register_mitigation("_doc_double_first")
... class DoubleFirst(Mitigation):
...     def class_weights(self):
...         w = torch.ones(self.ctx.num_classes, device=self.ctx.device)
...         w[0] = 2.0
...         return w
>>> m = build_mitigation("_doc_double_first")
>>> m.setup(MitigationContext(num_classes=3, classes=["a", "b", "c"]))
>>> m.class_weights().tolist()
[2.0, 1.0, 1.0]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..._registry import Registry
from ...errors import ConfigError

__all__ = [
    "MITIGATIONS",
    "EpochStats",
    "Mitigation",
    "MitigationContext",
    "MitigationStack",
    "build_mitigation",
    "list_mitigations",
    "mitigation_options",
    "register_mitigation",
]


@dataclass
class MitigationContext:
    """What a mitigation may know about the run (given to :meth:`Mitigation.setup`)."""

    num_classes: int
    classes: list[str] = field(default_factory=list)
    class_counts: torch.Tensor | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    eps: float = 0.0
    norm: str = "linf"
    objective: str = "standard"
    epochs: int = 1
    steps_per_epoch: int = 1
    seed: int = 0
    beta: float = 6.0  # the run's TRADES beta (per-class beta methods scale it)
    # whether the objective has a separate robust term weighted by beta (TRADES); the trainer
    # reads it from the objective (mitigations do not import the objectives, which use them)
    beta_weighted: bool = False

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = [str(i) for i in range(self.num_classes)]
        if self.class_counts is None:
            self.class_counts = torch.ones(self.num_classes, dtype=torch.long)
        self.device = torch.device(self.device)

    def class_index(self, name_or_index: str | int) -> int:
        """A class given by name (first) or index, as a ConfigError if unknown."""
        key = str(name_or_index)
        if key in self.classes:
            return self.classes.index(key)
        try:
            i = int(key)
        except ValueError:
            shown = ", ".join(self.classes[:20]) + (" ..." if len(self.classes) > 20 else "")
            raise ConfigError(f"unknown class {name_or_index!r}; classes are: {shown}") from None
        if not 0 <= i < self.num_classes:
            raise ConfigError(f"class index {i} out of range 0..{self.num_classes - 1}")
        return i


@dataclass
class EpochStats:
    """Per-class results of one epoch's evaluation on the held-out validation split."""

    epoch: int
    clean_acc: torch.Tensor       # Tensor[K], fraction in [0, 1]
    robust_acc: torch.Tensor      # Tensor[K]
    natural_error: torch.Tensor   # 1 - clean_acc
    boundary_error: torch.Tensor  # correct clean, wrong under attack
    counts: torch.Tensor          # LongTensor[K], validation samples per class


class Mitigation:
    """Base class: every hook is optional and does nothing by default (see the module doc)."""

    name: ClassVar[str] = "mitigation"

    def setup(self, ctx: MitigationContext) -> None:
        self.ctx = ctx

    def class_weights(self) -> torch.Tensor | None:
        return None

    def class_eps(self) -> torch.Tensor | None:
        return None

    def class_beta(self) -> torch.Tensor | None:
        return None

    def logit_offsets(self) -> torch.Tensor | None:
        return None

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        return per_sample_loss

    def sample_weights(self) -> torch.Tensor | None:
        return None

    def attack_target(self, y: torch.Tensor) -> torch.Tensor | None:
        return None

    def end_epoch(self, stats: EpochStats) -> None:
        return None

    def after_step(self, model: nn.Module) -> None:
        return None

    def eval_model(self) -> nn.Module | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ----------------------------------------------------------------------------------- registry
Factory = Callable[..., Mitigation]
MITIGATIONS: Registry[Factory] = Registry("mitigation", ConfigError)


def register_mitigation(name: str) -> Callable[[Factory], Factory]:
    """Class decorator: make a mitigation buildable by ``name`` (and set its ``name``)."""

    def deco(cls: Factory) -> Factory:
        MITIGATIONS.register(name)(cls)
        if isinstance(cls, type):
            cls.name = name
        return cls

    return deco


def list_mitigations() -> list[str]:
    """The registered mitigations' names, sorted (``build_mitigation`` builds one)."""
    return MITIGATIONS.names()


def build_mitigation(name: str, **options: Any) -> Mitigation:
    """Build a registered mitigation: ``build_mitigation("class_weight", weights={"cat": 50})``."""
    MITIGATIONS.check(name, **options)  # an unknown name or option, from the signature
    try:
        return MITIGATIONS.get(name)(**options)
    except (TypeError, ValueError) as exc:  # a value of the wrong kind, found by the mitigation
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad options for mitigation {name!r}: {exc}") from None


def mitigation_options(name: str) -> tuple[str, dict[str, Any]]:
    """A registered mitigation's one-line summary and its options with their defaults.

    An option without a default maps to :data:`inspect.Parameter.empty`; a ``**`` catch-all
    (aliases) is left out.

    >>> summary, options = mitigation_options("focal")
    >>> options
    {'gamma': 2.0, 'prior': 'none'}
    """
    doc = (MITIGATIONS.get(name).__doc__ or "").strip()
    summary = doc.splitlines()[0].replace("``", "") if doc else ""
    return summary, MITIGATIONS.options(name)


# ------------------------------------------------------------------------------- combination
class MitigationStack:
    """Several mitigations acting as one; how each hook's answers are merged:

    class weights and sample weights multiply; logit offsets add; ``loss`` chains in list
    order; ``class_eps``, ``class_beta``, ``attack_target`` and ``eval_model`` may come from
    at most one mitigation (a ConfigError otherwise); ``end_epoch`` and ``after_step`` reach
    every mitigation.
    """

    def __init__(self, mitigations: Sequence[Mitigation] = ()) -> None:
        self.mitigations = list(mitigations)

    def __bool__(self) -> bool:
        return bool(self.mitigations)

    def __len__(self) -> int:
        return len(self.mitigations)

    def setup(self, ctx: MitigationContext) -> None:
        self.ctx = ctx
        for m in self.mitigations:
            m.setup(ctx)

    def _vector(self, m: Mitigation, value: torch.Tensor | None, hook: str,
                shapes: tuple[tuple[int, ...], ...]) -> torch.Tensor | None:
        if value is None:
            return None
        value = torch.as_tensor(value, device=self.ctx.device, dtype=torch.float32)
        if tuple(value.shape) not in shapes:
            raise ConfigError(
                f"mitigation {m.name!r}: {hook}() must have shape "
                f"{' or '.join(str(s) for s in shapes)}, got {tuple(value.shape)}"
            )
        return value

    def _product(self, hook: str) -> torch.Tensor | None:
        k = self.ctx.num_classes
        out = None
        for m in self.mitigations:
            v = self._vector(m, getattr(m, hook)(), hook, ((k,),))
            if v is not None:
                if (v < 0).any() or not torch.isfinite(v).all():
                    raise ConfigError(f"mitigation {m.name!r}: {hook}() must be finite and >= 0")
                out = v if out is None else out * v
        return out

    def _single(self, hook: str, *args: Any) -> tuple[Mitigation | None, Any]:
        found: tuple[Mitigation | None, Any] = (None, None)
        for m in self.mitigations:
            v = getattr(m, hook)(*args)
            if v is not None:
                if found[0] is not None:
                    raise ConfigError(
                        f"mitigations {found[0].name!r} and {m.name!r} both set {hook}(); "
                        f"combine at most one of them"
                    )
                found = (m, v)
        return found

    def class_weights(self) -> torch.Tensor | None:
        return self._product("class_weights")

    def sample_weights(self) -> torch.Tensor | None:
        return self._product("sample_weights")

    def class_eps(self) -> torch.Tensor | None:
        m, v = self._single("class_eps")
        v = self._vector(m, v, "class_eps", ((self.ctx.num_classes,),)) if m else None
        if v is not None and ((v < 0).any() or not torch.isfinite(v).all()):
            raise ConfigError(f"mitigation {m.name!r}: class_eps() must be finite and >= 0")
        return v

    def class_beta(self) -> torch.Tensor | None:
        m, v = self._single("class_beta")
        return self._vector(m, v, "class_beta", ((self.ctx.num_classes,),)) if m else None

    def logit_offsets(self) -> torch.Tensor | None:
        k = self.ctx.num_classes
        out = None
        for m in self.mitigations:
            v = self._vector(m, m.logit_offsets(), "logit_offsets", ((k,), (k, k)))
            if v is None:
                continue
            if out is None:
                out = v
            elif out.dim() == v.dim():
                out = out + v
            else:  # a vector offset is the matrix whose every row is that vector
                out = (out if out.dim() == 2 else out.expand(k, k)) + (
                    v if v.dim() == 2 else v.expand(k, k))
        return out

    def attack_target(self, y: torch.Tensor) -> torch.Tensor | None:
        m, v = self._single("attack_target", y)
        if m is None:
            return None
        v = torch.as_tensor(v, device=y.device).long()
        if v.shape != y.shape:  # (a range check would stall the GPU on every batch)
            raise ConfigError(
                f"mitigation {m.name!r}: attack_target() must give one class (or -1) per sample"
            )
        return v

    def loss(self, logits: torch.Tensor, y: torch.Tensor, per_sample_loss: torch.Tensor,
             **ctx: Any) -> torch.Tensor:
        """Chain the ``loss`` hooks; a per-sample result is reduced with ``ctx['weights']``."""
        current = per_sample_loss
        for i, m in enumerate(self.mitigations):
            if current.dim() == 0:
                raise ConfigError(
                    f"mitigation {self.mitigations[i - 1].name!r} returned a final scalar loss "
                    f"but {m.name!r} comes after it; put it last"
                )
            current = m.loss(logits, y, current, **ctx)
        return current if current.dim() == 0 else weighted_mean(current, ctx.get("weights"))

    def end_epoch(self, stats: EpochStats) -> None:
        for m in self.mitigations:
            m.end_epoch(stats)

    def after_step(self, model: nn.Module) -> None:
        for m in self.mitigations:
            m.after_step(model)

    def eval_model(self) -> nn.Module | None:
        return self._single("eval_model")[1]

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {f"{i}.{m.name}": m.state_dict() for i, m in enumerate(self.mitigations)}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        for i, m in enumerate(self.mitigations):
            key = f"{i}.{m.name}"
            if key in state:
                m.load_state_dict(state[key])


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``sum(w·l) / sum(w)``, or the plain mean without weights."""
    if weights is None:
        return per_sample.mean()
    return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)
