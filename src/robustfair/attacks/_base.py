"""The attack contract, explicit and the same for every attack::

    attack.perturb(model, x, y, *, target=None, clean_logits=None, batch_size=None, seed=None,
                   index=None) -> AttackResult

Images are in [0, 1] (normalisation is inside the model). ``eps`` is a float or a per-sample
tensor. An attack puts the model in eval mode only for its own duration and restores the
caller's mode afterwards. Within one attack, restarts keep the *first* adversarial example
found for each point, and a point already fooled is not attacked further.

The keyword arguments are the whole channel between a caller and an attack: ``clean_logits``
(the model's full-precision logits on ``x``, if the caller has them: the attack then skips its
clean pass), ``batch_size`` (the most points in one forward/backward pass), ``seed`` (this
call's random seed; default: the attack's own) and ``index`` (each point's position in the
whole test set, int64; default ``0..len(x)-1``). Nothing travels through globals, and an
attack object is never changed by a call: :meth:`Attack.with_options` returns a changed copy.

Randomness is per point: everything an attack draws for a point (random starts, Square's
windows and signs, FAB's restarts) comes from a stream keyed by ``(seed, index of the
point, what is drawn)`` (:mod:`robustfair.attacks._random`), so a point's result does not
depend on which other points share its batch, on ``batch_size`` or on the order in which
points are admitted. That is what lets an audit be cut into shards without changing any
point's result. An attack that ignores ``index`` (an older subclass) still works.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator

import torch
from torch import nn

from .._checks import is_int
from .._tensor_checks import as_float_images, check_model_input
from .._registry import Registry
from ..errors import AttackError, ModelError

NORMS = ("linf", "l2")


@dataclass
class AttackResult:
    """What an attack found for each point.

    ``x_adv``: the adversarial images (the clean image where nothing was found);
    ``pred``: the model's prediction on ``x_adv``;
    ``success``: the attack's goal was met (untargeted: ``pred != y``; targeted: ``pred == target``).
    """

    x_adv: torch.Tensor
    pred: torch.Tensor
    success: torch.Tensor
    # composite attacks (AutoAttack): the index in ``parts`` of the part that broke each point
    # first, -1 where none did
    broken_by: torch.Tensor | None = None
    parts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CallOptions:
    """What one ``perturb`` call hands the attack besides the points (see the module docstring)."""

    clean_logits: torch.Tensor | None = None
    batch_size: int | None = None
    seed: int | None = 0
    index: torch.Tensor | None = None  # int64, each point's position in the whole test set


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every sub-module in eval mode, then restore each one's own previous mode.

    Only modes that change are written: a module's attribute write is a slow path of
    ``nn.Module.__setattr__``, and attacks nest this (an evaluation around an attack around its
    parts), where the model is already in eval mode."""
    modes = [(m, m.training) for m in model.modules()]
    if any(training for _, training in modes):
        model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            if m.training != was_training:
                m.training = was_training


def per_sample(value: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample value to shape N×1×1×1 on ``like``'s device/dtype."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise AttackError(f"per-sample eps must have shape ({n},), got {tuple(t.shape)}")
    return t.view(n, 1, 1, 1)


def check_seed(seed: object) -> None:
    """A seed is an integer, or None for fresh entropy; anything else is a one-line error."""
    if seed is not None and not is_int(seed):
        raise AttackError(f"seed must be an integer or None, got {seed!r}")


class Attack(ABC):
    """Base class: validation, eval-mode handling and the settings printed with results."""

    name: ClassVar[str] = "attack"
    # False for an attack that only reads the model's outputs (Square): gradient masking cannot
    # stop it, which is what the sanity checks' masking flag relies on
    uses_gradient: ClassVar[bool] = True
    # A registered variant is its parent with some settings pinned (``apgd-ce``: loss "ce") and
    # others given new defaults (``fab-t``: top_k 9); no constructor of its own is written.
    pinned: ClassVar[dict] = {}
    defaults: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "pinned" in cls.__dict__ or "defaults" in cls.__dict__:
            cls.__init__ = _variant_init(cls.__mro__[1].__init__, cls.__dict__.get("pinned", {}),
                                         cls.__dict__.get("defaults", {}))

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        targeted: bool = False,
        seed: int | None = 0,
    ) -> None:
        if norm not in NORMS:
            raise AttackError(f"unknown norm {norm!r}; choose from: {', '.join(NORMS)}")
        if isinstance(eps, torch.Tensor):
            if eps.numel() and ((eps < 0).any() or not torch.isfinite(eps).all()):
                raise AttackError("eps must be finite and non-negative")
        elif not (isinstance(eps, (int, float)) and eps >= 0 and math.isfinite(eps)):
            raise AttackError(f"eps must be a finite non-negative number, got {eps!r}")
        if not isinstance(targeted, bool):
            raise AttackError(f"targeted must be True or False, got {targeted!r}")
        check_seed(seed)
        self.eps = eps
        self.norm = norm
        self.targeted = targeted
        self.seed = seed

    def settings(self) -> dict:
        """Every setting that decides the result, for printing beside the numbers."""
        eps = self.eps if not isinstance(self.eps, torch.Tensor) else "per-sample"
        return {"attack": self.name, "eps": eps, "norm": self.norm, "targeted": self.targeted,
                "seed": self.seed}

    def part_names(self) -> list[str]:
        """A composite attack's parts, in order (its results say which part broke each point);
        empty for a single attack."""
        return []

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings().items())

    def with_options(self, **changes) -> "Attack":
        """A copy of this attack with some settings changed (``attack.with_options(amp=True)``);
        the original is left as it is."""
        clone = copy.copy(self)
        for key, value in changes.items():
            if not hasattr(self, key):
                raise AttackError(f"{self.name} has no setting {key!r}")
            setattr(clone, key, value)
        return clone

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | int | None = None,
        clean_logits: torch.Tensor | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        index: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack ``model`` at ``(x, y)``; ``target`` (a class, or one per point) for targeted
        attacks. ``clean_logits``, ``batch_size``, ``seed`` and ``index``: see the module
        docstring."""
        x = as_float_images(x)
        check_model_input(model, x)
        y = y.to(x.device)
        if self.targeted:
            if target is None:
                raise AttackError(f"{self.name} is targeted: give a target class per point")
            target = torch.as_tensor(target, device=x.device).long()
            if target.dim() > 1 or (target.dim() == 1 and len(target) != len(x)):
                raise AttackError(
                    f"target must be one class or one class per point ({len(x)}), "
                    f"got shape {tuple(target.shape)}"
                )
            target = target.expand(len(x)).clone()
        elif target is not None:
            raise AttackError(f"{self.name} is untargeted: a target was given")
        if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
            raise AttackError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        check_seed(seed)
        if clean_logits is not None and clean_logits.shape[0] != len(x):
            raise AttackError(f"clean_logits has {clean_logits.shape[0]} rows for {len(x)} images")
        options = CallOptions(clean_logits=clean_logits, batch_size=batch_size,
                              seed=self.seed if seed is None else seed,
                              index=_check_index(index, len(x), x.device))
        with eval_mode(model):
            if x.numel() == 0:
                empty = torch.zeros(0, dtype=torch.long, device=x.device)
                return AttackResult(x.clone(), empty, empty.bool())
            try:
                return self._perturb(model, x, y, target, options)
            except ModelError as exc:  # say which attack (and which part of a composite) ran
                raise ModelError(f"{self.name}: {exc}") from None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        return self.perturb(model, x, y, target=target).x_adv

    @abstractmethod
    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, options: CallOptions) -> AttackResult:
        """Subclasses implement the attack; the model is already in eval mode."""


def _variant_init(parent: Callable, pinned: dict, defaults: dict) -> Callable:
    """The parent's constructor with ``pinned`` settings fixed (and gone from the signature, so
    that the registry calls giving one an unknown option) and ``defaults`` replaced."""
    signature = inspect.signature(parent)
    params = [p.replace(default=defaults.get(p.name, p.default))
              for p in signature.parameters.values() if p.name not in pinned]

    def __init__(self, *args, **settings) -> None:
        bound = __init__.__signature__.bind(self, *args, **settings)
        bound.apply_defaults()
        parent(*bound.args, **bound.kwargs, **pinned)

    __init__.__signature__ = signature.replace(parameters=params)
    return __init__


def _check_index(index: object, n: int, device: torch.device) -> torch.Tensor:
    """Each point's position in the whole test set, as int64 on ``device`` (default 0..n-1)."""
    if index is None:
        return torch.arange(n, device=device)
    index = torch.as_tensor(index, device=device)
    if index.shape != (n,) or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise AttackError(f"index must hold one integer per point ({n}), got "
                          f"{index.dtype} of shape {tuple(index.shape)}")
    return index.to(torch.int64)


AttackFactory = Callable[..., Attack]
ATTACKS: Registry[AttackFactory] = Registry("attack", AttackError)


def register_attack(name: str) -> Callable[[AttackFactory], AttackFactory]:
    """Class decorator: make an attack buildable by ``name``."""
    return ATTACKS.register(name)


def list_attacks() -> list[str]:
    """The registered attacks' names, sorted (``build_attack`` builds one by name)."""
    return ATTACKS.names()


def build_attack(name: str, **settings) -> Attack:
    """Build a registered attack: ``build_attack("pgd", eps=8/255, steps=20)``; an unknown
    name or setting is a one-line AttackError."""
    return ATTACKS.build(name, **settings)
